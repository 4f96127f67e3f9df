//! [`MemoryStore`]: an embedded, in-process store with the semantics of NATS JetStream KV.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    check_batch, invalid_bucket_name, check_headers, is_valid_bucket_name, is_valid_key, key_matches, Bucket, BucketConfig, BucketInfo,
    Entry, Expect, Headers, Operation, Probe, SharedWatches, Store, StoreError, StoreErrorKind, StoreResult, Watch, WatchStart,
    WriteKind, WriteOp,
};

/// An embedded store: buckets live in this process, with the same revisions, compare-and-swap
/// checks, history limits, TTLs, watches and atomic batches as a NATS bucket.
///
/// Cloning shares the buckets. Use it for tests, examples and services that run without a server.
///
/// ```
/// use kv_config::store::{BucketConfig, MemoryStore, Store};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), kv_config::store::StoreError> {
/// let store = MemoryStore::new();
/// let bucket = store.create_bucket(&BucketConfig::new("cfg")).await?;
/// bucket.create("lock", "me".into()).await?;
/// assert!(bucket.create("lock", "you".into()).await.is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    buckets: Arc<Mutex<BTreeMap<String, Arc<MemBucket>>>>,
    shared: SharedWatches,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn buckets(&self) -> MutexGuard<'_, BTreeMap<String, Arc<MemBucket>>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_bucket(&self, config: &BucketConfig) -> StoreResult<Arc<dyn Bucket>> {
        if !is_valid_bucket_name(&config.name) {
            return Err(invalid_bucket_name(&config.name));
        }
        let mut buckets = self.buckets();
        if let Some(existing) = buckets.get(&config.name) {
            return Ok(existing.clone());
        }
        static INCARNATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let incarnation = INCARNATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bucket = Arc::new_cyclic(|me| MemBucket {
            name: config.name.clone(),
            incarnation,
            me: me.clone(),
            state: Mutex::new(State {
                config: config.clone(),
                seq: 0,
                msgs: BTreeMap::new(),
                last: HashMap::new(),
                watchers: Vec::new(),
                deleted: false,
            }),
        });
        buckets.insert(config.name.clone(), bucket.clone());
        Ok(bucket)
    }

    async fn open_bucket(&self, name: &str) -> StoreResult<Arc<dyn Bucket>> {
        if !is_valid_bucket_name(name) {
            return Err(invalid_bucket_name(name));
        }
        match self.buckets().get(name) {
            Some(b) => Ok(b.clone()),
            None => Err(StoreError::new(StoreErrorKind::NotFound).bucket(name)),
        }
    }

    async fn bucket_names(&self) -> StoreResult<Vec<String>> {
        Ok(self.buckets().keys().cloned().collect())
    }

    async fn delete_bucket(&self, name: &str) -> StoreResult<()> {
        match self.buckets().remove(name) {
            Some(b) => {
                let mut st = b.state();
                st.deleted = true;
                st.watchers.clear();
                Ok(())
            }
            None => Err(StoreError::new(StoreErrorKind::NotFound).bucket(name)),
        }
    }

    async fn enable_atomic_writes(&self, name: &str) -> StoreResult<()> {
        match self.buckets().get(name) {
            Some(b) => {
                b.state().config.atomic_writes = true;
                Ok(())
            }
            None => Err(StoreError::new(StoreErrorKind::NotFound).bucket(name)),
        }
    }
    fn shared_watches(&self) -> Option<&SharedWatches> {
        Some(&self.shared)
    }

}

#[derive(Debug)]
struct Msg {
    key: String,
    value: Bytes,
    op: Operation,
    headers: Headers,
    created: SystemTime,
    stored: Instant,
}

struct Watcher {
    pattern: String,
    tx: mpsc::UnboundedSender<StoreResult<Entry>>,
}

struct State {
    config: BucketConfig,
    seq: u64,
    msgs: BTreeMap<u64, Msg>,
    /// key -> last sequence stored for it (markers included).
    last: HashMap<String, u64>,
    watchers: Vec<Watcher>,
    deleted: bool,
}

struct MemBucket {
    name: String,
    incarnation: u64,
    me: Weak<MemBucket>,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBucket").field("name", &self.name).finish_non_exhaustive()
    }
}

