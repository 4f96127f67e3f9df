//! The watcher task of a [`Hub`]: reads its watch, hands entries to the hub (which swaps the
//! snapshots of its handles once per caught-up burst), and never trusts silence. When the watch
//! has been quiet for a heartbeat it asks the server (a [`probe`](crate::store::Bucket::probe))
//! whether anything newer exists: no answer marks the handles stale, a newer entry left
//! undelivered re-creates the watch from the last delivered revision + 1, and a replaced bucket
//! (deleted and created again, or a wiped store) is reloaded from scratch. NATS's own clients
//! re-create ordered consumers the same way. A `NatsStore` watch already makes a new consumer on
//! a gap, a reconnect or three silent heartbeats (`store/nats/ordered.rs`); these checks are the
//! second line, for what a consumer cannot see (an entry stored but never delivered, a replaced
//! bucket) and for other stores. async-nats's own ordered consumer, used before, could go silent
//! for good after a cluster failover, with no error and no end of stream.
//!
//! Nor does it trust the server's count of entries still to come: when an entry it announces
//! does not arrive within [`PENDING_SETTLE`], the server is asked whether one exists
//! (nats-server 2.15 can announce one too many on a history-1 bucket).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};

use super::hub::Hub;
use super::StaleReason;
use crate::feed::{batch_rest, BatchRest, CatchUp, BATCH_SETTLE, PENDING_SETTLE};
use crate::store::{Announcement, Bucket, Probe, StoreError, StoreErrorKind, Watch, WatchStart};
use futures_util::stream::BoxStream;

/// What the loop waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The next entry; probe after a quiet heartbeat.
    Quiet,
    /// The rest of an atomic batch, until `until` (set by the batch's first entry, so a stream
    /// of batches cannot postpone the question for ever); then ask the server whether more of it
    /// will come ([`batch_rest`]). A burst never completes halfway through a batch on a timer:
    /// that would swap in, and let new handles start from, half of it. `look` is what the last
    /// question found, if nothing was delivered since.
    Batch { until: Instant, look: Option<Look> },
    /// The next entry, which the last one's pending count announced; ask the server after this
    /// long (the count can announce one that never comes): [`PENDING_SETTLE`] at first in a
    /// burst, twice as long after each answer that it is stored (up to a quarter heartbeat), so
    /// a slow link that pauses inside a large burst costs a few questions, not one per pause.
    Pending(Duration),
    /// As `Quiet`, after the server said an announced entry is stored at revision `rev`: wait for
    /// it as for any entry; once it (or a later one) arrives, announced entries are `Pending`
    /// again, with `settle`.
    Announced { rev: u64, settle: Duration },
    /// A probe saw this revision undelivered: look again soon, re-create the watch if still missing.
    Suspect(u64),
}

/// The questions about an open batch with nothing delivered in between: the hub's `seen`, when
/// the first was asked, and since when the server says the rest is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    seen: u64,
    since: Instant,
    stored: Option<Instant>,
}

/// On a busy bucket the watch is never quiet; the server is still asked every this many
/// heartbeats, so a replaced bucket is noticed even while entries flow.
const BUSY_CHECK_EVERY: u32 = 4;

