//! An ordered push consumer read through a plain subscription: the watch under every
//! [`NatsStore`](super::NatsStore) load, start and live handle.
//!
//! async-nats's own ordered consumer wraps every delivery in a JetStream message (a clone of the
//! client's context, dropped again) and parses the reply subject once for its own sequence check
//! and again for the caller. At 50,000 keys those per-message costs were about a third of
//! kv-config's client CPU during a load (BENCHMARKS.md, "The stretch").
//!
//! Two layers, as in nats.go's ordered consumer:
//!
//! - [`Ordered`] reads one consumer: it answers flow control (the request's reply subject, and
//!   the `Nats-Consumer-Stalled` subject of a stalled consumer's heartbeat), checks every
//!   delivery and heartbeat against the consumer sequence, and **ends** on anything that breaks
//!   the order or the consumer: a gap, a heartbeat reporting deliveries it never received, a
//!   status other than a heartbeat, a reconnect of the client (a restarted server keeps no
//!   ephemeral consumer), or three heartbeats of silence (a push consumer deleted on the server
//!   tells its subscriber nothing).
//! - [`Resuming`] makes a new consumer from the last delivered stream sequence + 1 whenever one
//!   ends (never a rewind), retrying with a growing pause while the server cannot make one, so a
//!   watch ends only when its client is closed or its bucket is gone. An unfinished initial pass
//!   (the latest entry of every key) is made again instead, skipping what was delivered, so a
//!   caller never sees a key's older revisions; a watch of new entries goes on after the
//!   stream's last entry when it started, not when the new consumer is made. Callers keep their own checks on top (the live
//!   watcher's quiet-time probes).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_nats::{Client, HeaderMap, Message, Statistics, StatusCode, Subscriber};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream};

use super::classify;
use crate::store::StoreResult;

/// The idle heartbeat the server sends on a quiet consumer. async-nats's ordered consumer asks
/// for 5 s and gives up after 10 s of silence. A push consumer deleted on the server tells its
/// subscriber nothing, so silence is the only sign of it; an initial load waits that out.
pub(super) const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);

/// How often a stream with nothing to read looks whether its client reconnected meanwhile, and
/// counts the silence.
const CHECK: Duration = Duration::from_millis(250);

/// Checks in a row with nothing heard (not even a heartbeat) after which the consumer counts as
/// gone: three heartbeats.
const SILENT_CHECKS: u32 = 12;

/// Sent by the server on a heartbeat when the consumer is stalled by flow control: the subject
/// to answer, as a flow-control request's reply subject is (nats.go does the same).
const CONSUMER_STALLED: &str = "Nats-Consumer-Stalled";
const LAST_CONSUMER: &str = "Nats-Last-Consumer";

/// One message of the consumer, with what its reply subject says.
pub(super) struct Delivery {
    pub(super) message: Message,
    pub(super) stream_sequence: u64,
    /// Messages the consumer still had to deliver after this one.
    pub(super) pending: u64,
    /// When the message was stored, in nanoseconds since the Unix epoch.
    pub(super) published: u64,
}

/// Why an [`Ordered`] stream ended (logged; [`Resuming`] goes on with a new consumer unless the
/// subscription was closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// A delivery skipped consumer sequences: messages were lost (e.g. a slow client).
    Gap { expected: u64, got: u64 },
    /// A heartbeat says the consumer delivered messages this stream never received.
    Behind { delivered: u64, received: u64 },
    /// The server sent a status other than a heartbeat (a push consumer is sent none other, so
    /// this is taken as a broken consumer).
    Status(u16),
    /// The client reconnected: the consumer may be gone (a restarted server keeps no ephemeral
    /// consumer) or have delivered into the gap.
    Reconnected,
    /// Nothing, not even a heartbeat, for three heartbeats: the consumer is gone (deleted by
    /// another client, or lost with its server) or the connection is dead.
    Silent,
    /// A delivery whose reply subject is not a JetStream ack subject.
    BadMetadata,
    /// The subscription was closed (the client was closed).
    Closed,
}

