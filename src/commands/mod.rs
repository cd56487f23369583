//! The commands people and pipelines run against a cluster: `status`, `wait`, and the manual
//! actions. Each decides in a pure function and talks to the cluster only through `Cluster`.

pub mod act;
pub mod status;
pub mod target;
pub mod wait;
