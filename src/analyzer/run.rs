//! Wiring of the analyzer against a real cluster and Prometheus.

use std::sync::Arc;

use crate::cli::ServeArgs;
use crate::metrics::Metrics;
use crate::server::health::Health;

pub async fn start_in_cluster(_args: ServeArgs, _metrics: Arc<Metrics>, health: Arc<Health>) {
    health.set_analyzer("not implemented yet");
}