impl MemBucket {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live_state(&self) -> StoreResult<MutexGuard<'_, State>> {
        let mut st = self.state();
        if st.deleted {
            return Err(StoreError::new(StoreErrorKind::NotFound).bucket(self.name.clone()));
        }
        st.expire_max_age();
        Ok(st)
    }

    fn err(&self, kind: StoreErrorKind, key: &str) -> StoreError {
        StoreError::new(kind).bucket(self.name.clone()).key(key)
    }

    fn check_op(&self, st: &State, op: &WriteOp) -> StoreResult<()> {
        if !is_valid_key(&op.key) {
            return Err(self.err(StoreErrorKind::InvalidKey, &op.key));
        }
        check_headers(&self.name, op)?;
        if let WriteKind::Put(value) = &op.kind {
            if let Some(max) = st.config.max_value_size {
                if value.len() > max as usize {
                    return Err(self.err(StoreErrorKind::ValueTooLarge, &op.key).detail(format!(
                        "{} bytes, the bucket allows {max}",
                        value.len()
                    )));
                }
            }
        }
        if let Some(ttl) = op.ttl {
            if st.config.key_ttl.is_none() {
                return Err(self.err(StoreErrorKind::KeyTtlDisabled, &op.key));
            }
            if ttl < Duration::from_secs(1) {
                return Err(self.err(StoreErrorKind::InvalidRequest, &op.key).detail("a TTL is at least one second"));
            }
        }
        if let Expect::Revision(expected) = op.expect {
            let current = st.last.get(&op.key).copied().unwrap_or(0);
            if current != expected {
                return Err(self.err(StoreErrorKind::WrongRevision { expected, current: Some(current) }, &op.key));
            }
        }
        Ok(())
    }

    /// Applies checked writes; `deltas` are how many entries of this batch follow each one.
    fn apply(&self, st: &mut State, ops: Vec<WriteOp>) -> u64 {
        let n = ops.len() as u64;
        let mut entries = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            let (value, operation) = match op.kind {
                WriteKind::Put(v) => (v, Operation::Put),
                WriteKind::Delete => (Bytes::new(), Operation::Delete),
                WriteKind::Purge => (Bytes::new(), Operation::Purge),
            };
            let seq = st.store(&op.key, value.clone(), operation, op.headers.clone());
            if let Some(ttl) = op.ttl {
                self.schedule_expiry(op.key.clone(), seq, ttl);
            }
            entries.push(st.entry(&self.name, seq, n - 1 - i as u64));
        }
        st.notify(&entries);
        st.seq
    }

    fn schedule_expiry(&self, key: String, seq: u64, ttl: Duration) {
        let me = self.me.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                tokio::time::sleep(ttl).await;
                if let Some(bucket) = me.upgrade() {
                    let mut st = bucket.state();
                    if st.deleted || st.last.get(&key) != Some(&seq) {
                        return;
                    }
                    // Like a NATS limit marker: the value goes, a purge marker tells watchers.
                    let new = st.store(&key, Bytes::new(), Operation::Purge, Headers::new());
                    let entry = st.entry(&bucket.name, new, 0);
                    st.notify(&[entry]);
                }
            });
        }
    }
}

impl State {
    fn store(&mut self, key: &str, value: Bytes, op: Operation, headers: Headers) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        if op == Operation::Purge {
            // A purge is a roll-up: it replaces every earlier revision of the key.
            self.msgs.retain(|_, m| m.key != key);
        }
        self.msgs.insert(
            seq,
            Msg { key: key.to_string(), value, op, headers, created: SystemTime::now(), stored: Instant::now() },
        );
        self.last.insert(key.to_string(), seq);
        let history = self.config.history.max(1) as usize;
        let revisions: Vec<u64> =
            self.msgs.iter().filter(|(_, m)| m.key == key).map(|(s, _)| *s).collect();
        if revisions.len() > history {
            for s in &revisions[..revisions.len() - history] {
                self.msgs.remove(s);
            }
        }
        seq
    }

    fn expire_max_age(&mut self) {
        let Some(max_age) = self.config.max_age else { return };
        let now = Instant::now();
        let before = self.msgs.len();
        self.msgs.retain(|_, m| now.duration_since(m.stored) < max_age);
        if self.msgs.len() != before {
            let mut last = HashMap::new();
            for (seq, m) in &self.msgs {
                last.insert(m.key.clone(), *seq);
            }
            self.last = last;
        }
    }

    fn entry(&self, bucket: &str, seq: u64, delta: u64) -> Entry {
        let m = &self.msgs[&seq];
        Entry {
            bucket: Arc::from(bucket),
            key: m.key.clone(),
            value: m.value.clone(),
            revision: seq,
            delta,
            created: m.created,
            operation: m.op,
            headers: m.headers.clone(),
            batch_continues: false,
        }
    }

    fn notify(&mut self, entries: &[Entry]) {
        self.watchers.retain(|w| {
            let matching: Vec<&Entry> = entries.iter().filter(|e| key_matches(&w.pattern, &e.key)).collect();
            let n = matching.len() as u64;
            matching
                .into_iter()
                .enumerate()
                .all(|(i, e)| w.tx.send(Ok(Entry { delta: n - 1 - i as u64, ..e.clone() })).is_ok())
        });
    }
}