/// The watcher task. Holds only a weak reference while it waits, so dropping the hub (with the
/// last handle on it) ends it.
pub(super) async fn run(weak: Weak<Hub>, mut watch: Watch, bucket: Arc<dyn Bucket>) {
    let Some((heartbeat, pattern, incarnation)) = weak.upgrade().map(|h| (h.heartbeat, h.pattern.clone(), h.state().incarnation)) else { return };
    // The incarnation the hub learned (by the open, or a cache start's probe) before the watch was
    // made: the watch's is that one, or a later one the first check reloads from, so the label
    // errs only towards a reload.
    if let Some(incarnation) = incarnation {
        watch.began_in(incarnation);
    }
    // The server's announcements about the bucket (NATS: its stream's advisories), where it makes
    // them: a deleted or re-created bucket is then acted on at once, not a heartbeat later.
    let mut announced = bucket.announcements().await;
    let mut waiting = Waiting::Quiet;
    let mut last_check = Instant::now();
    if announced.is_some() {
        // Announcements reach this watcher from now on (the server had the subscription when
        // `announcements` returned); one look at the server covers the time before. Writers
        // count on them only after it.
        (watch, waiting) = checked(&weak, &bucket, &pattern, heartbeat, waiting, watch).await;
        match weak.upgrade() {
            Some(hub) => hub.set_announced(true),
            None => return,
        }
    }
    loop {
        let wait = match waiting {
            Waiting::Quiet | Waiting::Announced { .. } => heartbeat,
            Waiting::Pending(settle) => settle,
            Waiting::Batch { until, .. } => until.saturating_duration_since(Instant::now()),
            Waiting::Suspect(_) => (heartbeat / 4).max(BATCH_SETTLE),
        };
        // A panic inside the client's stream (seen when a closed client's ordered consumer is
        // polled again) ends this watch, not the watcher: a new one is made below.
        let mut news = None;
        let item = if wait.is_zero() {
            Err(())
        } else {
            let next = tokio::time::timeout(wait, std::panic::AssertUnwindSafe(watch.next()).catch_unwind());
            tokio::select! {
                item = next => item.map_err(|_| ()),
                a = next_announcement(&mut announced) => {
                    news = Some(a);
                    Err(())
                }
            }
        };
        let Some(hub) = weak.upgrade() else { return };
        if announced.is_none() {
            hub.set_announced(false);
        }
        if let Some(news) = news {
            tracing::debug!(bucket = bucket.name(), ?news, "the server announced a change of the bucket; checking it now");
            if news == Announcement::Deleted {
                // From now on no write of a handle goes out until the bucket is read again: one
                // re-created under the same name could take it at the same revision.
                hub.mark_stale(StaleReason::BucketMissing, Some(format!("bucket `{}` was deleted (announced by the server)", bucket.name())));
            }
            drop(hub);
            last_check = Instant::now();
            (watch, waiting) = checked(&weak, &bucket, &pattern, heartbeat, waiting, watch).await;
            continue;
        }
        match item {
            Ok(Ok(Some(Ok(entry)))) => {
                waiting = match (hub.on_entry(&entry), waiting) {
                    (CatchUp::Settle, Waiting::Batch { until, look }) => Waiting::Batch { until, look },
                    (CatchUp::Settle, _) => Waiting::Batch { until: Instant::now() + BATCH_SETTLE, look: None },
                    (_, Waiting::Suspect(rev)) if entry.revision < rev => Waiting::Suspect(rev),
                    (CatchUp::No, Waiting::Announced { rev, settle }) if entry.revision < rev => Waiting::Announced { rev, settle },
                    (CatchUp::No, Waiting::Announced { settle, .. } | Waiting::Pending(settle)) => Waiting::Pending(settle),
                    (CatchUp::No, _) => Waiting::Pending(PENDING_SETTLE),
                    _ => Waiting::Quiet,
                };
                if matches!(waiting, Waiting::Quiet | Waiting::Pending(_) | Waiting::Announced { .. }) && last_check.elapsed() >= heartbeat * BUSY_CHECK_EVERY {
                    drop(hub);
                    last_check = Instant::now();
                    // As a quiet check (no search for the next entry): nothing newer in the
                    // bucket also completes a burst whose announced entry never comes.
                    (watch, waiting) = checked(&weak, &bucket, &pattern, heartbeat, Waiting::Quiet, watch).await;
                }
            }
            Ok(Ok(Some(Err(e)))) => {
                tracing::debug!(bucket = bucket.name(), error = %e, "watch error; still watching");
                hub.note_error(e.to_string());
                // Errors keep coming while the store cannot make a new consumer (a frozen server,
                // a deleted bucket); each restarts the wait above, so they must not postpone the
                // quiet-time check past a heartbeat.
                if last_check.elapsed() >= heartbeat && !matches!(waiting, Waiting::Batch { .. }) {
                    drop(hub);
                    last_check = Instant::now();
                    (watch, waiting) = checked(&weak, &bucket, &pattern, heartbeat, waiting, watch).await;
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                // The watch ended (it should not) or its stream panicked: start a new one where
                // this one stopped.
                drop(hub);
                tokio::time::sleep(BATCH_SETTLE).await;
                watch = restart(&weak, &*bucket, &pattern, watch).await;
                waiting = Waiting::Quiet;
            }
            Err(()) => {
                if !hub.has_members() && !matches!(waiting, Waiting::Batch { .. }) {
                    // Nobody reads this hub any more (its last handle is being dropped).
                    waiting = Waiting::Quiet;
                    continue;
                }
                drop(hub);
                last_check = Instant::now();
                (watch, waiting) = checked(&weak, &bucket, &pattern, heartbeat, waiting, watch).await;
            }
        }
    }
}

/// The next announcement about the bucket; never, when its server makes none (or stopped).
async fn next_announcement(announced: &mut Option<BoxStream<'static, Announcement>>) -> Announcement {
    if let Some(stream) = announced {
        if let Some(a) = stream.next().await {
            return a;
        }
    }
    *announced = None;
    std::future::pending().await
}

/// Runs a [`check`] and acts on it: a new watch when the old one stalled, a reload when the
/// bucket was replaced.
async fn checked(
    weak: &Weak<Hub>,
    bucket: &Arc<dyn Bucket>,
    pattern: &str,
    heartbeat: Duration,
    waiting: Waiting,
    watch: Watch,
) -> (Watch, Waiting) {
    match check(weak, &**bucket, pattern, heartbeat, waiting).await {
        Check::Fine => (watch, Waiting::Quiet),
        Check::Announced(rev) => {
            let settle = match waiting {
                Waiting::Pending(settle) => (settle * 2).min(heartbeat / 4).max(PENDING_SETTLE),
                _ => PENDING_SETTLE,
            };
            (watch, Waiting::Announced { rev, settle })
        }
        Check::Batch { wait, look } => (watch, Waiting::Batch { until: Instant::now() + wait, look: Some(look) }),
        Check::Suspect(rev) => (watch, Waiting::Suspect(rev)),
        Check::Stalled => (restart(weak, &**bucket, pattern, watch).await, Waiting::Quiet),
        Check::Replaced => match reload(weak, &**bucket).await {
            Some(w) => (w, Waiting::Quiet),
            None => (watch, Waiting::Quiet),
        },
    }
}

/// How many probes in a row must report a last revision below the one applied before the bucket
/// counts as replaced.
const BEHIND_PROBES: u32 = 3;

/// What a quiet-time check found.
enum Check {
    Fine,
    /// The rest of an atomic batch is not stored yet, or stored and on its way: ask again after
    /// `wait`.
    Batch { wait: Duration, look: Look },
    Suspect(u64),
    /// The entry the pending count announced is stored, at this revision: wait for it (see
    /// [`Waiting::Announced`]).
    Announced(u64),
    Stalled,
    Replaced,
}

/// Asks the server whether the hub is current (see the module docs).
async fn check(weak: &Weak<Hub>, bucket: &dyn Bucket, pattern: &str, heartbeat: Duration, waiting: Waiting) -> Check {
    let Some((seen, incarnation, open_batch)) = weak.upgrade().map(|h| {
        let st = h.state();
        (st.seen, st.incarnation, st.open_batch)
    }) else {
        return Check::Fine;
    };
    let batch = open_batch || matches!(waiting, Waiting::Batch { .. });
    if !bucket.is_connected() {
        if let Some(h) = weak.upgrade() {
            h.mark_stale(StaleReason::Disconnected, None);
            expire_overrides_unasked(&h, batch);
        }
        return Check::Fine;
    }
    // Looking for the next matching entry is a wildcard search on the server (milliseconds on a
    // bucket of 50,000 keys, while this loop delivers nothing): only on the second look, when a
    // newer revision seen by the first is still not delivered, when an entry the pending count
    // announced did not come, and inside an atomic batch.
    let look_next = match waiting {
        Waiting::Pending(_) => true,
        Waiting::Suspect(rev) => seen < rev,
        _ => false,
    };
    let after = if batch || look_next { seen } else { u64::MAX };
    let probe = tokio::time::timeout(heartbeat, bucket.probe(pattern, after)).await;
    let Some(hub) = weak.upgrade() else { return Check::Fine };
    match probe {
        Err(_) => {
            let err = StoreError::new(StoreErrorKind::Timeout)
                .bucket(bucket.name())
                .detail(format!("no answer to a liveness probe within {heartbeat:?}"));
            hub.mark_stale(StaleReason::NoResponse, Some(err.to_string()));
            expire_overrides_unasked(&hub, batch);
            Check::Fine
        }
        Ok(Err(e)) if *e.kind() == StoreErrorKind::NotFound => {
            hub.mark_stale(StaleReason::BucketMissing, Some(e.to_string()));
            expire_overrides_unasked(&hub, batch);
            Check::Fine
        }
        Ok(Err(e)) => {
            hub.mark_stale(StaleReason::NoResponse, Some(e.to_string()));
            expire_overrides_unasked(&hub, batch);
            Check::Fine
        }
        Ok(Ok(probe)) => {
            let Probe { incarnation: now, last_revision, next, .. } = probe;
            // A new incarnation is a replaced bucket. A last revision below ours with the same
            // incarnation may be a new cluster leader still catching up: only if it persists.
            let (replaced, missing) = {
                let mut st = hub.state();
                st.behind_probes = if last_revision < seen { st.behind_probes + 1 } else { 0 };
                let behind = st.behind_probes >= BEHIND_PROBES;
                (incarnation.is_some_and(|i| i != now) || behind, st.stale == Some(StaleReason::BucketMissing))
            };
            if replaced || missing {
                return Check::Replaced;
            }
            hub.state().incarnation = Some(now);
            if hub.holds_removed(probe.first_revision, probe.last_revision) {
                tracing::warn!(
                    bucket = bucket.name(),
                    first_revision = probe.first_revision,
                    "the bucket no longer holds some values in effect (removed by its maximum age or a purge of its stream, which the watch is not told of); reading it again"
                );
                return Check::Replaced;
            }
            if batch {
                // Asked again with nothing delivered since: keep when the question began.
                let mut look = match waiting {
                    Waiting::Batch { look: Some(look), .. } if look.seen == seen => look,
                    _ => Look { seen, since: Instant::now(), stored: None },
                };
                let soon = (heartbeat / 4).max(BATCH_SETTLE);
                match batch_rest(&probe, seen) {
                    // The rest lies outside the watched keys: complete below.
                    BatchRest::Done => {}
                    // On its way. Stored and undelivered for a heartbeat is a stalled watch, as
                    // for any entry (below, from a quiet or suspect state); a slow one is not.
                    BatchRest::Stored(rev) if matches!(waiting, Waiting::Batch { .. }) => {
                        let stored = *look.stored.get_or_insert_with(Instant::now);
                        return if stored.elapsed() >= heartbeat { Check::Suspect(rev) } else { Check::Batch { wait: soon, look } };
                    }
                    BatchRest::Stored(_) => {}
                    BatchRest::NotStored => {
                        look.stored = None;
                        let waited = look.since.elapsed();
                        if waited >= heartbeat {
                            hub.mark_stale(
                                StaleReason::BatchIncomplete,
                                Some(format!(
                                    "bucket `{}`: an atomic batch has been partly stored for {waited:?}; the entries delivered so far are held back",
                                    bucket.name()
                                )),
                            );
                        }
                        // A last revision below ours is a server behind (counted above, a
                        // heartbeat apart as in quiet checks); else the batch is being stored.
                        let wait = if last_revision < seen { heartbeat } else { soon };
                        return Check::Batch { wait, look };
                    }
                }
            }
            match next {
                // Something newer exists; it may be in flight, or outside the watched prefix.
                None if after == u64::MAX && last_revision > seen => Check::Suspect(last_revision),
                None => {
                    // Entries past `seen` that the watch will not deliver vanished, unless they are
                    // a batch's rest outside the watched keys.
                    reconcile_overrides(&hub, bucket, last_revision > seen && !batch).await;
                    // Also applies a burst whose remaining entries were removed before delivery,
                    // and views that changed without an entry (an override dropped above).
                    hub.finish_burst(true);
                    hub.heard();
                    Check::Fine
                }
                // The entry the pending count announced is stored: wait for it as for any entry
                // (a heartbeat, then the usual checks), not as for one already found missing.
                Some(rev) if matches!(waiting, Waiting::Pending(_)) => Check::Announced(rev),
                Some(rev) if matches!(waiting, Waiting::Suspect(s) if s <= rev) => {
                    tracing::warn!(bucket = bucket.name(), after = seen, undelivered = rev, "the watch left a newer entry undelivered; re-creating it");
                    hub.mark_stale(StaleReason::WatchStalled, None);
                    Check::Stalled
                }
                Some(rev) => Check::Suspect(rev),
            }
        }
    }
}

/// While the server cannot be asked (unreachable, frozen, or the bucket gone: a wiped store
/// nobody has created again), an override whose known expiry has passed is dropped here, as its
/// expiry marker would have dropped it: the server expires it at that time (a bucket that is gone
/// holds it no more either), so a handle must not go on running on the incident knob, nor list it
/// in [`Status::overrides`](crate::Status) or [`Snapshot::source`](crate::Snapshot::source), past
/// the time it was set for. The key's own last good value is back, and the override key's
/// revision is recorded as none (as for an override the server no longer holds): a `set_for`
/// meeting the expiry marker still stored learns its revision from the conflict and the watch,
/// one meeting nothing is taken as a new key. An override without a known
/// expiry is kept (only the server can tell its end), and nothing is done inside an atomic batch
/// (swapping then would show half of it). If the server still holds a newer override when it
/// answers again, the watch delivers it as usual.
fn expire_overrides_unasked(hub: &Hub, batch: bool) {
    if batch {
        return;
    }
    let due = hub.overrides_due(false);
    if due.is_empty() {
        return;
    }
    for (member, full, key, revision) in due {
        tracing::info!(bucket = %hub.bucket.name(), key = %full, revision, "override past its expiry while the server cannot be asked; dropped");
        member.drop_override(&key, revision, None);
        hub.forget(&full, revision);
    }
    hub.finish_burst(true);
}

/// Overrides past their expiry whose expiry marker never arrived: the server writes the marker
/// with the bucket's marker TTL, so a watch re-created after a failover or a reconnect can miss
/// it for good. Asks the server about each such override (and, when entries vanished unseen,
/// about those without a known expiry) and drops the ones it no longer holds; the next swap
/// brings the keys' own values back.
async fn reconcile_overrides(hub: &Hub, bucket: &dyn Bucket, vanished: bool) {
    for (member, full, key, revision) in hub.overrides_due(vanished) {
        match bucket.entry(&full).await {
            Ok(Some(e)) if e.is_put() && e.revision >= revision => {}
            Ok(latest) => {
                tracing::info!(bucket = bucket.name(), key = %full, "override expired without a marker reaching the watch; dropped");
                member.drop_override(&key, revision, latest.map(|e| e.revision));
                hub.forget(&full, revision);
            }
            Err(_) => return,
        }
    }
}

/// A new watch from the last delivered revision + 1 (the old one is dropped, and with it its
/// consumer), or a [`reload`] when the bucket turns out to be another incarnation. Keeps trying,
/// a heartbeat apart, until the server answers.
async fn restart(weak: &Weak<Hub>, bucket: &dyn Bucket, pattern: &str, old: Watch) -> Watch {
    drop(old);
    loop {
        let Some((from, heartbeat)) = weak.upgrade().map(|h| (h.state().seen + 1, h.heartbeat)) else {
            return Watch::new(0, futures_util::stream::pending());
        };
        match tokio::time::timeout(heartbeat * 2, bucket.watch(pattern, WatchStart::FromRevision(from))).await {
            Ok(Ok(w)) => {
                // The bucket may have been deleted and created again since it was last checked:
                // a watch from `from` in the new one would skip its first entries and lay the
                // rest over the old state. Until the server answers, the new watch is kept
                // (unread) and asked about again: making another one per unanswered question
                // would leave a consumer behind on the server each time.
                loop {
                    match replaced_since(weak, bucket, pattern, heartbeat).await {
                        Some(false) => {
                            // Asked after the watch was made: it is of the hub's incarnation.
                            if let Some(incarnation) = weak.upgrade().and_then(|h| h.state().incarnation) {
                                w.began_in(incarnation);
                            }
                            break;
                        }
                        Some(true) => {
                            drop(w);
                            return match reload(weak, bucket).await {
                                Some(w) => w,
                                // The next check sees the new incarnation and tries again.
                                None => Watch::new(0, futures_util::stream::pending()),
                            };
                        }
                        None => tokio::time::sleep(heartbeat).await,
                    }
                }
                if let Some(h) = weak.upgrade() {
                    h.watch_restarted();
                    tracing::info!(bucket = bucket.name(), from, "watch re-created");
                }
                return w;
            }
            Ok(Err(e)) => {
                if let Some(h) = weak.upgrade() {
                    let reason = stale_reason(&e);
                    h.mark_stale(reason, Some(e.to_string()));
                    if reason == StaleReason::BucketMissing {
                        return Watch::new(0, futures_util::stream::pending());
                    }
                }
            }
            Err(_) => {
                if let Some(h) = weak.upgrade() {
                    h.mark_stale(StaleReason::NoResponse, Some(format!("bucket `{}`: re-creating the watch timed out", bucket.name())));
                }
            }
        }
        tokio::time::sleep(heartbeat).await;
    }
}

/// Whether the bucket is another incarnation than the hub's (deleted and created again): asked
/// after a watch is made and before anything of it is read, so the incarnation seen now is the one
/// the watch was made on, or a later one. `Some(false)` when the hub knows no incarnation; `None`
/// when the server did not answer (the hub is marked stale).
async fn replaced_since(weak: &Weak<Hub>, bucket: &dyn Bucket, pattern: &str, heartbeat: Duration) -> Option<bool> {
    let Some(known) = weak.upgrade().and_then(|h| h.state().incarnation) else { return Some(false) };
    let error = match tokio::time::timeout(heartbeat, bucket.probe(pattern, u64::MAX)).await {
        Ok(Ok(p)) => return Some(p.incarnation != known),
        Ok(Err(e)) => (stale_reason(&e), e.to_string()),
        Err(_) => (StaleReason::NoResponse, format!("bucket `{}`: no answer to a probe after re-creating the watch", bucket.name())),
    };
    if let Some(h) = weak.upgrade() {
        h.mark_stale(error.0, Some(error.1));
    }
    None
}

/// What a failed request to the bucket makes the handles: a missing bucket, or no answer.
fn stale_reason(e: &StoreError) -> StaleReason {
    if *e.kind() == StoreErrorKind::NotFound {
        StaleReason::BucketMissing
    } else {
        StaleReason::NoResponse
    }
}

/// The bucket was replaced: read it again from scratch (its revisions start again at 1) and
/// give every handle its new view. `None` when it cannot be read yet; the next check tries again.
async fn reload(weak: &Weak<Hub>, bucket: &dyn Bucket) -> Option<Watch> {
    // The incarnation read before the bucket: a reload without it would leave the hub unable to
    // tell the next replacement (any incarnation would pass as its own), so none is made. As when
    // the read fails (below), the handles are marked as having lost their bucket: that is what
    // makes the next check that gets an answer reload, even for a hub that knows no incarnation.
    let incarnation = match bucket.probe(">", u64::MAX).await {
        Ok(p) => p.incarnation,
        Err(e) => {
            weak.upgrade()?.mark_stale(StaleReason::BucketMissing, Some(e.to_string()));
            return None;
        }
    };
    let hub = weak.upgrade()?;
    match hub.reload(incarnation).await {
        Ok(watch) => {
            // Read after the probe: of that incarnation, or of a later one the next check reloads.
            watch.began_in(incarnation);
            tracing::warn!(bucket = bucket.name(), "the bucket was read again from scratch (replaced, or entries removed without a marker)");
            Some(watch)
        }
        Err(e) => {
            hub.mark_stale(StaleReason::BucketMissing, Some(e.to_string()));
            None
        }
    }
}
