// The config shared by the hot_reload and admin_edit examples.

use kv_config::{KvConfig, KvValue};
use serde::{Deserialize, Serialize};

pub const BUCKET: &str = "demo";

#[derive(KvValue, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
}

fn limits_ok(l: &Limits) -> Result<(), String> {
    if l.min > l.max {
        Err(format!("limits.min {} > limits.max {}", l.min, l.max))
    } else {
        Ok(())
    }
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoConfig {
    /// Log level: debug, info or warn.
    #[kv(default = Level::Info)]
    pub log_level: Level,
    /// Connection pool limits; min and max always change together.
    #[kv(nested, validate = limits_ok)]
    pub limits: Limits,
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[kv(default = 1)]
    pub min: u32,
    #[kv(default = 10)]
    pub max: u32,
}

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}
