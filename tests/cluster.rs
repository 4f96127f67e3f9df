//! A 3-node JetStream cluster: a replicated bucket survives losing the node a handle is connected to.

use std::time::{Duration, Instant};

use kv_config::store::{BucketConfig, NatsStore, Store};
use kv_config::{KvConfig, LiveConfig};
use serde::{Deserialize, Serialize};

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct Cfg {
    #[kv(default)]
    a: u64,
}

async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_fails_over_to_another_node() {
    let mut nodes = kv_config_testing::start_cluster(3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let connect = |url: String| async move { async_nats::connect(url).await.expect("connect") };
    // The handle's connection knows every node; it starts on node 0.
    let client = async_nats::ConnectOptions::new()
        .retain_servers_order()
        .connect(urls.iter().map(|u| u.parse::<async_nats::ServerAddr>().expect("url")).collect::<Vec<_>>())
        .await
        .expect("connect to the cluster");
    let store = NatsStore::new(client.clone());
    // JetStream needs a meta leader before a replicated bucket can be created.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.create_bucket(&BucketConfig::new("cfg").replicas(3)).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "cluster never accepted an R3 bucket: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cfg = LiveConfig::<Cfg>::builder(store, "cfg").start().await.expect("start");
    let writer = NatsStore::new(connect(urls[2].clone()).await).open_bucket("cfg").await.expect("open");
    writer.put("a", "1".into()).await.expect("put");
    eventually("a=1", Duration::from_secs(10), || cfg.get().a == 1).await;

    let port = client.server_info().port;
    let victim = nodes.iter().position(|n| n.port() == port).expect("connected node");
    nodes[victim].kill();
    let survivor = (victim + 1) % 3;
    let survivor_store = NatsStore::new(connect(urls[survivor].clone()).await);
    // The bucket's stream elects a new leader first: open and write until it answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async { survivor_store.open_bucket("cfg").await?.put("a", "2".into()).await };
        match attempt.await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "writes never resumed after losing a node: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eventually("the handle converges after failover", Duration::from_secs(30), || cfg.get().a == 2).await;
    assert!(cfg.status().connected);
}
