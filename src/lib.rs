//! Not published: owns the workspace's examples, tests and benches.
