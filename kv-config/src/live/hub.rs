//! One watch per bucket for every handle on a store. A [`Hub`] owns the watch and the watcher
//! task ([`watcher`](super::watcher): probes, re-created watches, reloads), and hands each entry
//! to the handles ([`Member`]s) whose prefix it falls under. A shared hub watches the whole bucket.
//! Its first handle reads its keys from the hub's first pass, and the hub keeps nothing else: a
//! lone handle (the usual service) costs what a watch of its own would. When a second handle
//! joins, the hub builds its map of the bucket (the latest entry per key) with one more pass of
//! its own, and keeps it: every later handle reads its keys from memory, after one small request
//! that makes sure the hub holds every write made before the start: no second consumer and no
//! scan, whatever its config or prefix. A dedicated hub watches one handle's prefix and keeps no
//! map: a start from the cache file, a store without [`SharedWatches`], or
//! [`Builder::dedicated_watch`](super::Builder::dedicated_watch).
//!
//! Lock order: the hub's state, then a member's. A member never calls into its hub.

use std::collections::{btree_map, BTreeMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use tokio::sync::{watch, OwnedMutexGuard};
use tokio::task::AbortHandle;

use super::StaleReason;
use crate::error::{Error, Result};
use crate::feed::{catch_up, not_reached, pattern_for, scan, CatchUp, Fill, Scan, BATCH_SETTLE};
use crate::store::{Bucket, Entry, Headers, Operation, SharedWatches, StoreError, StoreErrorKind, Watch};
use crate::view::View;

/// A burst that runs this long (another prefix's bulk load on a shared watch, say) is cut at the
/// next entry outside an atomic batch: the members that received entries swap, so a handle's own
/// write is in effect within this bound whatever else the bucket is doing. Each cut is a state of
/// the bucket that existed: entries arrive in revision order.
const LONGEST_BURST: Duration = Duration::from_millis(50);

/// A handle as its hub sees it. Every method is quick and never awaits.
pub(super) trait Member: Send + Sync {
    /// An entry under the member's prefix (no swap yet).
    fn on_entry(&self, entry: &Entry);
    /// The watch caught up at bucket revision `seen`: swap if anything changed.
    fn caught_up(&self, seen: u64);
    /// The server confirmed the watch is current (bucket incarnation `incarnation`).
    fn heard(&self, incarnation: Option<u64>);
    /// Why the snapshot may be behind.
    fn mark_stale(&self, reason: StaleReason, error: Option<String>);
    /// A watch error that did not stop the watch.
    fn note_error(&self, error: String);
    /// The watch was re-created.
    fn watch_restarted(&self);
    /// The bucket was replaced: start a new epoch from `view`.
    fn replace(&self, view: View, incarnation: Option<u64>);
    /// Overrides that may have expired unseen: `(relative key, revision)`.
    fn overrides_due(&self, vanished: bool) -> Vec<(String, u64)>;
    /// The server no longer holds the override of `key` at `revision`.
    fn drop_override(&self, key: &str, revision: u64, latest: Option<u64>);
    /// The lowest revision of a value or override the member's view holds (`None`: none).
    fn oldest(&self) -> Option<u64>;
}

struct Slot {
    prefix: String,
    member: Weak<dyn Member>,
    /// Received an entry since the last caught-up.
    dirty: bool,
}

/// The hub's side, behind one mutex.
pub(super) struct HubState {
    members: Vec<Slot>,
    /// The latest entry of every key (puts and markers; `key` and `bucket` left empty), for a
    /// shared hub once a second handle joined, as of the last complete burst: a handle that joins
    /// never starts with half of an atomic batch.
    map: Option<BTreeMap<String, Kept>>,
    /// The entries of the burst in progress (`bucket` left empty), folded into `map` when it
    /// completes; a handle that joins meanwhile receives those under its prefix.
    pending: Vec<Entry>,
    /// When the burst in progress began.
    burst_since: Option<Instant>,
    /// The last entry delivered belongs to an atomic batch whose commit has not been delivered:
    /// the burst must not complete before the server says the rest will not come.
    pub(super) open_batch: bool,
    /// The highest revision the watch delivered.
    pub(super) seen: u64,
    /// The bucket incarnation, once a probe told.
    pub(super) incarnation: Option<u64>,
    /// Consecutive probes that reported a last revision below `seen`.
    pub(super) behind_probes: u32,
    /// The bucket's first revision at the last check that every value held is still stored
    /// ([`Hub::oldest_held`]); the check is made again only when it moves.
    pub(super) first_checked: u64,
    /// Why the watch may be behind; `None` while the server answers.
    pub(super) stale: Option<StaleReason>,
    /// How many times the bucket was read again from scratch ([`Hub::reload`]).
    reloads: u64,
}

impl HubState {
    fn new(map: Option<BTreeMap<String, Kept>>, seen: u64, incarnation: Option<u64>) -> Self {
        HubState {
            members: Vec::new(),
            map,
            pending: Vec::new(),
            burst_since: None,
            open_batch: false,
            seen,
            incarnation,
            behind_probes: 0,
            first_checked: 0,
            stale: None,
            reloads: 0,
        }
    }
}

pub(super) struct Hub {
    pub(super) bucket: Arc<dyn Bucket>,
    /// What the watch covers: the whole bucket (shared) or one prefix (dedicated).
    pub(super) pattern: String,
    pub(super) heartbeat: Duration,
    pub(super) load_timeout: Duration,
    state: Mutex<HubState>,
    /// `seen` after each caught-up burst, for a handle waiting for its own seeded defaults.
    seen_tx: watch::Sender<u64>,
    /// The highest revision the watch delivered, as each entry arrives, with the incarnation the
    /// hub was in (bumped by a reload): for a writer proving its write went to the watched bucket
    /// ([`Hub::delivered`]).
    delivered_tx: watch::Sender<(u64, u64)>,
    /// Whether the watcher hears the server's announcements about the bucket (a deletion is then
    /// known within milliseconds): see [`Hub::announced`].
    announced: std::sync::atomic::AtomicBool,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// What a shared hub keeps of a key's latest entry: an [`Entry`] without its key, bucket and
/// watch bookkeeping (88 bytes instead of 144 on 64-bit targets). The value bytes are shared
/// with the handles' views.
struct Kept {
    value: Bytes,
    revision: u64,
    created: SystemTime,
    operation: Operation,
    headers: Headers,
}

impl Kept {
    fn of(e: Entry) -> Kept {
        Kept { value: e.value, revision: e.revision, created: e.created, operation: e.operation, headers: e.headers }
    }

    /// The entry again (key and bucket left empty), for a view.
    fn entry(&self) -> Entry {
        Entry {
            bucket: crate::store::unnamed(),
            key: String::new(),
            value: self.value.clone(),
            revision: self.revision,
            delta: 0,
            created: self.created,
            operation: self.operation,
            headers: self.headers.clone(),
            batch_continues: false,
        }
    }
}

/// Records `kept` under `key` in a shared hub's map unless the map holds that revision or a later one.
fn keep_newer(map: &mut BTreeMap<String, Kept>, key: String, kept: Kept) {
    match map.entry(key) {
        btree_map::Entry::Occupied(held) if held.get().revision >= kept.revision => {}
        btree_map::Entry::Occupied(mut held) => {
            held.insert(kept);
        }
        btree_map::Entry::Vacant(slot) => {
            slot.insert(kept);
        }
    }
}

/// Fills a shared hub's map from the initial pass of its watch.
#[derive(Default)]
struct Latest {
    map: BTreeMap<String, Kept>,
    seen: u64,
}

impl Scan for Latest {
    fn expect(&mut self, _: usize) {}
    fn entry(&mut self, mut e: Entry) {
        self.seen = self.seen.max(e.revision);
        let key = std::mem::take(&mut e.key);
        self.map.insert(key, Kept::of(e));
    }
}

/// A view of the keys under `prefix` in `map`, at bucket revision `seen`.
fn view_of(map: &BTreeMap<String, Kept>, prefix: &str, seen: u64) -> View {
    use std::ops::Bound;
    let under = || map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded)).take_while(|(k, _)| k.starts_with(prefix));
    // Sized first: growing the view's map key by key rehashed it about 16 times at 50,000 keys.
    let mut view = View::with_capacity(if prefix.is_empty() { map.len() } else { under().count() });
    for (key, kept) in under() {
        view.apply_with_key(prefix, key.clone(), &kept.entry());
    }
    view.seen = seen;
    view.mark_dirty();
    view
}

