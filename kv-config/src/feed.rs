//! Reading a watch into a [`View`]: the prefix rules, the initial pass over a bucket, and when a
//! burst of entries is complete. Shared by one-shot [`load`](crate::load()) and the live watcher.

use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};

use crate::error::{Error, Result};
use crate::store::{Bucket, Entry, Probe, StoreError, StoreErrorKind, Watch, WatchStart};
use crate::view::View;

/// How long a watcher waits for the rest of an atomic batch when the server's pending count says
/// it is caught up but the batch's commit has not arrived, before it asks the server
/// ([`batch_rest`]): the commit may lie outside the watched prefix (a batch from any client may
/// span prefixes), so it may never come; or the server may still be storing the batch (it stores
/// a batch's messages one by one, and the pending count reads 0 between them).
pub(crate) const BATCH_SETTLE: Duration = Duration::from_millis(50);

/// How long a live watcher waits for an entry the server's pending count announces before it
/// asks the server ([`Probe`]) whether one exists. nats-server 2.15 can count one too many: on a
/// bucket of history 1, a key overwritten before its entry was delivered can leave the count of
/// the last delivered entry at 1 with nothing to come (a raw async-nats watch showed it after 7
/// of 200 bursts of 5 concurrent writes to one key). Waiting for that entry would hold the burst
/// back until the quiet-time check, a heartbeat later. When the server says the entry is stored,
/// the watcher waits for it as for any entry (a pause is not a stalled watch), and asks about the
/// burst's next announced entry after twice the wait, up to a quarter heartbeat (a slow link
/// pauses inside every large burst). An initial load waits [`BATCH_SETTLE`]
/// instead (a start is not hurried by a few milliseconds, and a scan of 50,000 keys should not
/// ask the server each time it pauses), and ends only when the stream's last revision is the last
/// entry it read.
pub(crate) const PENDING_SETTLE: Duration = Duration::from_millis(5);

/// What the server says about the rest of an atomic batch, asked with a [`Probe`] after the
/// revision `seen` (the last entry delivered) once nothing arrived within [`BATCH_SETTLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchRest {
    /// Nothing after `seen` matches the watch, yet the bucket holds later entries: the batch's
    /// rest lies outside the watched keys. What arrived is all this watch gets of it.
    Done,
    /// An entry the watch matches is stored at this revision and not yet delivered: in flight.
    Stored(u64),
    /// Nothing is stored after `seen`: the server has not finished storing the batch (a batch's
    /// commit always follows its other entries).
    NotStored,
}

/// Reads a [`Probe`] made with `after = seen`. Exact for a watch of the whole bucket; for a
/// prefix, a batch still being stored could read [`BatchRest::Done`] if its stored part after
/// `seen` lies outside the prefix.
pub(crate) fn batch_rest(probe: &Probe, seen: u64) -> BatchRest {
    match probe.next {
        Some(next) => BatchRest::Stored(next),
        None if probe.last_revision <= seen => BatchRest::NotStored,
        None => BatchRest::Done,
    }
}

/// The NATS subject pattern of every key under `prefix`.
pub(crate) fn pattern_for(prefix: &str) -> String {
    if prefix.is_empty() {
        ">".to_string()
    } else {
        format!("{prefix}>")
    }
}

/// The error of a request to the server about `bucket` that got no answer within `wait`.
pub(crate) fn not_reached(bucket: &str, wait: Duration) -> Error {
    Error::Store(StoreError::new(StoreErrorKind::Timeout).bucket(bucket).detail(format!("the server was not reached within {wait:?}")))
}

/// Checks a key prefix: empty, or key tokens ending with a dot.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || (prefix.ends_with('.') && crate::store::is_valid_key(&prefix[..prefix.len() - 1])) {
        Ok(())
    } else {
        Err(Error::InvalidPrefix(crate::redact::bound(prefix, 80)))
    }
}

/// How many times an initial pass starts a new watch after one ended, before it gives up.
const MAX_SCAN_RESTARTS: u32 = 5;

/// Where a watcher stands after an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CatchUp {
    /// More entries are pending.
    No,
    /// Caught up: a snapshot may be taken.
    Yes,
    /// Caught up by the pending count, inside an atomic batch whose commit has not been seen:
    /// wait [`BATCH_SETTLE`] for more, then ask the server ([`batch_rest`]).
    Settle,
}

/// Where a watcher stands after `entry`.
pub(crate) fn catch_up(entry: &Entry) -> CatchUp {
    match (entry.delta, entry.batch_continues) {
        (0, false) => CatchUp::Yes,
        (0, true) => CatchUp::Settle,
        _ => CatchUp::No,
    }
}

