//! The generic kvc checks `char` and address fields against the format the published schema
//! gives them, as every service would: a write the services would refuse is refused.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::{values, Env};
use kv_config::store::{BucketConfig, Store};
use kv_config::{KvConfig, SCHEMA_KEY};
use serde::{Deserialize, Serialize};

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Net {
    #[kv(default = ',')]
    separator: char,
    #[kv(default = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    listen: Option<SocketAddr>,
    upstreams: Vec<IpAddr>,
}

#[tokio::test]
async fn the_generic_kvc_refuses_strings_the_rust_types_do_not_parse() {
    let env = Env::start().await;
    let b = env.store.create_bucket(&BucketConfig::new("net").history(5)).await.unwrap();
    b.put(SCHEMA_KEY, serde_json::to_vec(&Net::schema()).unwrap().into()).await.unwrap();
    b.put("upstreams", "[]".into()).await.unwrap();
    let before = values(b.as_ref()).await;

    for (arg, key, problem) in [
        ("separator=abc", "separator", "expected string of one character, found string \"abc\""),
        ("bind=300.1.2.3", "bind", "expected IP address, found string \"300.1.2.3\""),
        ("v4=::1", "v4", "expected IPv4 address, found string \"::1\""),
        ("v6=10.0.0.1", "v6", "expected IPv6 address, found string \"10.0.0.1\""),
        ("listen=10.0.0.1", "listen", "expected socket address (ip:port), found string \"10.0.0.1\""),
        (r#"upstreams=["10.0.0.1","not-an-ip"]"#, "upstreams", "in array: expected IP address, found string \"not-an-ip\""),
    ] {
        let run = env.kvc(&["set", "net", arg]);
        assert_eq!(run.code, 4, "{arg}: {run:?}");
        let expected = format!("kvc: error: bucket `net`: refused, nothing written: key `{key}`: {problem}");
        assert!(run.stderr.starts_with(&expected), "{arg}:\n{}\nexpected: {expected}", run.stderr);
    }
    assert_eq!(values(b.as_ref()).await, before, "nothing written");

    // What the types parse is accepted, as a bare string or as JSON.
    let run = env.kvc(&["set", "net", "separator=é", "bind=::1", "v4=10.0.0.1", "v6=fe80::1", "listen=[::1]:8080", r#"upstreams=["10.0.0.1","::2"]"#]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(b.get("separator").await.unwrap().as_deref(), Some("\"é\"".as_bytes()));
    assert_eq!(b.get("bind").await.unwrap().as_deref(), Some(&b"\"::1\""[..]));
    assert_eq!(b.get("listen").await.unwrap().as_deref(), Some(&b"\"[::1]:8080\""[..]));

    // A value another client wrote is shown as invalid, with the problem.
    b.put("separator", "\"ab\"".into()).await.unwrap();
    let run = env.kvc(&["show", "net", "--json"]);
    let row = run.json()["keys"].as_array().unwrap().iter().find(|r| r["key"] == "separator").cloned().unwrap();
    assert_eq!(row["state"], "invalid");
    assert_eq!(row["reason"], "expected string of one character, found string \"ab\"");
    assert_eq!(row["type"], "string of one character");
}