/// Takes a shared hub's map away again unless [`Hub::build_map`] completed it (and no reload
/// replaced it meanwhile).
struct Unbuilt<'a> {
    hub: &'a Hub,
    reloads: u64,
    armed: bool,
}

impl Drop for Unbuilt<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.hub.state();
            if st.reloads == self.reloads {
                st.map = None;
                st.pending.clear();
            }
        }
    }
}

/// The registry slot of one (bucket, heartbeat, load timeout) on a store: the hub new handles
/// join, created by the first.
type HubSlot = tokio::sync::Mutex<Weak<Hub>>;

/// A handle's start on a shared hub ([`Hub::shared`]), holding the hub's registry slot until the
/// handle joined: starts on one store and bucket run one at a time.
pub(super) struct Joining {
    slot: OwnedMutexGuard<Weak<Hub>>,
    pub(super) hub: Arc<Hub>,
    /// For a hub this start created: the handle's view, read by the hub's first pass, and the
    /// watch to run once the handle joined.
    first: Option<(View, Watch)>,
}

impl Joining {
    /// Whether this start created the hub (and opened the bucket).
    pub(super) fn created(&self) -> bool {
        self.first.is_some()
    }

    /// Adds the member `make` builds from its view of the keys under `prefix` (see
    /// [`Hub::join`]); a hub this start created then starts watching, and later starts join it.
    pub(super) fn join<M, F>(mut self, prefix: &str, make: F) -> Result<Arc<M>>
    where
        M: Member + 'static,
        F: FnOnce(View) -> Result<Arc<M>>,
    {
        let Some((view, watch)) = self.first.take() else { return self.hub.join(prefix, None, make) };
        let member = self.hub.join(prefix, Some(view), make)?;
        self.hub.spawn(watch);
        *self.slot = Arc::downgrade(&self.hub);
        Ok(member)
    }
}