/// The deliveries of one ordered push consumer; see the module documentation.
pub(super) struct Ordered {
    subscriber: Subscriber,
    client: Client,
    stats: Arc<Statistics>,
    connects: u64,
    /// The consumer sequence of the last delivery.
    received: u64,
    check: tokio::time::Interval,
    /// Checks since anything arrived.
    silent: u32,
    ended: Option<End>,
}

impl Ordered {
    /// Reads `subscriber`, which must be subscribed to the consumer's deliver subject before the
    /// consumer is created (so nothing is delivered to no one); `connects` is the client's count
    /// of connections read before both (a reconnect in between then ends the stream at once).
    fn new(client: Client, subscriber: Subscriber, connects: u64) -> Self {
        let stats = client.statistics();
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + CHECK, CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ordered { subscriber, client, stats, connects, received: 0, check, silent: 0, ended: None }
    }

    fn answer(&self, subject: async_nats::Subject) {
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.publish(subject, Bytes::new()).await {
                tracing::debug!(error = %e, "a flow-control answer was not sent; the server asks again");
            }
        });
    }

    /// A status message: flow control and heartbeats are answered or checked; any other status
    /// ends the stream.
    fn on_status(&mut self, status: StatusCode, message: Message) -> Option<End> {
        if status != StatusCode::IDLE_HEARTBEAT {
            return Some(End::Status(status.as_u16()));
        }
        // A flow-control request carries its reply subject; a heartbeat of a stalled consumer
        // names it in a header.
        if let Some(reply) = message.reply {
            self.answer(reply);
        }
        let headers = message.headers.as_ref();
        if let Some(stalled) = headers.and_then(|h| h.get(CONSUMER_STALLED)) {
            self.answer(async_nats::Subject::from(stalled.as_str().to_string()));
        }
        match last_consumer(headers) {
            Some(delivered) if delivered != self.received => Some(End::Behind { delivered, received: self.received }),
            _ => None,
        }
    }

    fn end(&mut self, why: End) -> Poll<Option<Delivery>> {
        tracing::debug!(reason = ?why, received = self.received, "an ordered consumer's stream ends; a new watch continues it");
        self.ended = Some(why);
        Poll::Ready(None)
    }
}

/// What a new consumer of a watch is made of.
pub(super) struct Source {
    pub(super) client: Client,
    pub(super) js: jetstream::Context,
    /// The stream's name (`KV_<bucket>`).
    pub(super) stream: String,
    pub(super) filter_subject: String,
    /// For errors: the bucket and the watched pattern.
    pub(super) bucket: String,
    pub(super) pattern: String,
    /// The creation time of the stream incarnation the watch began in (nanoseconds since the
    /// Unix epoch), once known: as its caller confirmed it ([`Watch::began_in`](crate::store::Watch):
    /// the open sent with the watch, the live handle's watcher), or from the first check of a
    /// re-made consumer ([`Source::check_same`]). A stream's creation time is stored with it and
    /// survives restarts and leader changes, so equality identifies the incarnation without
    /// comparing two clocks.
    pub(super) incarnation: std::sync::OnceLock<u64>,
}

