//! [`NatsStore`]: buckets in NATS JetStream Key/Value, through async-nats.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, kv, stream::StorageType};
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::{
    check_batch, invalid_bucket_name, check_headers, user_headers, Headers, is_valid_bucket_name, is_valid_key, Bucket, BucketConfig, BucketInfo, Entry,
    Expect, Operation, Probe, SharedWatches, StorageKind, Store, StoreError, StoreErrorKind, StoreResult, Watch,
    WatchStart, WriteKind, WriteOp,
};

mod ordered;

const KV_OPERATION: &str = "KV-Operation";
const KV_ROLLUP: &str = "Nats-Rollup";

/// Buckets in NATS JetStream Key/Value.
///
/// Connect with your own [`async_nats::Client`], so every auth, TLS and reconnect option of
/// async-nats works unchanged.
///
/// ```no_run
/// use kv_config::store::{BucketConfig, NatsStore, Store};
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let store = NatsStore::new(client);
/// let bucket = store.create_bucket(&BucketConfig::new("cfg").history(5)).await?;
/// bucket.put("log_level", "\"info\"".into()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NatsStore {
    client: async_nats::Client,
    js: jetstream::Context,
    perms: PermissionLog,
    write_deadline: Duration,
    shared: SharedWatches,
}

/// Permission violations the server reported on a connection.
///
/// nats-server reports a denied publish or subscribe asynchronously (`-ERR 'Permissions Violation
/// ...'`) and async-nats hands it to the connection's event callback, not to the request that
/// caused it, which just times out. Give the events to a `PermissionLog` shared with the store
/// ([`NatsStore::connect`] does it for you) and a request that fails after a violation on its
/// connection returns [`StoreErrorKind::PermissionDenied`] with the server's message.
///
/// ```
/// use kv_config::store::PermissionLog;
/// let log = PermissionLog::new();
/// let event = async_nats::Event::ServerError(async_nats::ServerError::Other(
///     "Permissions Violation for Publish to \"$KV.cfg.a\"".into(),
/// ));
/// assert!(log.record(&event));
/// assert!(!log.record(&async_nats::Event::Connected));
/// ```
#[derive(Debug, Clone)]
pub struct PermissionLog {
    /// The most recent violations (at most [`RECENT_VIOLATIONS`]), oldest first.
    recent: Arc<Mutex<std::collections::VecDeque<(Instant, String)>>>,
    /// Bumped on every violation, so a request waiting for its answer can fail at once.
    tick: Arc<tokio::sync::watch::Sender<u64>>,
}

/// How many recent violations a [`PermissionLog`] keeps.
const RECENT_VIOLATIONS: usize = 64;

impl Default for PermissionLog {
    fn default() -> Self {
        PermissionLog { recent: Arc::default(), tick: Arc::new(tokio::sync::watch::Sender::new(0)) }
    }
}

impl PermissionLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `event` if it is a permission violation; returns whether it was one.
    pub fn record(&self, event: &async_nats::Event) -> bool {
        match event {
            async_nats::Event::ServerError(async_nats::ServerError::Other(msg))
                if msg.to_ascii_lowercase().contains("permissions violation") =>
            {
                let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                if recent.len() == RECENT_VIOLATIONS {
                    recent.pop_front();
                }
                recent.push_back((Instant::now(), msg.clone()));
                drop(recent);
                self.tick.send_modify(|n| *n += 1);
                true
            }
            _ => false,
        }
    }

    /// Resolves with the server's message as soon as a violation names one of `subjects` (quoted,
    /// as nats-server writes them); never resolves otherwise. Subscribes at once, so a violation
    /// caused by a publish made after this call is not missed.
    fn watch_for(&self, subjects: Vec<String>) -> impl std::future::Future<Output = (usize, String)> + Send + 'static {
        let mut rx = self.tick.subscribe();
        let recent = self.recent.clone();
        let since = Instant::now();
        async move {
            loop {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let found = {
                    let recent = recent.lock().unwrap_or_else(|p| p.into_inner());
                    // The first subject (in write order) any violation since the call names.
                    subjects.iter().enumerate().find_map(|(i, s)| {
                        let quoted = format!("\"{s}\"");
                        recent.iter().find(|(at, m)| *at >= since && m.contains(&quoted)).map(|(_, m)| (i, m.clone()))
                    })
                };
                if let Some(found) = found {
                    return found;
                }
            }
        }
    }

    /// Whether a violation reported since `since` names `subject` (quoted, as nats-server writes it).
    fn names_since(&self, subject: &str, since: Instant) -> bool {
        let quoted = format!("\"{subject}\"");
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(at, m)| *at >= since && m.contains(&quoted))
    }

    /// Turns a timeout-like error into `PermissionDenied` if a violation was reported since `started`.
    fn refine(&self, err: StoreError, started: Instant) -> StoreError {
        if !matches!(err.kind(), StoreErrorKind::Timeout | StoreErrorKind::JetStreamNotEnabled | StoreErrorKind::Other) {
            return err;
        }
        // Only a violation about this request's bucket (its stream or its keys) is blamed on it.
        let about = |m: &str| match err.bucket_name() {
            Some(b) => m.contains(&format!("KV_{b}")) || m.contains(&format!("$KV.{b}.")),
            None => true,
        };
        let last = self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().find(|(_, m)| about(m)).cloned();
        match last {
            Some((at, msg)) if at >= started => {
                let mut out = StoreError::new(StoreErrorKind::PermissionDenied).detail(msg);
                if let Some(b) = err.bucket_name() {
                    out = out.bucket(b);
                }
                if let Some(k) = err.key_name() {
                    out = out.key(k);
                }
                out
            }
            _ => err,
        }
    }
}