/// One pass over the bucket: a watch delivers the latest entry of every key under `prefix`, read
/// until caught up, within `timeout` (a stalled or silent server is an error, never a hang). The
/// watch stays open for live changes. `watch`, when given, is one already started on the bucket
/// for the prefix's keys from [`WatchStart::LatestPerKey`] (see [`Store::open_and_watch`]).
///
/// [`Store::open_and_watch`]: crate::store::Store::open_and_watch
pub(crate) async fn watch_initial(bucket: &dyn Bucket, prefix: &str, watch: Option<Watch>, timeout: Duration) -> Result<(Watch, View)> {
    let mut fill = Fill::new(prefix, true);
    let watch = scan(bucket, &pattern_for(prefix), watch, timeout, &mut fill).await?;
    Ok((watch, fill.finish()))
}

/// Fills a new [`View`] of the keys under a prefix from a [`scan`]; entries outside the prefix
/// only raise the view's `seen`.
pub(crate) struct Fill<'a> {
    prefix: &'a str,
    view: View,
    /// The scan reads the prefix's keys only, so the server's count of them sizes the view; a
    /// scan of more (a shared watch's first pass) sizes it only for the empty prefix.
    exact: bool,
}

impl<'a> Fill<'a> {
    pub(crate) fn new(prefix: &'a str, exact: bool) -> Self {
        Fill { prefix, view: View::default(), exact: exact || prefix.is_empty() }
    }

    /// The filled view; one that grew key by key gives back its spare room.
    pub(crate) fn finish(mut self) -> View {
        if !self.exact {
            self.view.values.shrink_to_fit();
        }
        self.view
    }
}

impl Scan for Fill<'_> {
    fn expect(&mut self, n: usize) {
        if self.exact {
            self.view = View::with_capacity(n);
        }
    }
    fn entry(&mut self, e: Entry) {
        self.view.apply_owned(self.prefix, e);
    }
}

/// What [`scan`] fills.
pub(crate) trait Scan {
    /// The server announced `n` entries (capped), before the first.
    fn expect(&mut self, n: usize);
    /// One entry of the initial pass.
    fn entry(&mut self, e: Entry);
}