impl Source {
    /// Subscribes to a new deliver subject, then makes the consumer: no acks, flow control, idle
    /// heartbeats, one replica in memory (what async-nats's ordered consumer asks for).
    pub(super) async fn open(&self, deliver_policy: consumer::DeliverPolicy) -> StoreResult<(Ordered, consumer::Info)> {
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        let deliver_subject = self.client.new_inbox();
        let err = |e: &(dyn std::error::Error + 'static)| classify(e).bucket(self.bucket.clone()).key(self.pattern.clone());
        let subscriber = self.client.subscribe(deliver_subject.clone()).await.map_err(|e| err(&e))?;
        let config = consumer::push::Config {
            deliver_subject,
            description: Some("kv-config watch".to_string()),
            filter_subject: self.filter_subject.clone(),
            replay_policy: consumer::ReplayPolicy::Instant,
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            max_deliver: 1,
            flow_control: true,
            idle_heartbeat: IDLE_HEARTBEAT,
            inactive_threshold: Duration::from_secs(30),
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        };
        let consumer = self.js.create_consumer_on_stream(config, &self.stream).await.map_err(|e| err(&e))?;
        Ok((Ordered::new(self.client.clone(), subscriber, connects), consumer.cached_info().clone()))
    }

    /// After making a consumer to go on with a watch that began on a stream incarnation: an
    /// error of kind `NotFound` if the stream now under the bucket's name is another one (the
    /// bucket was deleted and created again meanwhile), and the new consumer is deleted. Going on
    /// from the last delivered revision + 1 in another incarnation would skip its first entries
    /// and lay the rest over the old bucket's state. The incarnation is the stream's creation
    /// time, compared for equality once [`Source::incarnation`] is known. Before that (a watch
    /// made without an open), the stream must be older than the watch's first consumer, created
    /// by the server at `born` (nanoseconds since the Unix epoch), and is then recorded. Checked
    /// after the consumer is made: a stream seen to be the old one then was the old one when the
    /// consumer was made. When the stream cannot be read, the consumer is deleted too and the
    /// error returned.
    pub(super) async fn check_same(&self, born: u64, consumer: &str) -> StoreResult<()> {
        let err = |e: &(dyn std::error::Error + 'static)| classify(e).bucket(self.bucket.clone()).key(self.pattern.clone());
        let same = |created: u64| match self.incarnation.get() {
            Some(known) => created == *known,
            None if created <= born => {
                // Checks run one at a time per watch; were two to race, the first value stays.
                let _ = self.incarnation.set(created);
                self.incarnation.get() == Some(&created)
            }
            None => false,
        };
        let replaced = match self.js.get_stream(&self.stream).await {
            Ok(stream) if same(stream.cached_info().created.unix_timestamp_nanos().max(0) as u64) => return Ok(()),
            Ok(_) => crate::store::StoreError::new(crate::store::StoreErrorKind::NotFound)
                .bucket(self.bucket.clone())
                .key(self.pattern.clone())
                .detail("the bucket was deleted and created again while watched; this watch ends"),
            Err(e) => err(&e),
        };
        // Not known to be the same incarnation: the consumer is not used.
        self.delete(consumer).await;
        Err(replaced)
    }

    /// Deletes a consumer; one already gone is fine.
    pub(super) async fn delete(&self, name: &str) {
        if let Err(e) = self.js.delete_consumer_from_stream(name, &self.stream).await {
            tracing::debug!(consumer = %name, stream = %self.stream, error = %e, "a watch's consumer was not deleted; the server expires it");
        }
    }
}

/// The pause before the `n`th attempt in a row to make a new consumer: 100 ms doubling to 5 s.
fn pause_before(n: u32) -> Duration {
    Duration::from_millis(100).saturating_mul(1 << n.saturating_sub(1).min(6)).min(Duration::from_secs(5))
}

/// A watch's deliveries across consumers: see the module documentation.
pub(super) struct Resuming {
    source: Arc<Source>,
    /// Where the first consumer started; a new one starts after the last delivery, or here if
    /// nothing was delivered yet.
    start: consumer::DeliverPolicy,
    current: Option<Ordered>,
    opening: Option<BoxFuture<'static, StoreResult<(Ordered, consumer::Info)>>>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    failures: u32,
    /// The stream sequence of the last delivery (0: none yet).
    last: u64,
    /// An initial pass (the latest entry of every key) is unfinished: a new consumer makes the
    /// pass again rather than replay every revision after `last`.
    in_pass: bool,
    /// The current consumer makes such a pass again: what it delivers up to `last` was delivered.
    again: bool,
    /// The bucket is gone: no new consumer, the watch ends.
    done: bool,
    /// The current consumer's name, shared with whoever deletes it when the watch ends.
    name: Arc<std::sync::Mutex<String>>,
    /// When the server created the first consumer (nanoseconds since the Unix epoch): a new one
    /// must be on the stream incarnation that existed then ([`Source::check_same`]).
    born: u64,
}

impl Resuming {
    /// Goes on from `first`, the consumer [`Source::open`] made with `start`, whose info is
    /// `info`; the current consumer's name is kept in `name`.
    pub(super) fn new(source: Arc<Source>, start: consumer::DeliverPolicy, first: Ordered, info: &consumer::Info, name: Arc<std::sync::Mutex<String>>) -> Self {
        use consumer::DeliverPolicy;
        // "New" means after the stream's last entry when the first consumer was made (the server
        // reports it as delivered): a new consumer goes on from there, not from whenever it is
        // made, so nothing written in between is lost.
        let start = match start {
            DeliverPolicy::New => DeliverPolicy::ByStartSequence { start_sequence: info.delivered.stream_sequence + 1 },
            other => other,
        };
        let in_pass = matches!(start, DeliverPolicy::LastPerSubject) && info.num_pending > 0;
        let born = info.created.unix_timestamp_nanos().max(0) as u64;
        Resuming { source, start, current: Some(first), opening: None, pause: None, failures: 0, last: 0, in_pass, again: false, done: false, name, born }
    }

    fn next_start(&self) -> consumer::DeliverPolicy {
        if self.in_pass {
            // The latest entries arrive in revision order, so every key not delivered yet has
            // its latest entry after `last`; the ones up to `last` are skipped.
            consumer::DeliverPolicy::LastPerSubject
        } else if self.last == 0 {
            self.start
        } else {
            consumer::DeliverPolicy::ByStartSequence { start_sequence: self.last + 1 }
        }
    }
}

impl Stream for Resuming {
    type Item = StoreResult<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(current) = this.current.as_mut() {
                match Pin::new(&mut *current).poll_next(cx) {
                    Poll::Ready(Some(d)) => {
                        if d.pending == 0 {
                            this.in_pass = false;
                        }
                        if this.again {
                            if d.stream_sequence <= this.last && d.pending > 0 {
                                continue;
                            }
                            // The pass's last entry comes through even when delivered before
                            // (the same revision again): it tells the caller the pass is over.
                            this.again = this.in_pass;
                        }
                        this.last = this.last.max(d.stream_sequence);
                        return Poll::Ready(Some(Ok(d)));
                    }
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        let why = current.ended;
                        this.current = None;
                        if why == Some(End::Closed) {
                            return Poll::Ready(None);
                        }
                        // The old consumer may still exist (a gap, a heartbeat ahead of us).
                        let (source, old) = (this.source.clone(), this.name.lock().map(|n| n.clone()).unwrap_or_default());
                        tokio::spawn(async move { source.delete(&old).await });
                    }
                }
            }
            if let Some(pause) = this.pause.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.pause = None;
            }
            if this.opening.is_none() {
                let (source, start) = (this.source.clone(), this.next_start());
                tracing::debug!(stream = %source.stream, filter = %source.filter_subject, ?start, "a watch's consumer ended; making a new one");
                let born = this.born;
                this.opening = Some(
                    async move {
                        let (ordered, info) = source.open(start).await?;
                        source.check_same(born, &info.name).await?;
                        Ok((ordered, info))
                    }
                    .boxed(),
                );
            }
            let Some(opening) = this.opening.as_mut() else { continue };
            match opening.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((ordered, info))) => {
                    this.opening = None;
                    this.failures = 0;
                    this.again = this.in_pass && this.last > 0;
                    if let Ok(mut name) = this.name.lock() {
                        *name = info.name;
                    }
                    this.current = Some(ordered);
                }
                Poll::Ready(Err(e)) => {
                    this.opening = None;
                    this.failures += 1;
                    // A bucket that is gone ends the watch: one created again under its name
                    // starts its revisions again at 1, and going on after `last` would skip them.
                    this.done = *e.kind() == crate::store::StoreErrorKind::NotFound;
                    this.pause = Some(Box::pin(tokio::time::sleep(pause_before(this.failures))));
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

fn last_consumer(headers: Option<&HeaderMap>) -> Option<u64> {
    headers?.get(LAST_CONSUMER)?.as_str().parse().ok()
}

impl Stream for Ordered {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = &mut *self;
        if this.ended.is_some() {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.subscriber).poll_next(cx) {
                Poll::Ready(None) => return this.end(End::Closed),
                Poll::Ready(Some(mut message)) => {
                    this.silent = 0;
                    if let Some(status) = message.status.take() {
                        match this.on_status(status, message) {
                            Some(why) => return this.end(why),
                            None => continue,
                        }
                    }
                    let Some(ack) = message.reply.as_deref().and_then(parse_ack) else {
                        return this.end(End::BadMetadata);
                    };
                    if ack.consumer_sequence != this.received + 1 {
                        return this.end(End::Gap { expected: this.received + 1, got: ack.consumer_sequence });
                    }
                    this.received = ack.consumer_sequence;
                    return Poll::Ready(Some(Delivery {
                        message,
                        stream_sequence: ack.stream_sequence,
                        pending: ack.pending,
                        published: ack.published,
                    }));
                }
                Poll::Pending => {
                    // Nothing buffered: look at the connection now and then, and count the
                    // silence. Deliveries keep their own check (the consumer sequence), so a
                    // busy stream never ticks. A stall of this process (a pause, a busy runtime)
                    // counts as one check, not as the time it lasted: ticks that were missed are
                    // not made up.
                    while this.check.poll_tick(cx).is_ready() {
                        if this.stats.connects.load(Ordering::Relaxed) != this.connects {
                            return this.end(End::Reconnected);
                        }
                        this.silent += 1;
                        if this.silent >= SILENT_CHECKS {
                            return this.end(End::Silent);
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// What a JetStream ack subject says about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ack {
    pub(super) stream_sequence: u64,
    pub(super) consumer_sequence: u64,
    pub(super) published: u64,
    pub(super) pending: u64,
}

/// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`
/// and the longer form of ADR-15 with a domain and an account hash first
/// (`$JS.ACK.<domain>.<account>.<stream>...<pending>[.<more>]`), as async-nats does.
pub(super) fn parse_ack(reply: &str) -> Option<Ack> {
    // One pass over the bytes for the dots: every delivery of a load comes through here, and
    // splitting with `str::split` (a memchr call per token) was an eighth of a load's CPU.
    let rest = reply.strip_prefix("$JS.ACK.")?.as_bytes();
    let mut dots = [0usize; 9];
    let mut n = 0;
    for (i, &b) in rest.iter().enumerate() {
        if b == b'.' {
            if n < dots.len() {
                dots[n] = i;
            }
            n += 1;
        }
    }
    // Tokens are one more than dots. The numbers start after stream, consumer and delivered
    // count (and domain and account).
    let at = match n + 1 {
        7 => 3,
        t if t >= 9 => 5,
        _ => return None,
    };
    let token = |k: usize| {
        let start = if k == 0 { 0 } else { dots[k - 1] + 1 };
        let end = if k < n.min(dots.len()) { dots[k] } else { rest.len() };
        &rest[start..end]
    };
    let number = |k: usize| digits(token(at + k));
    Some(Ack { stream_sequence: number(0)?, consumer_sequence: number(1)?, published: number(2)?, pending: number(3)? })
}

/// A decimal `u64` of ASCII digits only (no sign, no spaces); `None` when empty or too large.
fn digits(token: &[u8]) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_consumer_is_tried_again_after_a_growing_pause() {
        let pauses: Vec<u64> = (1..=8).map(|n| pause_before(n).as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn both_forms_of_the_ack_subject_parse() {
        let short = parse_ack("$JS.ACK.KV_cfg.abc.1.42.7.1700000000000000000.3").unwrap();
        assert_eq!(short, Ack { stream_sequence: 42, consumer_sequence: 7, published: 1_700_000_000_000_000_000, pending: 3 });
        let long = parse_ack("$JS.ACK._.ACCHASH.KV_cfg.abc.1.42.7.1700000000000000000.3.token").unwrap();
        assert_eq!(long, short);
        let long = parse_ack("$JS.ACK.hub.ACCHASH.KV_cfg.abc.1.42.7.1700000000000000000.3").unwrap();
        assert_eq!(long, short);
    }

    #[test]
    fn anything_else_is_not_an_ack_subject() {
        assert_eq!(parse_ack("_INBOX.abc"), None);
        assert_eq!(parse_ack("$JS.ACK.KV_cfg.abc.1.42.7.3"), None);
        assert_eq!(parse_ack("$JS.ACK.KV_cfg.abc.1.x.7.1700000000000000000.3"), None);
        assert_eq!(parse_ack("$JS.ACK.a.b.KV_cfg.abc.1.42.7.1700000000000000000"), None);
    }
}
