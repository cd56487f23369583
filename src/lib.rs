#![forbid(unsafe_code)]
//! canary-gate: every `kubectl apply` of a Deployment becomes a canary release on Istio,
//! gated by PromQL against Prometheus. See `design.md` and the README.

pub mod admission;
pub mod annotations;
pub mod rollout;
pub mod settings;
pub mod status;
pub mod metrics;
pub mod server;
pub mod analyzer;
pub mod certs;
pub mod loadtest;
pub mod cli;
pub mod cluster;
pub mod gates;
pub mod istio;
pub mod judge;
pub mod prom;
