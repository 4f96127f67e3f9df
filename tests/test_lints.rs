//! Derived code is warning-free under strict lints.
#![deny(warnings, unused_qualifications, missing_docs)]

use kv_config::KvConfig;

/// A config.
#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
pub struct Strict {
    /// A port.
    #[kv(default = 1)]
    pub port: u16,
    /// An optional name.
    pub name: Option<String>,
    /// A secret.
    #[kv(secret, default)]
    pub token: String,
}

#[test]
fn derives_cleanly() {
    assert_eq!(Strict::schema().fields.len(), 3);
}