/// The initial pass of [`watch_initial`] over the keys matching `pattern`, into `into`, on
/// `watch` or a new one. Returns the watch, still open.
pub(crate) async fn scan(bucket: &dyn Bucket, pattern: &str, watch: Option<Watch>, timeout: Duration, into: &mut impl Scan) -> Result<Watch> {
    let deadline = Instant::now() + timeout;
    let too_slow = |what: String| {
        Error::Store(StoreError::new(StoreErrorKind::Timeout).bucket(bucket.name()).detail(format!(
            "the initial load {what} within {timeout:?}"
        )))
    };
    let mut watch = match watch {
        Some(watch) => watch,
        None => tokio::time::timeout(timeout, bucket.watch(pattern, WatchStart::LatestPerKey))
            .await
            .map_err(|_| too_slow("could not start a watch".into()))??,
    };
    let pending = watch.initial_pending();
    into.expect(pending.min(1 << 20) as usize);
    // Asks the server what it holds after revision `after`, within the load's deadline; `what`
    // says how far the read got, for the timeout error.
    let ask = |after: u64, what: String| async move {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_slow(what));
        }
        tokio::time::timeout(left, bucket.probe(pattern, after)).await.map_err(|_| too_slow(what))?.map_err(Error::from)
    };
    if pending == 0 {
        // Nothing matches, or every matching key is hidden for a moment (nats-server 2.15, during
        // an atomic batch's commit on a history-1 bucket; see the short read below): the server
        // says which. Only the read of an empty prefix pays this request.
        if ask(0, "read 0 of 0 entries".into()).await?.next.is_none() {
            return Ok(watch);
        }
        tracing::debug!(bucket = bucket.name(), "the initial pass announced nothing, but the server holds entries; reading on");
    }
    // Set by the first entry of a batch whose commit is not seen, never postponed by later ones.
    let mut settle_until: Option<Instant> = None;
    let mut read = 0u64;
    let mut last = 0u64;
    let mut restarts = 0;
    loop {
        // An entry already buffered needs no timer: a 50,000-key load would otherwise arm and
        // cancel 50,000 timers (and read the clock three times per entry).
        let ready = match watch.next().now_or_never() {
            Some(item) => Some(item),
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Inside a batch, until its settle time; else a settle time too, as the pending
                // count can announce an entry that never comes (see PENDING_SETTLE).
                let settle = settle_until.map_or(BATCH_SETTLE, |until| until.saturating_duration_since(Instant::now()));
                if settle.is_zero() {
                    None
                } else if left.is_zero() {
                    return Err(too_slow(format!("read {read} of {pending} entries")));
                } else {
                    match tokio::time::timeout(settle.min(left), watch.next()).await {
                        Ok(item) => Some(item),
                        Err(_) if settle <= left => None,
                        Err(_) => return Err(too_slow(format!("read {read} of {pending} entries"))),
                    }
                }
            }
        };
        let Some(item) = ready else {
            // Nothing more within the settle time: ask the server (the load's deadline also
            // bounds the questions).
            if settle_until.is_none() {
                // Every key's latest entry comes in revision order: nothing stored in the bucket
                // after the last one read means all were read. The stream's last revision (from
                // its leader) must say so too, not only the search for a next entry, which a
                // replica behind the leader may answer.
                let probe = ask(last, format!("read {read} of {pending} entries")).await?;
                if probe.next.is_none() && probe.last_revision <= last {
                    break;
                }
                continue;
            }
            let probe = ask(last, format!("read {read} of {pending} entries (an atomic batch among them unfinished)")).await?;
            match batch_rest(&probe, last) {
                BatchRest::Done => break,
                BatchRest::Stored(_) => settle_until = None,
                BatchRest::NotStored => settle_until = Some(Instant::now() + BATCH_SETTLE),
            }
            continue;
        };
        match item {
            Some(Ok(e)) => {
                read += 1;
                last = last.max(e.revision);
                let at = catch_up(&e);
                into.entry(e);
                match at {
                    // Fewer entries than the server announced: nats-server 2.15 can start a new
                    // watch, during an atomic batch's commit on a history-1 bucket, after the old
                    // entries of the batch's keys were removed and before their new ones show;
                    // the pending count then reads 0 with those keys missing (seen in 13 of 4,000
                    // loads under load). The server holds them: ask, and read on if it does.
                    CatchUp::Yes if read < pending => {
                        if ask(last, format!("read {read} of {pending} entries")).await?.next.is_none() {
                            break;
                        }
                        tracing::debug!(bucket = bucket.name(), read, pending, "the initial pass ended short; reading on");
                        settle_until = None;
                    }
                    CatchUp::Yes => break,
                    CatchUp::Settle => {
                        settle_until.get_or_insert(Instant::now() + BATCH_SETTLE);
                    }
                    CatchUp::No if read % 1024 == 0 && Instant::now() >= deadline => {
                        return Err(too_slow(format!("read {read} of {pending} entries")))
                    }
                    CatchUp::No => settle_until = None,
                }
            }
            Some(Err(e)) if matches!(e.kind(), StoreErrorKind::NotFound | StoreErrorKind::PermissionDenied) => {
                return Err(e.into())
            }
            Some(Err(e)) => tracing::warn!(bucket = bucket.name(), error = %e, "watch error during the initial load"),
            None if restarts < MAX_SCAN_RESTARTS => {
                // The watch ended before it caught up (a store's watch should not; NatsStore's
                // makes a new consumer itself): a new one from the entry after the last read
                // carries the pass on. The latest entries are delivered in revision order, so
                // every key not read yet has its latest entry after `last` (older revisions after
                // it come too, and the latest is applied last).
                restarts += 1;
                let start = if read == 0 { WatchStart::LatestPerKey } else { WatchStart::FromRevision(last + 1) };
                let what = format!("read {read} of {pending} entries (the watch ended and was started again)");
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(too_slow(what));
                }
                tracing::debug!(bucket = bucket.name(), read, pending, "the watch ended during the initial load; a new one reads on");
                drop(watch);
                watch = tokio::time::timeout(left, bucket.watch(pattern, start)).await.map_err(|_| too_slow(what))??;
                settle_until = None;
            }
            None => return Err(Error::Closed(bucket.name().to_string())),
        }
    }
    Ok(watch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(last_revision: u64, next: Option<u64>) -> Probe {
        Probe { incarnation: 1, last_revision, first_revision: 1, next }
    }

    #[test]
    fn the_rest_of_a_batch_is_stored_not_stored_or_outside_the_watched_keys() {
        // An entry the watch matches is stored after the last delivered one (10): in flight.
        assert_eq!(batch_rest(&probe(12, Some(12)), 10), BatchRest::Stored(12));
        // Nothing stored after it: the server is still storing the batch.
        assert_eq!(batch_rest(&probe(10, None), 10), BatchRest::NotStored);
        // The server is behind what was delivered (a new leader catching up): nothing to finish.
        assert_eq!(batch_rest(&probe(9, None), 10), BatchRest::NotStored);
        // Later entries exist and none matches: the rest lies outside the watched keys.
        assert_eq!(batch_rest(&probe(12, None), 10), BatchRest::Done);
    }
}
