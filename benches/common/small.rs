// The small config both benchmark binaries read and write.

use kv_config::KvConfig;
use serde::{Deserialize, Serialize};

/// A typical five-key service config.
#[derive(KvConfig, Clone, Serialize, Deserialize)]
pub struct Small {
    #[kv(default = "info")]
    pub log_level: String,
    #[kv(default = 8080)]
    pub port: u16,
    #[kv(default)]
    pub counter: u64,
    #[kv(default = 30)]
    pub timeout_s: u32,
    #[kv(default)]
    pub features: Vec<String>,
}
