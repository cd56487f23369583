//! The real admin server (health, metrics, dashboard) on a loopback port, for the dashboard
//! tests and `make demo`.

use std::net::SocketAddr;
use std::sync::Arc;

use canary_gate::admission::WebhookConfig;
use canary_gate::cluster::memory::MemoryCluster;
use canary_gate::dashboard::Dashboard;
use canary_gate::metrics::Metrics;
use canary_gate::server::health::Health;
use canary_gate::server::http::{admin_router, AppState};
use canary_gate::settings::Defaults;

pub struct Admin {
    pub addr: SocketAddr,
    pub state: AppState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Admin {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The admin state of a `serve` process whose dashboard reads `cluster`.
pub fn state(cluster: &Arc<MemoryCluster>, metrics: Arc<Metrics>) -> AppState {
    let dashboard = Arc::new(Dashboard::new(Defaults::default()));
    dashboard.set_source(cluster.clone());
    AppState {
        config: Arc::new(WebhookConfig::default()),
        metrics,
        health: Arc::new(Health::default()),
        dashboard: Some(dashboard),
    }
}

/// Serves `admin_router(state)` on `listen` (port 0: any free port).
pub async fn serve(state: AppState, listen: &str) -> anyhow::Result<Admin> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let router = admin_router(state.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Admin { addr, state, task })
}
