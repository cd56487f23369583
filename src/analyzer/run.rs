//! Wiring of the analyzer against a real cluster and Prometheus, with leader election: every
//! replica serves the webhook, only the Lease holder runs rollouts.

use std::sync::Arc;
use std::time::Duration;

use kube_lease_manager::LeaseManagerBuilder;

use super::Analyzer;
use crate::cli::ServeArgs;
use crate::cluster::kube::KubeCluster;
use crate::dashboard::Dashboard;
use crate::metrics::Metrics;
use crate::prom::PromClient;
use crate::server::health::Health;

/// How often the analyzer looks at rollouts; analyses happen at each rollout's own interval.
pub const TICK: Duration = Duration::from_secs(1);
const LEASE_SECONDS: u64 = 15;

/// `dashboard`: where the web dashboard reads rollouts (this process's cluster cache) and the
/// history the analyzer records for it.
pub async fn start_in_cluster(
    args: ServeArgs,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    dashboard: Option<Arc<Dashboard>>,
) {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(error) => {
            // The webhook keeps answering; /readyz tells the operator what is missing.
            tracing::error!(%error, "no Kubernetes cluster reachable; analyzer not started");
            health.set_cluster(format!("error: {error}"));
            health.set_analyzer("not running: no cluster");
            if let Some(d) = &dashboard {
                d.set_missing(format!("no Kubernetes cluster reachable: {error}"));
            }
            return;
        }
    };
    health.set_cluster("ok");
    let prom = match PromClient::new(
        &args.analyzer.prometheus_url,
        args.analyzer.prometheus_timeout,
        metrics.clone(),
    ) {
        Ok(p) => p,
        Err(error) => {
            health.set_prometheus(format!("error: {error}"));
            return;
        }
    };
    health.set_prometheus(format!("configured: {}", args.analyzer.prometheus_url));
    let (cluster, watch) = KubeCluster::start(
        client.clone(),
        args.analyzer.kube_limits(),
        metrics.clone(),
        args.analyzer.pod_name.clone(),
        super::woken_rollout,
    );
    let changed = cluster.changed();
    tokio::spawn(watch);
    cluster.wait_ready().await;
    let cluster = Arc::new(cluster);
    if let Some(d) = &dashboard {
        // Every replica serves the dashboard from its own cache; the leader's history is the
        // richest, the others seed theirs from the annotations.
        d.set_source(cluster.clone());
    }

    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let lease = LeaseManagerBuilder::new(client, &args.analyzer.lease_name)
        .with_namespace(&args.analyzer.lease_namespace)
        .with_identity(&args.analyzer.pod_name)
        .with_duration(LEASE_SECONDS)
        .with_grace(5)
        .build()
        .await;
    match lease {
        Ok(manager) => {
            let (mut rx, _task) = manager.watch().await;
            let metrics = metrics.clone();
            let health = health.clone();
            tokio::spawn(async move {
                loop {
                    let is_leader = *rx.borrow_and_update();
                    metrics.leader.set(i64::from(is_leader));
                    health.set_leader(is_leader);
                    let _ = leader_tx.send(is_leader);
                    if rx.changed().await.is_err() {
                        tracing::error!("lease manager stopped; giving up leadership");
                        let _ = leader_tx.send(false);
                        metrics.leader.set(0);
                        health.set_leader(false);
                        break;
                    }
                }
            });
        }
        Err(error) => {
            tracing::error!(%error, "leader election unavailable; analyzer not started");
            health.set_analyzer(format!("not running: lease error: {error}"));
            return;
        }
    }
    health.set_analyzer("running");
    let mut analyzer = Analyzer::new(cluster, Arc::new(prom), args.analysis.defaults(), metrics)
        .with_health(health)
        .with_peek_every(args.analyzer.peek_interval)
        .with_list_max_age(args.analyzer.list_max_age)
        // `start` refused to serve with a bad notification URL, so this is the valid config.
        .with_notifications(args.notify.config().unwrap_or_default());
    if let Some(d) = &dashboard {
        analyzer = analyzer.with_history(d.history());
    }
    let analyzer = Arc::new(analyzer);
    analyzer.run(TICK, leader_rx, Some(changed)).await;
}
