//! Generated shapes for the network benchmarks: 100, 1,000, 5,000 and 50,000 leaf keys, and the
//! 5,000- and 50,000-key configs with a `counter` for propagation.
use std::sync::Arc;

use kv_config::KvConfig;
use serde::{Deserialize, Serialize};

/// 100 string keys `f0`..`f99`.
#[derive(KvConfig, Clone, Serialize, Deserialize)]
pub struct Leaf100 {
    #[kv(default)]
    f0: String,
    #[kv(default)]
    f1: String,
    #[kv(default)]
    f2: String,
    #[kv(default)]
    f3: String,
    #[kv(default)]
    f4: String,
    #[kv(default)]
    f5: String,
    #[kv(default)]
    f6: String,
    #[kv(default)]
    f7: String,
    #[kv(default)]
    f8: String,
    #[kv(default)]
    f9: String,
    #[kv(default)]
    f10: String,
    #[kv(default)]
    f11: String,
    #[kv(default)]
    f12: String,
    #[kv(default)]
    f13: String,
    #[kv(default)]
    f14: String,
    #[kv(default)]
    f15: String,
    #[kv(default)]
    f16: String,
    #[kv(default)]
    f17: String,
    #[kv(default)]
    f18: String,
    #[kv(default)]
    f19: String,
    #[kv(default)]
    f20: String,
    #[kv(default)]
    f21: String,
    #[kv(default)]
    f22: String,
    #[kv(default)]
    f23: String,
    #[kv(default)]
    f24: String,
    #[kv(default)]
    f25: String,
    #[kv(default)]
    f26: String,
    #[kv(default)]
    f27: String,
    #[kv(default)]
    f28: String,
    #[kv(default)]
    f29: String,
    #[kv(default)]
    f30: String,
    #[kv(default)]
    f31: String,
    #[kv(default)]
    f32: String,
    #[kv(default)]
    f33: String,
    #[kv(default)]
    f34: String,
    #[kv(default)]
    f35: String,
    #[kv(default)]
    f36: String,
    #[kv(default)]
    f37: String,
    #[kv(default)]
    f38: String,
    #[kv(default)]
    f39: String,
    #[kv(default)]
    f40: String,
    #[kv(default)]
    f41: String,
    #[kv(default)]
    f42: String,
    #[kv(default)]
    f43: String,
    #[kv(default)]
    f44: String,
    #[kv(default)]
    f45: String,
    #[kv(default)]
    f46: String,
    #[kv(default)]
    f47: String,
    #[kv(default)]
    f48: String,
    #[kv(default)]
    f49: String,
    #[kv(default)]
    f50: String,
    #[kv(default)]
    f51: String,
    #[kv(default)]
    f52: String,
    #[kv(default)]
    f53: String,
    #[kv(default)]
    f54: String,
    #[kv(default)]
    f55: String,
    #[kv(default)]
    f56: String,
    #[kv(default)]
    f57: String,
    #[kv(default)]
    f58: String,
    #[kv(default)]
    f59: String,
    #[kv(default)]
    f60: String,
    #[kv(default)]
    f61: String,
    #[kv(default)]
    f62: String,
    #[kv(default)]
    f63: String,
    #[kv(default)]
    f64: String,
    #[kv(default)]
    f65: String,
    #[kv(default)]
    f66: String,
    #[kv(default)]
    f67: String,
    #[kv(default)]
    f68: String,
    #[kv(default)]
    f69: String,
    #[kv(default)]
    f70: String,
    #[kv(default)]
    f71: String,
    #[kv(default)]
    f72: String,
    #[kv(default)]
    f73: String,
    #[kv(default)]
    f74: String,
    #[kv(default)]
    f75: String,
    #[kv(default)]
    f76: String,
    #[kv(default)]
    f77: String,
    #[kv(default)]
    f78: String,
    #[kv(default)]
    f79: String,
    #[kv(default)]
    f80: String,
    #[kv(default)]
    f81: String,
    #[kv(default)]
    f82: String,
    #[kv(default)]
    f83: String,
    #[kv(default)]
    f84: String,
    #[kv(default)]
    f85: String,
    #[kv(default)]
    f86: String,
    #[kv(default)]
    f87: String,
    #[kv(default)]
    f88: String,
    #[kv(default)]
    f89: String,
    #[kv(default)]
    f90: String,
    #[kv(default)]
    f91: String,
    #[kv(default)]
    f92: String,
    #[kv(default)]
    f93: String,
    #[kv(default)]
    f94: String,
    #[kv(default)]
    f95: String,
    #[kv(default)]
    f96: String,
    #[kv(default)]
    f97: String,
    #[kv(default)]
    f98: String,
    #[kv(default)]
    f99: String,
}

