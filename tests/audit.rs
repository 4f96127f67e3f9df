//! Audit headers: a handle built with an author records it on every write; the runtime ignores
//! the headers when decoding.

use kv_config::store::{BucketConfig, NatsStore, Store, WriteOp, AUTHOR_HEADER, REASON_HEADER};
use kv_config::{KvConfig, LiveConfig};
use kv_config_testing::NatsServer;
use serde::{Deserialize, Serialize};

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct App {
    #[kv(default = 1)]
    workers: u32,
}

#[tokio::test]
async fn a_handle_with_an_author_signs_its_writes_and_ignores_headers_on_read() {
    let server = NatsServer::start().await;
    let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let bucket = store.create_bucket(&BucketConfig::new("app").history(5)).await.unwrap();
    let cfg = LiveConfig::<App>::builder(store, "app").author("billing@host-7").start().await.unwrap();
    cfg.update(|c| c.workers = 4).await.unwrap();
    let last = bucket.entry("workers").await.unwrap().unwrap();
    assert_eq!(last.headers, vec![(AUTHOR_HEADER.to_string(), "billing@host-7".to_string())]);
    // A write from an admin tool with author and reason decodes like any other.
    bucket
        .write(WriteOp::put("workers", "9".into()).header(AUTHOR_HEADER, "ops").header(REASON_HEADER, "incident 42"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while cfg.get().workers != 9 {
        assert!(std::time::Instant::now() < deadline, "the annotated write was not applied");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(cfg.status().is_healthy());
}
