//! Reaching the server after a start from the cache file: keep trying, a heartbeat apart, then
//! resume the watch from the cached revision + 1 when the bucket is the same incarnation and its
//! stream still holds that revision (and the cache left nothing out), else load the bucket in full
//! and replace the cached view. Either way the watcher then runs as after a normal start.

use std::sync::{Arc, Weak};

use super::hub::{Hub, Member};
use super::lazy::LazyBucket;
use super::Shared;
use crate::config::KvConfig;
use crate::feed::{pattern_for, watch_initial};
use crate::store::{Bucket, StoreErrorKind, Watch, WatchStart};

/// What the cache allows on reconnect.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resume {
    pub(super) incarnation: Option<u64>,
    pub(super) revision: u64,
    pub(super) resumable: bool,
}

/// The task of a handle started from its cache: attaches, then becomes the watcher.
pub(super) async fn run<T: KvConfig>(weak: Weak<Shared<T>>, lazy: Arc<LazyBucket>, resume: Resume, seed: bool) {
    let Some((prefix, heartbeat)) = weak.upgrade().map(|s| (s.source.prefix.clone(), s.options.heartbeat)) else { return };
    let pattern = pattern_for(&prefix);
    loop {
        if let Some((watch, bucket)) = try_attach(&weak, &lazy, resume, seed, &prefix, &pattern).await {
            let Some(shared) = weak.upgrade() else { return };
            let hub = {
                let st = shared.state();
                Hub::dedicated(bucket.clone(), &prefix, heartbeat, shared.options.load_timeout, st.view.seen, st.incarnation)
            };
            let member: Arc<dyn Member> = shared.clone();
            hub.add(&prefix, &member);
            let weak_hub = Arc::downgrade(&hub);
            let _ = shared.hub.set(hub);
            drop((shared, member));
            // This task is the watcher now (the handle aborts it when dropped).
            super::watcher::run(weak_hub, watch, bucket).await;
            return;
        }
        if weak.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(heartbeat).await;
    }
}

/// One attempt; `None` when the server or the bucket is not there yet.
async fn try_attach<T: KvConfig>(
    weak: &Weak<Shared<T>>,
    lazy: &LazyBucket,
    resume: Resume,
    seed: bool,
    prefix: &str,
    pattern: &str,
) -> Option<(Watch, Arc<dyn Bucket>)> {
    let (heartbeat, load_timeout) = weak.upgrade().map(|s| (s.options.heartbeat, s.options.load_timeout))?;
    let note = |e: String| {
        if let Some(s) = weak.upgrade() {
            s.state().status.last_error = Some(e);
        }
    };
    let bucket = match tokio::time::timeout(heartbeat * 2, lazy.attach()).await {
        Ok(Ok((bucket, created))) => {
            if created || seed {
                if let Err(e) = super::builder::seed(&*bucket, prefix, &T::schema(), |_| false).await {
                    note(e.to_string());
                }
            }
            bucket
        }
        Ok(Err(e)) => {
            tracing::debug!(bucket = lazy_name(weak), error = %e, "started from the cache; the bucket cannot be opened yet");
            note(e.to_string());
            return None;
        }
        Err(_) => return None,
    };
    let probe = match tokio::time::timeout(heartbeat * 2, bucket.probe(pattern, resume.revision)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            note(e.to_string());
            return None;
        }
        Err(_) => return None,
    };
    let from = resume.revision + 1;
    let same = resume.incarnation == Some(probe.incarnation);
    if resume.resumable && same && probe.first_revision <= from && probe.last_revision >= resume.revision {
        match tokio::time::timeout(heartbeat * 2, bucket.watch(pattern, WatchStart::FromRevision(from))).await {
            Ok(Ok(watch)) => {
                let shared = weak.upgrade()?;
                let mut st = shared.state();
                st.incarnation = Some(probe.incarnation);
                st.status.resumed_from = Some(from);
                // The next caught-up burst (or the first quiet check) builds a snapshot from the
                // view, which is then no longer "from the cache".
                st.view.mark_dirty();
                tracing::info!(bucket = bucket.name(), from, "reached the server; resuming the watch after the cached revision");
                return Some((watch, bucket));
            }
            Ok(Err(e)) if *e.kind() != StoreErrorKind::NotFound => {
                note(e.to_string());
                return None;
            }
            // The stream lost the revision in the meantime: load in full below.
            _ => {}
        }
    }
    match watch_initial(&*bucket, prefix, None, load_timeout).await {
        Ok((watch, view)) => {
            let shared = weak.upgrade()?;
            tracing::info!(
                bucket = bucket.name(),
                cached = resume.revision,
                "reached the server; the cache cannot be resumed from, loaded the bucket in full"
            );
            shared.replace_view(view, Some(probe.incarnation));
            Some((watch, bucket))
        }
        Err(e) => {
            note(e.to_string());
            None
        }
    }
}

fn lazy_name<T: KvConfig>(weak: &Weak<Shared<T>>) -> String {
    weak.upgrade().map(|s| s.source.bucket.clone()).unwrap_or_default()
}