/// 1,000 keys: `g0.f0` .. `g9.f99`.
#[derive(KvConfig, Clone, Serialize, Deserialize)]
pub struct Keys1000 {
    #[kv(nested)]
    g0: Leaf100,
    #[kv(nested)]
    g1: Leaf100,
    #[kv(nested)]
    g2: Leaf100,
    #[kv(nested)]
    g3: Leaf100,
    #[kv(nested)]
    g4: Leaf100,
    #[kv(nested)]
    g5: Leaf100,
    #[kv(nested)]
    g6: Leaf100,
    #[kv(nested)]
    g7: Leaf100,
    #[kv(nested)]
    g8: Leaf100,
    #[kv(nested)]
    g9: Leaf100,
}

/// 5,000 keys: `g0.f0` .. `g49.f99`.
#[derive(KvConfig, Clone, Serialize, Deserialize)]
pub struct Keys5000 {
    #[kv(nested)]
    g0: Leaf100,
    #[kv(nested)]
    g1: Leaf100,
    #[kv(nested)]
    g2: Leaf100,
    #[kv(nested)]
    g3: Leaf100,
    #[kv(nested)]
    g4: Leaf100,
    #[kv(nested)]
    g5: Leaf100,
    #[kv(nested)]
    g6: Leaf100,
    #[kv(nested)]
    g7: Leaf100,
    #[kv(nested)]
    g8: Leaf100,
    #[kv(nested)]
    g9: Leaf100,
    #[kv(nested)]
    g10: Leaf100,
    #[kv(nested)]
    g11: Leaf100,
    #[kv(nested)]
    g12: Leaf100,
    #[kv(nested)]
    g13: Leaf100,
    #[kv(nested)]
    g14: Leaf100,
    #[kv(nested)]
    g15: Leaf100,
    #[kv(nested)]
    g16: Leaf100,
    #[kv(nested)]
    g17: Leaf100,
    #[kv(nested)]
    g18: Leaf100,
    #[kv(nested)]
    g19: Leaf100,
    #[kv(nested)]
    g20: Leaf100,
    #[kv(nested)]
    g21: Leaf100,
    #[kv(nested)]
    g22: Leaf100,
    #[kv(nested)]
    g23: Leaf100,
    #[kv(nested)]
    g24: Leaf100,
    #[kv(nested)]
    g25: Leaf100,
    #[kv(nested)]
    g26: Leaf100,
    #[kv(nested)]
    g27: Leaf100,
    #[kv(nested)]
    g28: Leaf100,
    #[kv(nested)]
    g29: Leaf100,
    #[kv(nested)]
    g30: Leaf100,
    #[kv(nested)]
    g31: Leaf100,
    #[kv(nested)]
    g32: Leaf100,
    #[kv(nested)]
    g33: Leaf100,
    #[kv(nested)]
    g34: Leaf100,
    #[kv(nested)]
    g35: Leaf100,
    #[kv(nested)]
    g36: Leaf100,
    #[kv(nested)]
    g37: Leaf100,
    #[kv(nested)]
    g38: Leaf100,
    #[kv(nested)]
    g39: Leaf100,
    #[kv(nested)]
    g40: Leaf100,
    #[kv(nested)]
    g41: Leaf100,
    #[kv(nested)]
    g42: Leaf100,
    #[kv(nested)]
    g43: Leaf100,
    #[kv(nested)]
    g44: Leaf100,
    #[kv(nested)]
    g45: Leaf100,
    #[kv(nested)]
    g46: Leaf100,
    #[kv(nested)]
    g47: Leaf100,
    #[kv(nested)]
    g48: Leaf100,
    #[kv(nested)]
    g49: Leaf100,
}