#[async_trait]
impl Bucket for MemBucket {
    fn name(&self) -> &str {
        &self.name
    }

    async fn info(&self) -> StoreResult<BucketInfo> {
        let st = self.live_state()?;
        Ok(BucketInfo {
            config: st.config.clone(),
            messages: st.msgs.len() as u64,
            bytes: st.msgs.values().map(|m| (m.key.len() + m.value.len()) as u64).sum(),
            last_revision: st.seq,
            created: None,
        })
    }

    async fn entry(&self, key: &str) -> StoreResult<Option<Entry>> {
        if !is_valid_key(key) {
            return Err(self.err(StoreErrorKind::InvalidKey, key));
        }
        let st = self.live_state()?;
        Ok(st.last.get(key).map(|seq| st.entry(&self.name, *seq, 0)))
    }

    async fn entry_at(&self, key: &str, revision: u64) -> StoreResult<Option<Entry>> {
        let st = self.live_state()?;
        Ok(st.msgs.get(&revision).filter(|m| m.key == key).map(|_| st.entry(&self.name, revision, 0)))
    }

    async fn history(&self, key: &str) -> StoreResult<Vec<Entry>> {
        if !is_valid_key(key) {
            return Err(self.err(StoreErrorKind::InvalidKey, key));
        }
        let st = self.live_state()?;
        let seqs: Vec<u64> = st.msgs.iter().filter(|(_, m)| m.key == key).map(|(s, _)| *s).collect();
        let n = seqs.len() as u64;
        Ok(seqs.iter().enumerate().map(|(i, s)| st.entry(&self.name, *s, n - 1 - i as u64)).collect())
    }

    async fn keys(&self) -> StoreResult<Vec<String>> {
        let st = self.live_state()?;
        let mut keys: Vec<String> = st
            .last
            .iter()
            .filter(|(_, seq)| st.msgs.get(seq).is_some_and(|m| m.op == Operation::Put))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn watch(&self, pattern: &str, start: WatchStart) -> StoreResult<Watch> {
        let mut st = self.live_state()?;
        let initial: Vec<u64> = match start {
            WatchStart::New => Vec::new(),
            WatchStart::LatestPerKey => {
                let mut seqs: Vec<u64> = st
                    .last
                    .iter()
                    .filter(|(k, _)| key_matches(pattern, k))
                    .map(|(_, s)| *s)
                    .collect();
                seqs.sort_unstable();
                seqs
            }
            WatchStart::FromRevision(from) => st
                .msgs
                .range(from..)
                .filter(|(_, m)| key_matches(pattern, &m.key))
                .map(|(s, _)| *s)
                .collect(),
        };
        let n = initial.len() as u64;
        let initial: Vec<StoreResult<Entry>> = initial
            .iter()
            .enumerate()
            .map(|(i, s)| Ok(st.entry(&self.name, *s, n - 1 - i as u64)))
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        st.watchers.push(Watcher { pattern: pattern.to_string(), tx });
        let live = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
        Ok(Watch::new(n, futures_util::StreamExt::chain(futures_util::stream::iter(initial), live)))
    }

    fn opened_incarnation(&self) -> Option<u64> {
        Some(self.incarnation)
    }

    async fn probe(&self, pattern: &str, after: u64) -> StoreResult<Probe> {
        let st = self.live_state()?;
        let next = st.msgs.range(after.saturating_add(1)..).find(|(_, m)| key_matches(pattern, &m.key)).map(|(s, _)| *s);
        let first_revision = st.msgs.keys().next().copied().unwrap_or(st.seq + 1);
        Ok(Probe { incarnation: self.incarnation, last_revision: st.seq, first_revision, next })
    }

    async fn write(&self, op: WriteOp) -> StoreResult<u64> {
        let mut st = self.live_state()?;
        self.check_op(&st, &op)?;
        Ok(self.apply(&mut st, vec![op]))
    }

    async fn write_atomic(&self, ops: Vec<WriteOp>) -> StoreResult<u64> {
        check_batch(&self.name, &ops)?;
        let mut st = self.live_state()?;
        if !st.config.atomic_writes {
            return Err(StoreError::new(StoreErrorKind::AtomicWritesDisabled).bucket(self.name.clone()));
        }
        for op in &ops {
            self.check_op(&st, op)?;
        }
        Ok(self.apply(&mut st, ops))
    }
}
