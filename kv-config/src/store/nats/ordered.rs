//! An ordered push consumer read through a plain subscription: the watch under every
//! [`NatsStore`](super::NatsStore) load, start and live handle.
//!
//! async-nats's own ordered consumer wraps every delivery in a JetStream message (a clone of the
//! client's context, dropped again), parses the reply subject once for its own sequence check and
//! again for the caller, and re-creates the consumer by itself after a gap, a missed heartbeat or
//! a reconnect. At 50,000 keys those per-message costs were about a third of kv-config's client
//! CPU during a load (BENCHMARKS.md, "The stretch").
//!
//! This stream does the protocol part of an ordered consumer (answering flow control, checking
//! every delivery and heartbeat against the consumer sequence) and leaves recovery to the
//! caller, which already owns it: on a gap, a heartbeat that reports messages this stream never
//! saw, a status other than a heartbeat, or a reconnect of the client, the stream **ends**. The
//! live watcher then starts a new watch from its last applied revision + 1 (and its quiet-time
//! probes catch a consumer that went silent, as they did for async-nats's); the initial scan does
//! the same from its last read revision. That is how nats.go and nats.py recover an ordered
//! consumer too: a new consumer from the last stream sequence + 1, never a rewind.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, Statistics, StatusCode, Subscriber};
use bytes::Bytes;
use futures_util::Stream;

/// The idle heartbeat the server sends on a quiet consumer (as async-nats's ordered consumer).
pub(super) const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);

/// How often a stream with nothing to read looks whether its client reconnected meanwhile.
const RECONNECT_CHECK: Duration = Duration::from_millis(250);

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

/// Why an ordered stream ended (logged; the caller starts a new watch either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// A delivery skipped consumer sequences: messages were lost (e.g. a slow client).
    Gap { expected: u64, got: u64 },
    /// A heartbeat says the consumer delivered messages this stream never received.
    Behind { delivered: u64, received: u64 },
    /// The server sent a status other than a heartbeat (e.g. 409, the consumer was deleted).
    Status(u16),
    /// The client reconnected: the consumer may be gone (a restarted server keeps no ephemeral
    /// consumer) or have delivered into the gap.
    Reconnected,
    /// A delivery whose reply subject is not a JetStream ack subject.
    BadMetadata,
    /// The subscription was closed (the client was closed).
    Closed,
}

/// The stream of an ordered push consumer's deliveries; see the module documentation.
pub(super) struct Ordered {
    subscriber: Subscriber,
    client: Client,
    stats: Arc<Statistics>,
    connects: u64,
    /// The consumer sequence of the last delivery.
    received: u64,
    check: tokio::time::Interval,
    ended: Option<End>,
}

impl Ordered {
    /// Reads `subscriber`, which must be subscribed to the consumer's deliver subject before the
    /// consumer is created (so nothing is delivered to no one).
    pub(super) fn new(client: Client, subscriber: Subscriber) -> Self {
        let stats = client.statistics();
        let connects = stats.connects.load(Ordering::Relaxed);
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + RECONNECT_CHECK, RECONNECT_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ordered { subscriber, client, stats, connects, received: 0, check, ended: None }
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
                    // Nothing buffered: look at the connection now and then. Deliveries keep
                    // their own check (the consumer sequence), so a busy stream never ticks.
                    while this.check.poll_tick(cx).is_ready() {
                        if this.stats.connects.load(Ordering::Relaxed) != this.connects {
                            return this.end(End::Reconnected);
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
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens: [&str; 9] = [""; 9];
    let mut n = 0;
    for token in rest.split('.') {
        if n < tokens.len() {
            tokens[n] = token;
        }
        n += 1;
    }
    // The numbers start after stream, consumer and delivered count (and domain and account).
    let at = match n {
        7 => 3,
        n if n >= 9 => 5,
        _ => return None,
    };
    let number = |i: usize| tokens[at + i].parse::<u64>().ok();
    Some(Ack { stream_sequence: number(0)?, consumer_sequence: number(1)?, published: number(2)?, pending: number(3)? })
}

#[cfg(test)]
mod tests {
    use super::*;

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
