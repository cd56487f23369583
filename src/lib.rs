#![forbid(unsafe_code)]
//! canary-gate: every `kubectl apply` of a Deployment becomes a canary release on Istio,
//! gated by PromQL against Prometheus. See `design.md` and the README.

pub mod admission;
pub mod analyzer;
pub mod annotations;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod dashboard;
pub mod gates;
pub mod gateway_api;
pub mod istio;
pub mod judge;
pub mod loadtest;
pub mod metrics;
pub mod outbound;
pub mod prom;
pub mod rollout;
pub mod server;
pub mod settings;