/// A bucket's incarnation: its stream's creation time, in nanoseconds since the Unix epoch.
fn incarnation_of(info: &jetstream::stream::Info) -> u64 {
    info.created.unix_timestamp_nanos().max(0) as u64
}

impl NatsStore {
    /// After creating bucket `name`: nats-server 2.15 can bring back the messages of a stream of
    /// that name deleted a moment before (its store was still on disk; seen about once in 8
    /// delete-then-create cycles). A bucket just created holds nothing written before its
    /// creation, so such messages are purged. If newer writes are already mixed in (another
    /// client wrote within the same instant) nothing is purged and a warning is logged.
    async fn drop_resurrected(&self, name: &str) -> StoreResult<()> {
        let failed = |e: &(dyn std::error::Error + 'static)| classify(e).bucket(name);
        let stream = self.js.get_stream(format!("KV_{name}")).await.map_err(|e| failed(&e))?;
        let info = stream.cached_info();
        if info.state.messages == 0 {
            return Ok(());
        }
        let created = info.created;
        // A message that cannot be read (removed meanwhile) proves nothing either way.
        let written_before = |seq: u64| {
            let stream = &stream;
            async move { stream.get_raw_message(seq).await.is_ok_and(|m| m.time < created) }
        };
        if written_before(info.state.last_sequence).await {
            tracing::warn!(bucket = name, messages = info.state.messages, "the new bucket came back with the deleted one's entries; purged");
            stream.purge().await.map_err(|e| failed(&e))?;
        } else if written_before(info.state.first_sequence).await {
            tracing::warn!(bucket = name, "the new bucket holds entries of a deleted bucket of the same name, mixed with new writes; left as they are");
        }
        Ok(())
    }

    /// A store on this connection (JetStream's default domain and API prefix).
    pub fn new(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        NatsStore { client, js, perms: PermissionLog::default(), write_deadline: WRITE_DEADLINE, shared: SharedWatches::default() }
    }

    /// A store on an existing JetStream context (e.g. one with a domain or other timeouts).
    pub fn with_context(client: async_nats::Client, js: jetstream::Context) -> Self {
        NatsStore { client, js, perms: PermissionLog::default(), write_deadline: WRITE_DEADLINE, shared: SharedWatches::default() }
    }

    /// Connects with `options` and reports the server's permission violations as
    /// [`StoreErrorKind::PermissionDenied`] (this sets the options' event callback, which logs
    /// every other connection event through `tracing`).
    ///
    /// To be able to start while the server is down (see
    /// [`Builder::cache_file`](crate::Builder::cache_file)), pass
    /// `options.retry_on_initial_connect()`: `connect` then returns at once and the client keeps
    /// connecting in the background; without it `connect` fails while the server is unreachable.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), kv_config::store::StoreError> {
    /// let options = async_nats::ConnectOptions::with_user_and_password("app".into(), "secret".into());
    /// let store = kv_config::store::NatsStore::connect("nats://127.0.0.1:4222", options).await?;
    /// # drop(store);
    /// # Ok(()) }
    /// ```
    pub async fn connect(addrs: impl async_nats::ToServerAddrs, options: async_nats::ConnectOptions) -> StoreResult<Self> {
        let perms = PermissionLog::new();
        let log = perms.clone();
        let client = options
            .event_callback(move |event| {
                let log = log.clone();
                async move {
                    if log.record(&event) {
                        tracing::warn!(%event, "nats-server reported a permission violation");
                    } else {
                        tracing::info!(%event, "nats connection event");
                    }
                }
            })
            .connect(addrs)
            .await
            .map_err(|e| classify(&e))?;
        Ok(NatsStore::new(client).with_permission_log(perms))
    }

    /// How long a write (a lone one or an atomic batch) keeps resending (deduplicated) or looking
    /// up its outcome while the server does not answer, before it reports
    /// [`StoreErrorKind::OutcomeUnknown`] (default 10 s). A batch's error names its first key the
    /// caller wrote (not kv-config's guard key) and lists every key of the batch.
    pub fn with_write_deadline(mut self, deadline: Duration) -> Self {
        self.write_deadline = deadline;
        self
    }

    /// The log of permission violations this store consults.
    pub fn permission_log(&self) -> &PermissionLog {
        &self.perms
    }

    /// Uses `log` (fed from your own event callback) to recognise permission violations.
    pub fn with_permission_log(mut self, log: PermissionLog) -> Self {
        self.perms = log;
        self
    }

    /// The connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn wrap(&self, kv: kv::Store) -> Arc<dyn Bucket> {
        let subject_prefix = kv.put_prefix.clone().unwrap_or_else(|| kv.prefix.clone());
        Arc::new(NatsBucket {
            name: kv.name.clone(),
            subject_prefix,
            client: self.client.clone(),
            js: self.js.clone(),
            perms: self.perms.clone(),
            write_deadline: self.write_deadline,
            kv,
        })
    }
}

