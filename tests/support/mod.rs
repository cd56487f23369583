//! Test harness shared by the integration tests and the demo example: a real Prometheus
//! (`prometheus`), an Istio-style metrics exporter (`exporter`) and simulated mesh traffic
//! (`traffic`). Include with `mod support;` or
//! `#[path = "../tests/support/mod.rs"] mod support;`.

// Each test binary uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod apiserver;
pub mod dashboard;
pub mod exporter;
pub mod prometheus;
pub mod traffic;

pub use exporter::{IstioExporter, ISTIO_DURATION_BUCKETS_MS};
pub use prometheus::{Sample, TestPrometheus};
pub use traffic::{MeshSim, Profile, SimConfig, SimTotals, Totals, SIMULATED_NOTICE};
pub mod scenario;
