//! Prometheus metrics of canary-gate itself, served on the admin port's `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub endpoint: &'static str,
    /// allowed | patched | denied | invalid
    pub outcome: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CallOutcome {
    Success,
    Failure,
    Timeout,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// e.g. `get deployment`, `apply virtualservice`, `query`
    pub call: &'static str,
    pub outcome: CallOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: String,
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    pub namespace: String,
    pub deployment: String,
    pub gate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    /// hook | slack | teams | webhook
    pub kind: &'static str,
    /// success | failure | timeout
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// confirm-rollout | pre-rollout | rollout | confirm-promotion | post-rollout | rollback
    pub r#type: &'static str,
    /// pass | fail | timeout | error
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// slack | teams | webhook
    pub provider: &'static str,
    /// sent | failed | dropped
    pub outcome: &'static str,
}

/// All metrics, shared by the webhook, the analyzer and the clients.
pub struct Metrics {
    registry: Registry,
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub admission_duration: Family<EndpointLabels, Histogram>,
    pub kube_calls: Family<CallLabels, Counter>,
    pub prometheus_queries: Family<CallLabels, Counter>,
    pub tls_reloads: Family<CallLabels, Counter>,
    pub rollout_weight: Family<RolloutLabels, Gauge>,
    pub rollout_failed_checks: Family<RolloutLabels, Gauge>,
    pub rollouts_by_phase: Family<PhaseLabels, Gauge>,
    pub gate_value: Family<GateLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub checks: Family<NameLabels, Counter>,
    pub decisions: Family<NameLabels, Counter>,
    pub tick_lateness: Histogram,
    pub tick_duration: Histogram,
    /// Scheduled ticks not started because earlier ones were still writing.
    pub ticks_skipped: Counter,
    /// Kubernetes Events left out because the API budget was in use by rollout writes.
    pub events_dropped: Counter,
    pub prometheus_query_duration: Histogram,
    pub prometheus_response_bytes: Histogram,
    pub leader: Gauge,
    pub outbound_calls: Family<OutboundLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub hook_calls: Family<HookLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("canary_gate");
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by endpoint, outcome and reason",
            admission_requests.clone(),
        );
        let admission_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 25 µs .. ~0.8 s: the interesting range for a webhook in the write path.
            Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to decide and encode an admission answer",
            admission_duration.clone(),
        );
        let kube_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "kube_calls",
            "Kubernetes API calls by call and outcome",
            kube_calls.clone(),
        );
        let prometheus_queries = Family::<CallLabels, Counter>::default();
        registry.register(
            "prometheus_queries",
            "Prometheus queries by outcome",
            prometheus_queries.clone(),
        );
        let tls_reloads = Family::<CallLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Certificate reloads from disk by outcome",
            tls_reloads.clone(),
        );
        let rollout_weight = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "rollout_weight_percent",
            "Traffic percent sent to the canary",
            rollout_weight.clone(),
        );
        let rollout_failed_checks = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "rollout_failed_checks",
            "Failed checks of the running rollout",
            rollout_failed_checks.clone(),
        );
        let rollouts_by_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "rollouts",
            "Managed rollouts by phase",
            rollouts_by_phase.clone(),
        );
        let gate_value = Family::<GateLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "gate_value",
            "Last value of each gate (success rate %, p99 ms, custom)",
            gate_value.clone(),
        );
        let checks = Family::<NameLabels, Counter>::default();
        registry.register(
            "checks",
            "Analysis checks by result (passed, failed, inconclusive, not_enough_data)",
            checks.clone(),
        );
        let decisions = Family::<NameLabels, Counter>::default();
        registry.register(
            "decisions",
            "Rollout decisions (step, promote, rollback, ...)",
            decisions.clone(),
        );
        let tick_lateness = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "tick_lateness_seconds",
            "How late the analyzer tick started versus its schedule",
            tick_lateness.clone(),
        );
        let tick_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "tick_duration_seconds",
            "Time one analyzer tick took",
            tick_duration.clone(),
        );
        let ticks_skipped = Counter::default();
        registry.register(
            "ticks_skipped",
            "Scheduled analyzer ticks not started because earlier ticks were still writing",
            ticks_skipped.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Kubernetes Events not written because the API budget was in use by rollout writes",
            events_dropped.clone(),
        );
        let prometheus_query_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "prometheus_query_duration_seconds",
            "Time from sending a Prometheus query to its parsed answer",
            prometheus_query_duration.clone(),
        );
        let prometheus_response_bytes = Histogram::new(exponential_buckets(1024.0, 4.0, 10));
        registry.register(
            "prometheus_response_bytes",
            "Size of a Prometheus query's answer",
            prometheus_response_bytes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the analyzer lease",
            leader.clone(),
        );
        let outbound_calls = Family::<OutboundLabels, Counter>::default();
        registry.register(
            "outbound_calls",
            "Outbound HTTP calls (hooks, notifications) by kind and outcome",
            outbound_calls.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by provider and outcome (sent, failed, dropped)",
            notifications.clone(),
        );
        let hook_calls = Family::<HookLabels, Counter>::default();
        registry.register(
            "hook_calls",
            "Rollout hook calls by type and outcome (pass, fail, timeout, error)",
            hook_calls.clone(),
        );
        Arc::new(Metrics {
            registry,
            admission_requests,
            admission_duration,
            kube_calls,
            prometheus_queries,
            tls_reloads,
            rollout_weight,
            rollout_failed_checks,
            rollouts_by_phase,
            gate_value,
            checks,
            decisions,
            tick_lateness,
            tick_duration,
            ticks_skipped,
            events_dropped,
            prometheus_query_duration,
            prometheus_response_bytes,
            leader,
            outbound_calls,
            notifications,
            hook_calls,
        })
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String only fails on fmt errors, which String never returns.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn count_outbound(&self, kind: &'static str, outcome: &'static str) {
        self.outbound_calls
            .get_or_create(&OutboundLabels { kind, outcome })
            .inc();
    }

    pub fn count_notification(&self, provider: &'static str, outcome: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabels { provider, outcome })
            .inc();
    }

    pub fn count_call(
        family: &Family<CallLabels, Counter>,
        call: &'static str,
        outcome: CallOutcome,
    ) {
        family.get_or_create(&CallLabels { call, outcome }).inc();
    }
}
