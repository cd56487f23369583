//! Hook calls for the analyzer: started when due, run outside the tick (a hanging hook costs
//! its own timeout and holds up no rollout), their results handed to the machine at the next
//! tick as one more observation. All calls go through the one outbound client.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::{HookLabels, Metrics};
use crate::outbound::{Outbound, OutboundError};
use crate::rollout::hooks::{self, Hook, HookKind, HookOutcome, HookResult};
use crate::rollout::state::RolloutState;
use crate::settings::Settings;

/// (namespace, deployment, canary revision): results of an older revision are dropped.
type Key = (String, String, String);

/// Pause before the one retry of a call that did not connect.
const RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Calls {
    in_flight: HashSet<(Key, String)>,
    done: HashMap<Key, Vec<HookResult>>,
}

#[derive(Clone)]
pub struct HookCalls {
    outbound: Outbound,
    metrics: Arc<Metrics>,
    calls: Arc<Mutex<Calls>>,
}

impl HookCalls {
    pub fn new(outbound: Outbound, metrics: Arc<Metrics>) -> Self {
        HookCalls {
            outbound,
            metrics,
            calls: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The results that arrived for this rollout since the last tick.
    pub fn take(&self, ns: &str, name: &str, revision: &str) -> Vec<HookResult> {
        let key = (ns.to_string(), name.to_string(), revision.to_string());
        self.lock().done.remove(&key).unwrap_or_default()
    }

    /// Starts the hooks due for `state` (the state just decided) that are not running yet.
    #[allow(clippy::too_many_arguments)]
    pub fn start_due(
        &self,
        ns: &str,
        name: &str,
        settings: &Settings,
        state: &RolloutState,
        twin_ready: bool,
        checked: bool,
        now: jiff::Timestamp,
    ) {
        let due = hooks::due(
            &settings.hooks,
            state,
            settings.interval,
            twin_ready,
            checked,
            settings.max_weight,
            now,
        );
        for hook in due {
            self.start(ns, name, hook, state, true);
        }
    }

    /// Calls every hook of `kind` once and forgets the answers (`post-rollout`).
    pub fn fire(
        &self,
        ns: &str,
        name: &str,
        settings: &Settings,
        state: &RolloutState,
        kind: HookKind,
    ) {
        for hook in hooks::of_kind(&settings.hooks, kind) {
            self.start(ns, name, hook, state, false);
        }
    }

    fn start(&self, ns: &str, name: &str, hook: &Hook, state: &RolloutState, keep: bool) {
        let key: Key = (ns.into(), name.into(), state.canary_revision.clone());
        if !self
            .lock()
            .in_flight
            .insert((key.clone(), hook.name.clone()))
        {
            return;
        }
        let body = hooks::request_body(hook, ns, name, state);
        let this = self.clone();
        let hook = hook.clone();
        tokio::spawn(async move {
            let outcome = this.call(&hook, &body).await;
            let result = HookResult {
                name: hook.name.clone(),
                kind: hook.kind,
                outcome,
            };
            if !result.passed() && hook.kind != HookKind::Rollback {
                tracing::warn!(hook = %hook.name, r#type = hook.kind.as_str(), detail = %result.describe(), "hook failed");
            }
            let mut calls = this.lock();
            calls.in_flight.remove(&(key.clone(), hook.name.clone()));
            if keep {
                calls.done.entry(key).or_default().push(result);
            }
        });
    }

    /// One call with its own timeout and one retry when it could not connect; counted by
    /// type and outcome.
    async fn call(&self, hook: &Hook, body: &serde_json::Value) -> HookOutcome {
        let mut answer = self
            .outbound
            .post_json("hook", &hook.url, body, hook.timeout)
            .await;
        if matches!(answer, Err(OutboundError::Connect(_))) {
            tokio::time::sleep(RETRY_AFTER).await;
            answer = self
                .outbound
                .post_json("hook", &hook.url, body, hook.timeout)
                .await;
        }
        let (outcome, counted) = match answer {
            Ok(status) if (200..300).contains(&status) => (HookOutcome::Pass, "pass"),
            Ok(status) => (HookOutcome::Fail(format!("answered HTTP {status}")), "fail"),
            Err(OutboundError::Timeout(d)) => (
                HookOutcome::Fail(format!(
                    "no answer within {}",
                    humantime::format_duration(d)
                )),
                "timeout",
            ),
            Err(e) => (HookOutcome::Fail(e.to_string()), "error"),
        };
        self.metrics
            .hook_calls
            .get_or_create(&HookLabels {
                r#type: hook.kind.as_str(),
                outcome: counted,
            })
            .inc();
        outcome
    }
}