#[async_trait]
impl Store for NatsStore {
    async fn create_bucket(&self, config: &BucketConfig) -> StoreResult<Arc<dyn Bucket>> {
        let started = Instant::now();
        let result: StoreResult<Arc<dyn Bucket>> = async {
            if !is_valid_bucket_name(&config.name) {
                return Err(invalid_bucket_name(&config.name));
            }
            match self.open_bucket(&config.name).await {
                Ok(bucket) => return Ok(bucket),
                Err(e) if *e.kind() == StoreErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let kv_config = kv::Config {
                bucket: config.name.clone(),
                description: config.description.clone(),
                history: i64::from(config.history.clamp(1, 64)),
                max_age: config.max_age.unwrap_or_default(),
                max_value_size: config.max_value_size.map_or(-1, |m| m.min(i32::MAX as u32) as i32),
                storage: match config.storage {
                    StorageKind::File => StorageType::File,
                    StorageKind::Memory => StorageType::Memory,
                },
                num_replicas: config.replicas.max(1),
                limit_markers: config.key_ttl,
                ..Default::default()
            };
            let mut pause = Duration::from_millis(20);
            let created = loop {
                let created = self.js.create_key_value(kv_config.clone()).await;
                match &created {
                    // A stream of this name deleted a moment ago: the server may still be removing
                    // its store ("error creating store for stream", 10049; seen about once in 10
                    // delete-then-create runs). Try again shortly.
                    Err(e) if e.to_string().contains("10049") && started.elapsed() + pause < RECREATE_WAIT => {
                        tracing::debug!(bucket = %config.name, error = %e, "bucket store not ready; creating again");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    _ => break created,
                }
            };
            match created {
                Ok(_) => self.drop_resurrected(&config.name).await?,
                // Someone else created it at the same moment: use theirs.
                Err(e) if e.to_string().contains("already in use") => return self.open_bucket(&config.name).await,
                Err(e) => return Err(classify(&e).bucket(config.name.clone())),
            }
            if config.atomic_writes {
                self.enable_atomic_writes(&config.name).await?;
            }
            self.open_bucket(&config.name).await
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn open_bucket(&self, name: &str) -> StoreResult<Arc<dyn Bucket>> {
        let started = Instant::now();
        let result: StoreResult<Arc<dyn Bucket>> = async {
            if !is_valid_bucket_name(name) {
                return Err(invalid_bucket_name(name));
            }
            match self.js.get_key_value(name).await {
                Ok(kv) => Ok(self.wrap(kv)),
                Err(e) => Err(classify(&e).bucket(name)),
            }
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    /// Sends the open (`STREAM.INFO`) and the watch's consumer create at once. The watch assumes
    /// the usual subjects of a bucket (`$KV.<name>.`); a bucket whose open says otherwise (a
    /// mirror of another domain's bucket) is watched again the usual way. So is a watch whose
    /// consumer is older than the stream the open describes: the server may answer the two
    /// requests in either order, and a bucket deleted and created again between them would
    /// otherwise be read from the old incarnation under the new one's name. A consumer is created
    /// after its stream, so this costs a second watch only in that case (or after the server's
    /// clock stepped back). An early watch that fails on the usual subjects fails the call, with
    /// its own error, as the watch after an open would.
    async fn open_and_watch(&self, name: &str, pattern: &str, start: WatchStart) -> StoreResult<(Arc<dyn Bucket>, Watch)> {
        let started = Instant::now();
        let result: StoreResult<(Arc<dyn Bucket>, Watch)> = async {
            if !is_valid_bucket_name(name) {
                return Err(invalid_bucket_name(name));
            }
            let prefix = format!("$KV.{name}.");
            let stream = format!("KV_{name}");
            let (kv, watch) = tokio::join!(self.js.get_key_value(name), ordered_watch(&self.client, &self.js, &stream, name, &prefix, pattern, start));
            let kv = kv.map_err(|e| classify(&e).bucket(name))?;
            let usual = kv.prefix == prefix;
            let incarnation = incarnation_of(kv.stream.cached_info());
            let bucket = self.wrap(kv);
            match watch {
                Ok((watch, consumer_created)) if usual && consumer_created >= incarnation => {
                    watch.began_in(incarnation);
                    Ok((bucket, watch))
                }
                Err(e) if usual => Err(e),
                // Dropped, the early watch's consumer goes with its subscription.
                _ => {
                    let watch = bucket.watch(pattern, start).await?;
                    Ok((bucket, watch))
                }
            }
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn bucket_names(&self) -> StoreResult<Vec<String>> {
        let started = Instant::now();
        let result: StoreResult<Vec<String>> = async {
            let names: Vec<String> = self
                .js
                .stream_names()
                .try_collect()
                .await
                .map_err(|e| classify(&e))?;
            let mut names: Vec<String> =
                names.into_iter().filter_map(|n| n.strip_prefix("KV_").map(str::to_string)).collect();
            names.sort();
            Ok(names)
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn delete_bucket(&self, name: &str) -> StoreResult<()> {
        let started = Instant::now();
        let result: StoreResult<()> = async {
            self.js.delete_key_value(name).await.map(|_| ()).map_err(|e| classify(&e).bucket(name))
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn enable_atomic_writes(&self, name: &str) -> StoreResult<()> {
        let started = Instant::now();
        let result: StoreResult<()> = async {
            let mut stream = self
                .js
                .get_stream(format!("KV_{name}"))
                .await
                .map_err(|e| classify(&e).bucket(name))?;
            let mut config = stream.info().await.map_err(|e| classify(&e).bucket(name))?.config.clone();
            if config.allow_atomic_publish {
                return Ok(());
            }
            config.allow_atomic_publish = true;
            self.js.update_stream(config).await.map(|_| ()).map_err(|e| classify(&e).bucket(name))
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }
    fn shared_watches(&self) -> Option<&SharedWatches> {
        Some(&self.shared)
    }

}

struct NatsBucket {
    name: String,
    subject_prefix: String,
    client: async_nats::Client,
    js: jetstream::Context,
    perms: PermissionLog,
    write_deadline: Duration,
    kv: kv::Store,
}

impl std::fmt::Debug for NatsBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBucket").field("name", &self.name).finish_non_exhaustive()
    }
}

impl NatsBucket {
    fn err(&self, e: &(dyn std::error::Error + 'static), key: &str) -> StoreError {
        classify(e).bucket(self.name.clone()).key(key)
    }

    fn check_key(&self, key: &str) -> StoreResult<()> {
        if is_valid_key(key) {
            Ok(())
        } else {
            Err(StoreError::new(StoreErrorKind::InvalidKey).bucket(self.name.clone()).key(key))
        }
    }

    fn headers(&self, op: &WriteOp) -> StoreResult<HeaderMap> {
        self.check_key(&op.key)?;
        check_headers(&self.name, op)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &op.headers {
            headers.append(name.as_str(), value.as_str());
        }
        match op.kind {
            WriteKind::Put(_) => {}
            WriteKind::Delete => headers.insert(KV_OPERATION, "DEL"),
            WriteKind::Purge => {
                headers.insert(KV_OPERATION, "PURGE");
                headers.insert(KV_ROLLUP, "sub");
            }
        }
        if let Expect::Revision(rev) = op.expect {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, rev.to_string().as_str());
        }
        if let Some(ttl) = op.ttl {
            if ttl < Duration::from_secs(1) {
                return Err(StoreError::new(StoreErrorKind::InvalidRequest)
                    .bucket(self.name.clone())
                    .key(op.key.clone())
                    .detail("a TTL is at least one second"));
            }
            headers.insert(async_nats::header::NATS_MESSAGE_TTL, ttl.as_secs().to_string().as_str());
        }
        Ok(headers)
    }

    fn payload(op: &WriteOp) -> Bytes {
        match &op.kind {
            WriteKind::Put(v) => v.clone(),
            _ => Bytes::new(),
        }
    }

    fn write_error(&self, e: &(dyn std::error::Error + 'static), op: &WriteOp) -> StoreError {
        let err = self.err(e, &op.key);
        match (err.kind(), op.expect) {
            (StoreErrorKind::WrongRevision { current, .. }, Expect::Revision(expected)) => {
                let current = *current;
                StoreError::new(StoreErrorKind::WrongRevision { expected, current })
                    .bucket(self.name.clone())
                    .key(op.key.clone())
            }
            _ => err,
        }
    }

    /// An entry from a raw stream message (headers included).
    fn raw_entry(&self, msg: jetstream::message::StreamMessage) -> Entry {
        let key = msg.subject.strip_prefix(self.kv.prefix.as_str()).unwrap_or(msg.subject.as_str()).to_string();
        Entry {
            bucket: Arc::from(self.name.as_str()),
            key,
            operation: operation_of(Some(&msg.headers)),
            headers: headers_of(Some(&msg.headers)),
            batch_continues: false,
            value: msg.payload,
            revision: msg.sequence,
            delta: 0,
            created: SystemTime::from(msg.time),
        }
    }
}

/// How long [`NatsStore::create_bucket`] retries a creation the server refuses because the store
/// of a just-deleted stream of that name is still being removed.
const RECREATE_WAIT: Duration = Duration::from_secs(3);

/// How long reading a key's history may take.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(10);

/// The user headers of a message (not NATS's own), sorted by name.
fn headers_of(headers: Option<&HeaderMap>) -> Headers {
    let Some(headers) = headers else { return Headers::new() };
    let mut out = user_headers(
        headers.iter().flat_map(|(name, values)| values.iter().map(move |v| (name.as_ref(), v.as_str()))),
    );
    out.sort();
    out
}

fn operation_of(headers: Option<&HeaderMap>) -> Operation {
    let Some(headers) = headers else { return Operation::Put };
    if let Some(op) = headers.get(KV_OPERATION) {
        return match op.as_str() {
            "DEL" => Operation::Delete,
            "PURGE" => Operation::Purge,
            _ => Operation::Put,
        };
    }
    match headers.get(async_nats::header::NATS_MARKER_REASON).map(|v| v.as_str()) {
        Some("MaxAge") | Some("Purge") => Operation::Purge,
        Some("Remove") => Operation::Delete,
        _ => Operation::Put,
    }
}

#[async_trait]
impl Bucket for NatsBucket {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn info(&self) -> StoreResult<BucketInfo> {
        let started = Instant::now();
        let result: StoreResult<BucketInfo> = async {
            let mut stream = self.kv.stream.clone();
            let info = stream.info().await.map_err(|e| classify(&e).bucket(self.name.clone()))?;
            let c = &info.config;
            Ok(BucketInfo {
                config: BucketConfig {
                    name: self.name.clone(),
                    description: c.description.clone().unwrap_or_default(),
                    history: c.max_messages_per_subject.clamp(1, 64) as u8,
                    max_age: (!c.max_age.is_zero()).then_some(c.max_age),
                    max_value_size: (c.max_message_size > 0).then_some(c.max_message_size as u32),
                    replicas: c.num_replicas,
                    storage: match c.storage {
                        StorageType::Memory => StorageKind::Memory,
                        StorageType::File => StorageKind::File,
                    },
                    key_ttl: if c.allow_message_ttl { c.subject_delete_marker_ttl } else { None },
                    atomic_writes: c.allow_atomic_publish,
                },
                messages: info.state.messages,
                bytes: info.state.bytes,
                last_revision: info.state.last_sequence,
                created: SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(incarnation_of(info))),
            })
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn entry(&self, key: &str) -> StoreResult<Option<Entry>> {
        let started = Instant::now();
        let result: StoreResult<Option<Entry>> = async {
            self.check_key(key)?;
            let subject = format!("{}{}", self.kv.prefix, key);
            match self.kv.stream.direct_get_last_for_subject(subject).await {
                Ok(msg) => Ok(Some(self.raw_entry(msg))),
                Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.err(&e, key)),
            }
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn entry_at(&self, key: &str, revision: u64) -> StoreResult<Option<Entry>> {
        let started = Instant::now();
        let result: StoreResult<Option<Entry>> = async {
            self.check_key(key)?;
            let subject = format!("{}{}", self.kv.prefix, key);
            // Not kv::Store::entry_for_revision: it prints to stdout when the revision is another key's.
            match self.kv.stream.get_raw_message(revision).await {
                Ok(msg) if msg.subject.as_str() == subject => Ok(Some(self.raw_entry(msg))),
                Ok(_) => Ok(None),
                Err(e) if e.to_string().contains("no message found") => Ok(None),
                Err(e) => Err(self.err(&e, key)),
            }
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn history(&self, key: &str) -> StoreResult<Vec<Entry>> {
        let started = Instant::now();
        let result: StoreResult<Vec<Entry>> = async {
            self.check_key(key)?;
            // Our own watch (not kv::Store::history) so entries keep their headers.
            let mut watch = self.watch(key, WatchStart::FromRevision(1)).await?;
            let mut out = Vec::with_capacity(watch.initial_pending() as usize);
            if watch.initial_pending() > 0 {
                while let Some(item) = tokio::time::timeout(HISTORY_TIMEOUT, watch.next())
                    .await
                    .map_err(|_| StoreError::new(StoreErrorKind::Timeout).bucket(self.name.clone()).key(key))?
                {
                    let entry = item?;
                    let done = entry.delta == 0;
                    out.push(entry);
                    if done {
                        break;
                    }
                }
            }
            Ok(out)
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn keys(&self) -> StoreResult<Vec<String>> {
        let started = Instant::now();
        let result: StoreResult<Vec<String>> = async {
            let keys = self.kv.keys().await.map_err(|e| classify(&e).bucket(self.name.clone()))?;
            let mut keys: Vec<String> = keys.try_collect().await.map_err(|e| classify(&e).bucket(self.name.clone()))?;
            keys.sort();
            keys.dedup();
            Ok(keys)
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn watch(&self, pattern: &str, start: WatchStart) -> StoreResult<Watch> {
        let started = Instant::now();
        let result = ordered_watch(&self.client, &self.js, &self.kv.stream_name, &self.name, &self.kv.prefix, pattern, start).await;
        result.map(|(watch, _)| watch).map_err(|e| self.perms.refine(e, started))
    }

    fn opened_incarnation(&self) -> Option<u64> {
        Some(incarnation_of(self.kv.stream.cached_info()))
    }

    async fn announcements(&self) -> Option<futures_util::stream::BoxStream<'static, crate::store::Announcement>> {
        use futures_util::StreamExt;
        let subject = format!("$JS.EVENT.ADVISORY.STREAM.*.KV_{}", self.name);
        let since = Instant::now();
        match self.client.subscribe(subject.clone()).await {
            // A subscription the server refuses is refused asynchronously: a round trip later
            // (the flush) the store's permission log has it, if the store keeps one.
            Ok(_) if matches!(tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await, Ok(Ok(()))) && self.perms.names_since(&subject, since) => {
                tracing::debug!(bucket = %self.name, "not allowed to read the stream's advisories; probes alone tell of a replaced bucket");
                None
            }
            Ok(sub) => Some(
                sub.map(|m| match m.subject.split('.').nth(4) {
                    Some("DELETED") => crate::store::Announcement::Deleted,
                    _ => crate::store::Announcement::Changed,
                })
                .boxed(),
            ),
            Err(e) => {
                tracing::debug!(bucket = %self.name, error = %e, "no subscription to the stream's advisories; probes alone tell of a replaced bucket");
                None
            }
        }
    }

    async fn probe(&self, pattern: &str, after: u64) -> StoreResult<Probe> {
        let started = Instant::now();
        let result: StoreResult<Probe> = async {
            let info = self.kv.stream.get_info().await.map_err(|e| classify(&e).bucket(self.name.clone()))?;
            let incarnation = incarnation_of(&info);
            let last_revision = info.state.last_sequence;
            let first_revision = if info.state.messages == 0 { last_revision + 1 } else { info.state.first_sequence };
            let next = if last_revision > after {
                let subject = format!("{}{}", self.kv.prefix, pattern);
                match self.kv.stream.direct_get_next_for_subject(subject, Some(after + 1)).await {
                    Ok(msg) => Some(msg.sequence),
                    Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => None,
                    Err(e) => return Err(self.err(&e, pattern)),
                }
            } else {
                None
            };
            Ok(Probe { incarnation, last_revision, first_revision, next })
        }
        .await;
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn write(&self, op: WriteOp) -> StoreResult<u64> {
        let started = Instant::now();
        let mut headers = self.headers(&op)?;
        // A unique message id makes a resend after an unanswered publish safe: the server
        // deduplicates it and answers with the revision of the first copy.
        let msg_id = unique_id(&self.client);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        let subject = format!("{}{}", self.subject_prefix, op.key);
        let denied = self.perms.watch_for(vec![subject.clone()]);
        let deadline = started + self.write_deadline;
        let attempts = async {
            let mut pause = Duration::from_millis(50);
            loop {
                let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
                    self.js.publish_with_headers(subject.clone(), headers.clone(), Self::payload(&op)).await?.await
                })
                .await;
                let err = match attempt {
                    Ok(Ok(ack)) => return Ok(ack.sequence),
                    Ok(Err(e)) => self.write_error(&e, &op),
                    Err(_) => StoreError::new(StoreErrorKind::Timeout).bucket(self.name.clone()).key(op.key.clone()),
                };
                if !self.may_resend(&err).await || Instant::now() + pause >= deadline {
                    return Err(self.unresolved(err, &op.key));
                }
                tracing::debug!(bucket = %self.name, key = %op.key, error = %err, "write unanswered; resending (deduplicated by message id)");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        };
        let result = tokio::select! {
            r = attempts => r,
            (_, msg) = denied => Err(StoreError::new(StoreErrorKind::PermissionDenied).bucket(self.name.clone()).key(op.key.clone()).detail(msg)),
        };
        result.map_err(|e| self.perms.refine(e, started))
    }

    async fn write_atomic(&self, ops: Vec<WriteOp>) -> StoreResult<u64> {
        let started = Instant::now();
        check_batch(&self.name, &ops)?;
        let subjects: Vec<String> = ops.iter().map(|op| format!("{}{}", self.subject_prefix, op.key)).collect();
        let denied = self.perms.watch_for(subjects.clone());
        let batch_id = unique_id(&self.client);
        let send = async {
            let last = ops.len() - 1;
            // Intermediate messages go out as core publishes (the server stages them), the last one
            // carries the commit and is acknowledged for the whole batch.
            for (i, op) in ops.iter().enumerate() {
                let mut headers = self.headers(op)?;
                headers.insert(async_nats::header::NATS_BATCH_ID, batch_id.as_str());
                headers.insert(async_nats::header::NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
                if i < last {
                    self.client
                        .publish_with_headers(subjects[i].clone(), headers, Self::payload(op))
                        .await
                        .map_err(|e| self.err(&e, &op.key))?;
                    continue;
                }
                headers.insert(async_nats::header::NATS_BATCH_COMMIT, async_nats::header::NATS_BATCH_COMMIT_FINAL);
                // Within the write deadline, like the resends of a lone write.
                let wait = (ATTEMPT_TIMEOUT * 2).min((started + self.write_deadline).saturating_duration_since(Instant::now()));
                let ack = tokio::time::timeout(wait, async {
                    self.js.publish_with_headers(subjects[i].clone(), headers, Self::payload(op)).await?.await
                })
                .await;
                return match ack {
                    Ok(Ok(ack)) => Ok(ack.sequence),
                    Ok(Err(e)) => {
                        let err = classify(&e).bucket(self.name.clone());
                        if self.may_resend(&err).await {
                            self.resolve_batch(&batch_id, op, err, started + self.write_deadline).await
                        } else if *err.kind() == StoreErrorKind::JetStreamNotEnabled {
                            Err(self.unresolved(err, &op.key))
                        } else {
                            Err(self.batch_error(err, &ops).await)
                        }
                    }
                    Err(_) => {
                        let err = StoreError::new(StoreErrorKind::Timeout).bucket(self.name.clone()).key(op.key.clone());
                        self.resolve_batch(&batch_id, op, err, started + self.write_deadline).await
                    }
                };
            }
            unreachable!("check_batch guarantees at least one operation")
        };
        let result = tokio::select! {
            r = send => r,
            (i, msg) = denied => Err(StoreError::new(StoreErrorKind::PermissionDenied).bucket(self.name.clone()).key(ops[i].key.clone()).detail(msg)),
        };
        result.map_err(|e| named_batch(self.perms.refine(e, started), &ops))
    }
}

/// An unanswered batch's error names its commit, the last message: for a typed write that is
/// kv-config's guard key, which the caller never wrote. Name the batch's first key the caller
/// wrote instead, and list every key of the batch in the detail.
fn named_batch(err: StoreError, ops: &[WriteOp]) -> StoreError {
    let (Some(last), true) = (ops.last(), ops.len() > 1) else { return err };
    if err.key_name() != Some(last.key.as_str()) || !matches!(err.kind(), StoreErrorKind::OutcomeUnknown | StoreErrorKind::Timeout) {
        return err;
    }
    let own = |k: &&&str| !k.split('.').any(|t| t == crate::view::RESERVED_PREFIX.trim_end_matches('.'));
    let keys: Vec<&str> = ops.iter().map(|op| op.key.as_str()).collect();
    let first = keys.iter().find(own).unwrap_or(&keys[0]).to_string();
    let listed = crate::redact::bound(&keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "), 600);
    let detail = match err.detail_text() {
        Some(d) => format!("{d}; the atomic batch writes {listed}"),
        None => format!("the atomic batch writes {listed}"),
    };
    err.key(first).detail(detail)
}

/// How long one publish waits for its acknowledgement before it is resent.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default of [`NatsStore::with_write_deadline`].
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// A unique token (the random part of a fresh inbox name).
fn unique_id(client: &async_nats::Client) -> String {
    client.new_inbox().rsplit('.').next().unwrap_or("kvc").to_string()
}

impl NatsBucket {
    /// Whether an unanswered or failed write may be resent: only when it was not refused for good.
    /// "No responders" is a missing stream (the bucket was deleted), or a stream without a leader
    /// for a moment (a cluster electing one): one stream lookup tells which.
    async fn may_resend(&self, err: &StoreError) -> bool {
        match err.kind() {
            StoreErrorKind::Timeout | StoreErrorKind::Connection => true,
            StoreErrorKind::JetStreamNotEnabled => match self.kv.stream.get_info().await {
                Ok(_) => true,
                Err(e) => classify(&e).is_transient(),
            },
            _ => false,
        }
    }

    /// The error to report once resending stops: a definite one when the server answered, else
    /// `OutcomeUnknown`.
    fn unresolved(&self, err: StoreError, key: &str) -> StoreError {
        if err.is_transient() {
            StoreError::new(StoreErrorKind::OutcomeUnknown).bucket(self.name.clone()).key(key).detail(
                "the server did not answer within the write deadline; the write may still be applied (a blind retry is safe only for idempotent writes)",
            )
        } else if *err.kind() == StoreErrorKind::JetStreamNotEnabled {
            StoreError::new(StoreErrorKind::NotFound).bucket(self.name.clone()).key(key)
        } else {
            err
        }
    }

    /// Learns whether a batch whose commit went unanswered was applied: the first message on the
    /// commit key after the revision the batch expected is either this batch's (applied there) or
    /// another writer's (this batch's check failed, nothing applied).
    async fn resolve_batch(&self, batch_id: &str, commit: &WriteOp, err: StoreError, deadline: Instant) -> StoreResult<u64> {
        let Expect::Revision(expected) = commit.expect else {
            return Err(self.unresolved(err, &commit.key));
        };
        let subject = format!("{}{}", self.kv.prefix, commit.key);
        let mut pause = Duration::from_millis(100);
        let mut empty_looks = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.unresolved(err, &commit.key));
            }
            // The leader's answer (STREAM.MSG.GET), not a direct get a lagging replica may serve.
            let look = tokio::time::timeout(
                ATTEMPT_TIMEOUT.min(left),
                self.kv.stream.raw_message_builder().sequence(expected + 1).next_by_subject(subject.clone()).send(),
            )
            .await;
            match look {
                Ok(Ok(msg)) => {
                    let header = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_string());
                    if header(async_nats::header::NATS_BATCH_ID.as_ref()).as_deref() == Some(batch_id) {
                        return Ok(msg.sequence);
                    }
                    // Another writer's message comes first. If it expected the same revision as this
                    // batch, this batch's check failed and nothing was applied. Otherwise this batch's
                    // message may have come first and been dropped by the history limit: unknown.
                    let expected_by_them = header(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE.as_ref());
                    return if expected_by_them.and_then(|v| v.parse::<u64>().ok()) == Some(expected) {
                        Err(StoreError::new(StoreErrorKind::WrongRevision { expected, current: Some(msg.sequence) })
                            .bucket(self.name.clone())
                            .key(commit.key.clone()))
                    } else {
                        Err(self.unresolved(err, &commit.key))
                    };
                }
                // Nothing newer on the key, says the leader: the batch did not commit. Look twice,
                // a moment apart, so a commit still being proposed is not mistaken for a lost one.
                Ok(Err(e)) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    empty_looks += 1;
                    if empty_looks >= 2 {
                        return Err(StoreError::new(StoreErrorKind::Timeout).bucket(self.name.clone()).key(commit.key.clone()).detail(
                            "the commit went unanswered and kv-config checked that the batch was not applied; nothing changed",
                        ));
                    }
                }
                _ => {}
            }
            if Instant::now() + pause >= deadline {
                return Err(self.unresolved(err, &commit.key));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// A batch's failure names no key; find the one whose revision check fails now.
    async fn batch_error(&self, err: StoreError, ops: &[WriteOp]) -> StoreError {
        if err.detail_text().is_some_and(|d| d.contains("10176")) {
            // A staged message was refused, so the batch is incomplete: most likely a value over
            // the bucket's size limit. Name it.
            let limit = self.kv.stream.get_info().await.ok().map(|i| i.config.max_message_size).filter(|m| *m > 0);
            if let Some(limit) = limit {
                for op in ops {
                    let len = Self::payload(op).len();
                    if len as i64 > i64::from(limit) {
                        return StoreError::new(StoreErrorKind::ValueTooLarge)
                            .bucket(self.name.clone())
                            .key(op.key.clone())
                            .detail(format!("{len} bytes, the bucket allows {limit}"));
                    }
                }
            }
            return StoreError::new(StoreErrorKind::InvalidRequest).bucket(self.name.clone()).detail(
                "the server refused a message of the atomic batch, so nothing was applied (a value too large for the server?)",
            );
        }
        if !err.is_wrong_revision() {
            return err;
        }
        for op in ops {
            if let Expect::Revision(expected) = op.expect {
                let current = match self.kv.entry(&op.key).await {
                    Ok(entry) => entry.map_or(0, |e| e.revision),
                    Err(_) => continue,
                };
                if current != expected {
                    return StoreError::new(StoreErrorKind::WrongRevision { expected, current: Some(current) })
                        .bucket(self.name.clone())
                        .key(op.key.clone());
                }
            }
        }
        err
    }
}

/// Maps any async-nats error to a [`StoreErrorKind`], walking its source chain.
fn classify(err: &(dyn std::error::Error + 'static)) -> StoreError {
    let mut kind = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut text = String::new();
    while let Some(e) = cur {
        if let Some(js) = e.downcast_ref::<jetstream::Error>() {
            kind = kind.or(match js.error_code().0 {
                10071 | 10164 => Some(StoreErrorKind::WrongRevision {
                    expected: 0,
                    current: js.to_string().split("wrong last sequence: ").nth(1).and_then(|s| {
                        s.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok())
                    }),
                }),
                10059 => Some(StoreErrorKind::NotFound),
                // "duplicate message id is in process": the first copy is still being proposed.
                10158 => Some(StoreErrorKind::Timeout),
                10058 => Some(StoreErrorKind::AlreadyExists),
                10054 => Some(StoreErrorKind::ValueTooLarge),
                10076 | 10039 => Some(StoreErrorKind::JetStreamNotEnabled),
                10166 => Some(StoreErrorKind::KeyTtlDisabled),
                10174 => Some(StoreErrorKind::AtomicWritesDisabled),
                _ => None,
            });
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&e.to_string());
        cur = e.source();
    }
    let lower = text.to_ascii_lowercase();
    let kind = kind.unwrap_or_else(|| {
        if lower.contains("jetstream unavailable") || lower.contains("jetstream not enabled") {
            StoreErrorKind::JetStreamNotEnabled
        } else if lower.contains("wrong last sequence") {
            StoreErrorKind::WrongRevision { expected: 0, current: None }
        } else if lower.contains("permission") || lower.contains("authorization") {
            StoreErrorKind::PermissionDenied
        } else if lower.contains("stream not found") || lower.contains("no stream found") || lower.contains("does not exist") || lower.contains("not found") {
            StoreErrorKind::NotFound
        } else if lower.contains("no responders") || lower.contains("jetstream not enabled") {
            StoreErrorKind::JetStreamNotEnabled
        } else if lower.contains("payload") && lower.contains("exceed") || lower.contains("message size exceeds") {
            StoreErrorKind::ValueTooLarge
        } else if lower.contains("timed out") || lower.contains("timeout") {
            StoreErrorKind::Timeout
        } else if lower.contains("disconnect") || lower.contains("broken pipe") || lower.contains("connection") {
            StoreErrorKind::Connection
        } else {
            StoreErrorKind::Other
        }
    });
    let mut out = StoreError::new(kind);
    if matches!(
        out.kind(),
        StoreErrorKind::Other | StoreErrorKind::NotFound | StoreErrorKind::ValueTooLarge | StoreErrorKind::Connection | StoreErrorKind::PermissionDenied
    ) {
        out = out.detail(text);
    }
    out
}

/// A watch of the keys matching `pattern` in bucket `name` (its subjects start with `prefix`):
/// an ordered push consumer on the stream named `stream`, read as [`Entry`]s through a plain
/// subscription, and a new one from the last delivery + 1 whenever one ends ([`ordered`]). Also
/// returns when the server created the first consumer, in nanoseconds since the Unix epoch
/// (comparable with [`incarnation_of`]). The consumer is deleted when the watch ends
/// ([`Watch::on_end`]); the server would otherwise keep it 30 s after every load, re-created
/// watch or dropped handle. [`Watch::began_in`] sets the incarnation its re-made consumers must
/// be in ([`ordered::Source::check_same`]).
async fn ordered_watch(
    client: &async_nats::Client,
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    prefix: &str,
    pattern: &str,
    start: WatchStart,
) -> StoreResult<(Watch, u64)> {
    use jetstream::consumer::DeliverPolicy;
    let deliver_policy = match start {
        WatchStart::LatestPerKey => DeliverPolicy::LastPerSubject,
        WatchStart::New => DeliverPolicy::New,
        WatchStart::FromRevision(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
    };
    // Our own consumer rather than kv::Store::watch*: its info tells how many entries are pending
    // at the start, which is the only "loaded" signal for an empty match.
    let source = Arc::new(ordered::Source {
        client: client.clone(),
        js: js.clone(),
        stream: stream.to_string(),
        filter_subject: format!("{prefix}{pattern}"),
        bucket: name.to_string(),
        pattern: pattern.to_string(),
        incarnation: std::sync::OnceLock::new(),
    });
    let (first, info) = source.open(deliver_policy).await?;
    let initial = info.num_pending;
    let created = info.created.unix_timestamp_nanos().max(0) as u64;
    let consumer_name = Arc::new(Mutex::new(info.name.clone()));
    let bucket: Arc<str> = Arc::from(name);
    let prefix = prefix.to_string();
    let deliveries = ordered::Resuming::new(source.clone(), deliver_policy, first, &info, consumer_name.clone());
    let entries = deliveries.map(move |d| {
        let d = d?;
        let msg = d.message;
        let key = msg.subject.strip_prefix(prefix.as_str()).unwrap_or(msg.subject.as_str()).to_string();
        // The server's pending count can read 0 between the messages of an atomic batch; the
        // batch headers cannot: only the commit message ends a batch.
        let batch_continues = msg.headers.as_ref().is_some_and(|h| {
            h.get(async_nats::header::NATS_BATCH_ID).is_some()
                && h.get(async_nats::header::NATS_BATCH_COMMIT).is_none()
        });
        Ok(Entry {
            bucket: bucket.clone(),
            operation: operation_of(msg.headers.as_ref()),
            headers: headers_of(msg.headers.as_ref()),
            batch_continues,
            // A copy: the payload is a slice of the connection's read buffer, and a view that
            // kept it would keep the whole buffer (measured: a 1,000-key handle held about
            // one payload's worth of read buffers beside the values).
            value: Bytes::copy_from_slice(&msg.payload),
            revision: d.stream_sequence,
            delta: d.pending,
            created: SystemTime::UNIX_EPOCH + Duration::from_nanos(d.published),
            key,
        })
    });
    let deleter = source.clone();
    let end = move || async move {
        let name = consumer_name.lock().map(|n| n.clone()).unwrap_or_default();
        deleter.delete(&name).await;
    };
    let labels = source.clone();
    let watch = Watch::new(initial, entries).on_end(end).on_incarnation(move |incarnation| {
        let _ = labels.incarnation.set(incarnation);
    });
    Ok((watch, created))
}