impl Hub {
    fn new(bucket: Arc<dyn Bucket>, pattern: String, heartbeat: Duration, load_timeout: Duration, state: HubState) -> Arc<Self> {
        let seen = state.seen;
        Arc::new(Hub {
            bucket,
            pattern,
            heartbeat,
            load_timeout,
            state: Mutex::new(state),
            seen_tx: watch::channel(seen).0,
            delivered_tx: watch::channel((0, seen)).0,
            announced: std::sync::atomic::AtomicBool::new(false),
            task: Mutex::new(None),
        })
    }

    /// A start of a handle on the keys under `prefix` on the hub of `bucket` on `watches` that
    /// new handles join, or on a new one: `open` opens the bucket (and says which incarnation it
    /// is, and may start the watch of the whole bucket, `pattern_for("")`, with it), then the
    /// whole bucket is read, the handle's keys into its view, and the hub will watch it once the
    /// handle joined ([`Joining::join`]). A hub that is stale (its server did not answer, or its
    /// bucket vanished) is not joined: the new handle gets a new hub, loaded afresh (the old one
    /// runs on for its handles).
    pub(super) async fn shared<F>(watches: &SharedWatches, name: &str, heartbeat: Duration, load_timeout: Duration, prefix: &str, open: F) -> Result<Joining>
    where
        F: Future<Output = Result<(Arc<dyn Bucket>, Option<u64>, Option<Watch>)>>,
    {
        let slot: Arc<HubSlot> = watches.slot(&format!("{name}\u{0}{heartbeat:?}\u{0}{load_timeout:?}"));
        let current = slot.lock_owned().await;
        if let Some(hub) = current.upgrade() {
            if hub.state().stale.is_none() && hub.bucket.is_connected() {
                let ready = if hub.state().map.is_some() { hub.sync().await } else { hub.build_map().await };
                match ready {
                    Ok(true) => return Ok(Joining { slot: current, hub, first: None }),
                    Ok(false) => {}
                    Err(e) if matches!(&e, Error::Store(s) if *s.kind() == StoreErrorKind::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let (bucket, incarnation, early) = open.await?;
        let pattern = pattern_for("");
        let mut fill = Fill::new(prefix, false);
        let watch = scan(&*bucket, &pattern, early, load_timeout, &mut fill).await?;
        let mut view = fill.finish();
        view.mark_dirty();
        let hub = Hub::new(bucket, pattern, heartbeat, load_timeout, HubState::new(None, view.seen, incarnation));
        Ok(Joining { slot: current, hub, first: Some((view, watch)) })
    }

    /// A hub for one handle, watching `prefix` with `watch` (already read up to `seen`).
    pub(super) fn dedicated(bucket: Arc<dyn Bucket>, prefix: &str, heartbeat: Duration, load_timeout: Duration, seen: u64, incarnation: Option<u64>) -> Arc<Hub> {
        Hub::new(bucket, pattern_for(prefix), heartbeat, load_timeout, HubState::new(None, seen, incarnation))
    }

    /// Builds a shared hub's map of the bucket, for a second handle to join (the first one ran
    /// without it): the bucket read by a pass of its own, merged with what the watch delivered
    /// meanwhile, which the map takes from the start of the pass, all within the load timeout
    /// and a heartbeat. `false` when the hub is behind (it did not deliver what the pass read
    /// within a heartbeat) or its bucket was replaced: the hub must not be joined, and stays
    /// without a map. A reload meanwhile leaves the reload's map, checked as for any join
    /// ([`sync`](Self::sync)).
    async fn build_map(&self) -> Result<bool> {
        let reloads = {
            let mut st = self.state();
            // From here on, every entry delivered is kept (`pending`, folded at each burst's end).
            st.map = Some(BTreeMap::new());
            st.pending.clear();
            st.reloads
        };
        // Undone unless the map is whole: on failure, and when the start is cancelled mid-pass
        // (its caller's timeout), as a later join would read a map that lacks keys.
        let mut undo = Unbuilt { hub: self, reloads, armed: true };
        let built = self.fill_map(reloads).await;
        undo.armed = !matches!(built, Ok(true));
        built
    }

    async fn fill_map(&self, reloads: u64) -> Result<bool> {
        // One deadline for the pass and the requests after it: a start stays bounded.
        let deadline = Instant::now() + self.load_timeout;
        let mut latest = Latest::default();
        let watch = scan(&*self.bucket, &self.pattern, None, self.load_timeout, &mut latest).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        // The pass's consumer goes now (not when the server would expire it), while the server
        // says which incarnation of the bucket it holds.
        let (closed, probe) = tokio::join!(
            tokio::time::timeout(left.min(self.heartbeat), watch.close()),
            tokio::time::timeout(left, self.bucket.probe(&self.pattern, u64::MAX)),
        );
        if closed.is_err() {
            tracing::debug!(bucket = self.bucket.name(), "the server did not confirm the end of a shared map's pass");
        }
        let Ok(probe) = probe else { return Err(not_reached(self.bucket.name(), self.load_timeout)) };
        let probe = probe?;
        // The bucket the pass read may be another incarnation than the one the hub watches.
        if self.state().incarnation.is_some_and(|i| i != probe.incarnation) {
            return Ok(false);
        }
        // Every entry the pass read that is newer than the map's start is then in the map or in
        // the burst in progress, so the newer of the two per key is the bucket as the hub has it.
        if !self.wait_seen_for(latest.seen, self.heartbeat).await {
            return Ok(false);
        }
        let merged = {
            let mut st = self.state();
            let fresh = st.reloads == reloads;
            if fresh {
                let map = st.map.get_or_insert_with(BTreeMap::new);
                for (key, kept) in latest.map {
                    keep_newer(map, key, kept);
                }
            }
            fresh
        };
        if !merged {
            // Read again from scratch meanwhile: the map is the reload's, whole; make sure it
            // holds every write made before this start, as for any join.
            return self.sync().await;
        }
        Ok(true)
    }

    /// Runs the watcher task on `watch`; it ends when the hub is dropped.
    pub(super) fn spawn(self: &Arc<Self>, watch: Watch) {
        let task = tokio::spawn(super::watcher::run(Arc::downgrade(self), watch, self.bucket.clone()));
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
    }

    pub(super) fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the member `make` builds from its view (the hub's keys under `prefix`; `view` when
    /// given, for a dedicated hub). Runs under the hub's lock, so no entry is missed or doubled
    /// between the view and the member's first delivery.
    pub(super) fn join<M, F>(&self, prefix: &str, view: Option<View>, make: F) -> Result<Arc<M>>
    where
        M: Member + 'static,
        F: FnOnce(View) -> Result<Arc<M>>,
    {
        let mut st = self.state();
        // A dedicated hub hands its member the view it loaded; a shared one has a map.
        let view = match (view, &st.map) {
            (Some(view), _) => view,
            (None, map) => view_of(map.as_ref().unwrap_or(&BTreeMap::new()), prefix, st.seen),
        };
        let member = make(view)?;
        // The burst in progress reaches the new member as it reaches the others: applied now,
        // in effect when the burst completes.
        let mut dirty = false;
        for e in st.pending.iter().filter(|e| e.key.starts_with(prefix)) {
            member.on_entry(e);
            dirty = true;
        }
        let dyn_member: Arc<dyn Member> = member.clone();
        st.members.push(Slot { prefix: prefix.to_string(), member: Arc::downgrade(&dyn_member), dirty });
        Ok(member)
    }

    /// Adds a member that already holds its view (a handle that started from its cache): it
    /// swaps at the first caught-up point, so its snapshot stops being the cache's.
    pub(super) fn add(&self, prefix: &str, member: &Arc<dyn Member>) {
        self.state().members.push(Slot { prefix: prefix.to_string(), member: Arc::downgrade(member), dirty: true });
    }

    /// Makes sure the hub holds everything the bucket held when this was called, so a handle that
    /// joins after a write (by anyone) starts with it, as a handle that read the bucket would:
    /// asks the server for the bucket's last revision and waits (up to a heartbeat) until the
    /// watch delivered it. `false` when it did not and the server says an undelivered entry
    /// exists, or the bucket was replaced: the hub is behind, and must not be joined.
    async fn sync(&self) -> Result<bool> {
        let timeout = self.load_timeout;
        let asked = |after: u64| async move {
            match tokio::time::timeout(timeout, self.bucket.probe(&self.pattern, after)).await {
                Ok(result) => result.map_err(Error::from),
                Err(_) => Err(not_reached(self.bucket.name(), timeout)),
            }
        };
        let probe = asked(u64::MAX).await?;
        if self.state().incarnation.is_some_and(|i| i != probe.incarnation) {
            return Ok(false);
        }
        let last = probe.last_revision;
        if self.wait_seen_for(last, BATCH_SETTLE).await {
            return Ok(true);
        }
        // The last revision may be an entry the watch will never deliver (an expired marker, or
        // one removed by a newer write): fine unless a newer entry exists. Else it is in flight.
        let seen = self.state().seen;
        match asked(seen).await?.next {
            None => Ok(true),
            Some(next) => Ok(self.wait_seen_for(next.min(last), self.heartbeat).await),
        }
    }

    /// Waits until the watch delivered `revision`, for at most `wait`.
    async fn wait_seen_for(&self, revision: u64, wait: Duration) -> bool {
        let mut rx = self.seen_tx.subscribe();
        let reached = tokio::time::timeout(wait, async { rx.wait_for(|s| *s >= revision).await.is_ok() }).await;
        matches!(reached, Ok(true))
    }

    /// Whether the server announces the bucket's deletion to this hub's watcher. A writer then
    /// knows of a deletion within the time the announcement takes (milliseconds) and needs no
    /// proof from the watch that its write went to the bucket it watches ([`Hub::delivered`]).
    pub(super) fn announced(&self) -> bool {
        self.announced.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn set_announced(&self, on: bool) {
        self.announced.store(on, std::sync::atomic::Ordering::Release);
    }

    /// Waits until the watch delivered `revision` (or a later one) of the bucket it watches, within
    /// `wait`; `false` on timeout or when the hub read a replaced bucket meanwhile. A watch's
    /// consumer is bound to the stream it was made on, and a stream once deleted never comes back,
    /// so a handle's own write that its watch delivers went to the bucket the handle watches, not
    /// to one created under the same name since (whose revisions start again at 1).
    pub(super) async fn delivered(&self, revision: u64, wait: Duration) -> bool {
        let mut rx = self.delivered_tx.subscribe();
        let reloads = rx.borrow().0;
        let reached = tokio::time::timeout(wait, rx.wait_for(|(r, seen)| *r != reloads || *seen >= revision)).await;
        matches!(reached, Ok(Ok(d)) if d.0 == reloads)
    }

    /// Whether the shared map holds a value (not a delete marker) for the full key `key`.
    pub(super) fn holds(&self, key: &str) -> bool {
        self.state().map.as_ref().is_some_and(|m| m.get(key).is_some_and(|e| e.operation == Operation::Put))
    }

    /// Waits until the watch delivered `revision` (a handle's own seeded defaults), within the
    /// load timeout.
    pub(super) async fn wait_seen(&self, revision: u64) -> Result<()> {
        if self.wait_seen_for(revision, self.load_timeout).await {
            Ok(())
        } else {
            Err(Error::Store(StoreError::new(StoreErrorKind::Timeout).bucket(self.bucket.name()).detail(format!(
                "the shared watch did not deliver revision {revision} within {:?}",
                self.load_timeout
            ))))
        }
    }

    /// The live members (pruning dropped ones).
    fn members(&self) -> Vec<Arc<dyn Member>> {
        let mut st = self.state();
        st.members.retain(|s| s.member.strong_count() > 0);
        st.members.iter().filter_map(|s| s.member.upgrade()).collect()
    }

    /// Whether any handle still uses the hub.
    pub(super) fn has_members(&self) -> bool {
        self.state().members.iter().any(|s| s.member.strong_count() > 0)
    }

    /// Records an entry and hands it to the members it concerns; on a caught-up entry they swap.
    pub(super) fn on_entry(&self, entry: &Entry) -> CatchUp {
        let at = catch_up(entry);
        let (targets, was_stale) = {
            let mut st = self.state();
            st.seen = st.seen.max(entry.revision);
            let seen = st.seen;
            self.delivered_tx.send_if_modified(|d| std::mem::replace(&mut d.1, seen) != seen);
            st.open_batch = entry.batch_continues;
            st.burst_since.get_or_insert_with(Instant::now);
            if st.map.is_some() {
                st.pending.push(entry.clone());
            }
            let mut targets = Vec::new();
            for slot in st.members.iter_mut().filter(|s| entry.key.starts_with(s.prefix.as_str())) {
                if let Some(m) = slot.member.upgrade() {
                    slot.dirty = true;
                    targets.push(m);
                }
            }
            let was_stale = st.stale.is_some_and(|s| s != StaleReason::BucketMissing) && self.bucket.is_connected();
            if was_stale {
                st.stale = None;
            }
            (targets, was_stale)
        };
        if was_stale {
            // Entries flow again: every member hears it, not only those the entry concerns.
            let incarnation = self.state().incarnation;
            for m in self.members() {
                m.heard(incarnation);
            }
        }
        for m in &targets {
            m.on_entry(entry);
        }
        let long = at == CatchUp::No
            && !entry.batch_continues
            && self.state().burst_since.is_some_and(|since| since.elapsed() >= LONGEST_BURST);
        if at == CatchUp::Yes || long {
            self.finish_burst(false);
        }
        at
    }

    /// The burst is complete (or its remaining entries will not come, or it ran for
    /// [`LONGEST_BURST`]): members that received entries swap, and with `all` every member looks
    /// at its view (a quiet-time check: an override dropped there, a view to take over).
    pub(super) fn finish_burst(&self, all: bool) {
        let (targets, seen) = {
            let mut st = self.state();
            st.burst_since = None;
            st.open_batch = false;
            let pending = std::mem::take(&mut st.pending);
            if let Some(map) = &mut st.map {
                for mut e in pending {
                    let key = std::mem::take(&mut e.key);
                    keep_newer(map, key, Kept::of(e));
                }
            }
            st.members.retain(|s| s.member.strong_count() > 0);
            let targets: Vec<_> = st
                .members
                .iter_mut()
                .filter_map(|s| if std::mem::take(&mut s.dirty) || all { s.member.upgrade() } else { None })
                .collect();
            (targets, st.seen)
        };
        for m in targets {
            m.caught_up(seen);
        }
        self.seen_tx.send_replace(seen);
    }

    /// The server confirmed the watch is current.
    pub(super) fn heard(&self) {
        let incarnation = {
            let mut st = self.state();
            if self.bucket.is_connected() {
                st.stale = None;
            }
            st.incarnation
        };
        for m in self.members() {
            m.heard(incarnation);
        }
    }

    /// Records why every member may be behind.
    pub(super) fn mark_stale(&self, reason: StaleReason, error: Option<String>) {
        self.state().stale = Some(reason);
        for m in self.members() {
            m.mark_stale(reason, error.clone());
        }
    }

    pub(super) fn note_error(&self, error: String) {
        for m in self.members() {
            m.note_error(error.clone());
        }
    }

    pub(super) fn watch_restarted(&self) {
        for m in self.members() {
            m.watch_restarted();
        }
    }

    /// Reads the bucket again from scratch (it was replaced) and gives every member its new view.
    /// The watch that read it is returned, still open.
    pub(super) async fn reload(&self, incarnation: u64) -> Result<Watch> {
        let incarnation = Some(incarnation);
        let mut latest = Latest::default();
        let watch = scan(&*self.bucket, &self.pattern, None, self.load_timeout, &mut latest).await?;
        let views: Vec<(Arc<dyn Member>, View)> = {
            let mut st = self.state();
            st.members.retain(|s| s.member.strong_count() > 0);
            st.seen = latest.seen;
            st.pending.clear();
            st.burst_since = None;
            st.open_batch = false;
            st.incarnation = incarnation;
            st.behind_probes = 0;
            st.stale = None;
            st.reloads += 1;
            let views = st
                .members
                .iter_mut()
                .filter_map(|s| {
                    s.dirty = false;
                    s.member.upgrade().map(|m| (m, view_of(&latest.map, &s.prefix, latest.seen)))
                })
                .collect();
            if st.map.is_some() {
                st.map = Some(latest.map);
            }
            views
        };
        for (m, view) in views {
            m.replace(view, incarnation);
        }
        self.seen_tx.send_replace(latest.seen);
        self.delivered_tx.send_modify(|d| *d = (d.0 + 1, latest.seen));
        Ok(watch)
    }

    /// The server no longer holds `key` at `revision` (an override whose expiry marker never
    /// came): later joins must not start with it.
    pub(super) fn forget(&self, key: &str, revision: u64) {
        if let Some(map) = &mut self.state().map {
            if map.get(key).is_some_and(|e| e.revision == revision) {
                map.remove(key);
            }
        }
    }

    /// Overrides of every member that may have expired unseen, with their full keys.
    /// The lowest revision of any value or override this hub or its handles hold (`None`: none).
    /// A bucket whose first stored revision is past it no longer holds that entry: it was removed
    /// by the bucket's maximum age or a purge of the stream, neither of which leaves a marker for
    /// the watch to deliver.
    /// Whether a value or override held here is older than `first`, the bucket's first stored
    /// revision when its last was `last`: the server removed it without a marker (the bucket's
    /// maximum age, a purge of its stream), so the config in effect holds a value the bucket no
    /// longer has. `false` while that cannot be told: the watch has not delivered up to `last` (a
    /// key's newer revision in flight also removes the older one from a bucket of short history,
    /// and is no removal), or a burst is still being folded into the map. Looked at only when
    /// `first` moved since the last look: values delivered since are newer than it was then.
    pub(super) fn holds_removed(&self, first: u64, last: u64) -> bool {
        {
            let mut st = self.state();
            if first <= st.first_checked || last > st.seen || !st.pending.is_empty() || st.open_batch {
                return false;
            }
            st.first_checked = first;
        }
        self.oldest_held().is_some_and(|oldest| oldest < first)
    }

    fn oldest_held(&self) -> Option<u64> {
        let st = self.state();
        let map = st.map.iter().flat_map(|m| m.values()).filter(|k| k.operation == Operation::Put).map(|k| k.revision).min();
        st.members.iter().filter_map(|s| s.member.upgrade()).filter_map(|m| m.oldest()).chain(map).min()
    }

    pub(super) fn overrides_due(&self, vanished: bool) -> Vec<(Arc<dyn Member>, String, String, u64)> {
        let st = self.state();
        let mut due = Vec::new();
        for s in &st.members {
            let Some(m) = s.member.upgrade() else { continue };
            for (key, revision) in m.overrides_due(vanished) {
                let full = format!("{}{}{key}", s.prefix, crate::view::OVERRIDE_PREFIX);
                due.push((m.clone(), full, key, revision));
            }
        }
        due
    }
}