/// 50,000 keys: `h0.g0.f0` .. `h9.g49.f99` (nested twice: one struct of 500 fields takes the
/// compiler minutes and gigabytes in the bench profile).
#[derive(KvConfig, Clone, Serialize, Deserialize)]
pub struct Keys50000 {
    #[kv(nested)]
    h0: Keys5000,
    #[kv(nested)]
    h1: Keys5000,
    #[kv(nested)]
    h2: Keys5000,
    #[kv(nested)]
    h3: Keys5000,
    #[kv(nested)]
    h4: Keys5000,
    #[kv(nested)]
    h5: Keys5000,
    #[kv(nested)]
    h6: Keys5000,
    #[kv(nested)]
    h7: Keys5000,
    #[kv(nested)]
    h8: Keys5000,
    #[kv(nested)]
    h9: Keys5000,
}

/// `counter` beside 5,000 keys `g.g0.f0` .. `g.g49.f99`: a change to one key of a large config.
#[derive(KvConfig, Clone, Serialize, Deserialize)]
pub struct Prop5000 {
    #[kv(default)]
    pub counter: u64,
    #[kv(nested)]
    g: Keys5000,
}

/// `counter` beside 50,000 keys `g.h0.g0.f0` .. `g.h9.g49.f99`.
#[derive(KvConfig, Clone, Serialize, Deserialize)]
pub struct Prop50000 {
    #[kv(default)]
    pub counter: u64,
    #[kv(nested)]
    g: Keys50000,
}

/// [`Keys5000`] with every 100-key section behind an `Arc` (shared between snapshots until a
/// change touches it).
#[derive(KvConfig, Clone)]
pub struct Keys5000A {
    #[kv(nested)]
    g0: Arc<Leaf100>,
    #[kv(nested)]
    g1: Arc<Leaf100>,
    #[kv(nested)]
    g2: Arc<Leaf100>,
    #[kv(nested)]
    g3: Arc<Leaf100>,
    #[kv(nested)]
    g4: Arc<Leaf100>,
    #[kv(nested)]
    g5: Arc<Leaf100>,
    #[kv(nested)]
    g6: Arc<Leaf100>,
    #[kv(nested)]
    g7: Arc<Leaf100>,
    #[kv(nested)]
    g8: Arc<Leaf100>,
    #[kv(nested)]
    g9: Arc<Leaf100>,
    #[kv(nested)]
    g10: Arc<Leaf100>,
    #[kv(nested)]
    g11: Arc<Leaf100>,
    #[kv(nested)]
    g12: Arc<Leaf100>,
    #[kv(nested)]
    g13: Arc<Leaf100>,
    #[kv(nested)]
    g14: Arc<Leaf100>,
    #[kv(nested)]
    g15: Arc<Leaf100>,
    #[kv(nested)]
    g16: Arc<Leaf100>,
    #[kv(nested)]
    g17: Arc<Leaf100>,
    #[kv(nested)]
    g18: Arc<Leaf100>,
    #[kv(nested)]
    g19: Arc<Leaf100>,
    #[kv(nested)]
    g20: Arc<Leaf100>,
    #[kv(nested)]
    g21: Arc<Leaf100>,
    #[kv(nested)]
    g22: Arc<Leaf100>,
    #[kv(nested)]
    g23: Arc<Leaf100>,
    #[kv(nested)]
    g24: Arc<Leaf100>,
    #[kv(nested)]
    g25: Arc<Leaf100>,
    #[kv(nested)]
    g26: Arc<Leaf100>,
    #[kv(nested)]
    g27: Arc<Leaf100>,
    #[kv(nested)]
    g28: Arc<Leaf100>,
    #[kv(nested)]
    g29: Arc<Leaf100>,
    #[kv(nested)]
    g30: Arc<Leaf100>,
    #[kv(nested)]
    g31: Arc<Leaf100>,
    #[kv(nested)]
    g32: Arc<Leaf100>,
    #[kv(nested)]
    g33: Arc<Leaf100>,
    #[kv(nested)]
    g34: Arc<Leaf100>,
    #[kv(nested)]
    g35: Arc<Leaf100>,
    #[kv(nested)]
    g36: Arc<Leaf100>,
    #[kv(nested)]
    g37: Arc<Leaf100>,
    #[kv(nested)]
    g38: Arc<Leaf100>,
    #[kv(nested)]
    g39: Arc<Leaf100>,
    #[kv(nested)]
    g40: Arc<Leaf100>,
    #[kv(nested)]
    g41: Arc<Leaf100>,
    #[kv(nested)]
    g42: Arc<Leaf100>,
    #[kv(nested)]
    g43: Arc<Leaf100>,
    #[kv(nested)]
    g44: Arc<Leaf100>,
    #[kv(nested)]
    g45: Arc<Leaf100>,
    #[kv(nested)]
    g46: Arc<Leaf100>,
    #[kv(nested)]
    g47: Arc<Leaf100>,
    #[kv(nested)]
    g48: Arc<Leaf100>,
    #[kv(nested)]
    g49: Arc<Leaf100>,
}

/// [`Keys50000`] built from [`Keys5000A`] sections, each behind an `Arc`.
#[derive(KvConfig, Clone)]
pub struct Keys50000A {
    #[kv(nested)]
    h0: Arc<Keys5000A>,
    #[kv(nested)]
    h1: Arc<Keys5000A>,
    #[kv(nested)]
    h2: Arc<Keys5000A>,
    #[kv(nested)]
    h3: Arc<Keys5000A>,
    #[kv(nested)]
    h4: Arc<Keys5000A>,
    #[kv(nested)]
    h5: Arc<Keys5000A>,
    #[kv(nested)]
    h6: Arc<Keys5000A>,
    #[kv(nested)]
    h7: Arc<Keys5000A>,
    #[kv(nested)]
    h8: Arc<Keys5000A>,
    #[kv(nested)]
    h9: Arc<Keys5000A>,
}

/// [`Prop5000`] with its sections behind `Arc`s.
#[derive(KvConfig, Clone)]
pub struct Prop5000A {
    #[kv(default)]
    pub counter: u64,
    #[kv(nested)]
    g: Keys5000A,
}

/// [`Prop50000`] with its sections behind `Arc`s.
#[derive(KvConfig, Clone)]
pub struct Prop50000A {
    #[kv(default)]
    pub counter: u64,
    #[kv(nested)]
    g: Keys50000A,
}

/// One tenant of [`Tenants50000`]: five string keys.
#[derive(KvConfig, Clone, Serialize, Deserialize)]
pub struct Tenant5 {
    #[kv(default)]
    f0: String,
    #[kv(default)]
    f1: String,
    #[kv(default)]
    f2: String,
    #[kv(default)]
    f3: String,
    #[kv(default)]
    f4: String,
}

/// 50,000 keys as a map field (the multi-tenant shape): 10,000 entries `tenants.t00000.f0` ..
/// `tenants.t09999.f4`.
#[derive(KvConfig, Clone)]
pub struct Tenants50000 {
    #[kv(nested)]
    tenants: std::collections::HashMap<String, Tenant5>,
}
