//! `canary-gate wait NAMESPACE/DEPLOYMENT`: block a pipeline until the rollout ends, with an
//! exit code per outcome. `kubectl rollout status` cannot do this: after a rollback the
//! Deployment stays paused on purpose, and it waits until its own timeout.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use tokio::time::Instant;

use super::status::{bar, detail};
use super::target::{parse_target, KubeArgs};
use crate::annotations as ann;
use crate::cluster::{Cluster, KubeError};
use crate::rollout::state::{Phase, RolloutState, StateError};

#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// NAMESPACE/DEPLOYMENT, or DEPLOYMENT with --namespace.
    pub target: String,
    /// Give up after this long (exit code 3).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    pub timeout: Duration,
    /// How often the Deployment is read.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s", hide = true)]
    pub poll_interval: Duration,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How a wait ended. The exit codes are a public contract (README, "Commands").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded(String),
    Failed(String),
    /// Cancelled, or nothing to wait for: not found, not managed, no rollout recorded.
    NotReleased(String),
    TimedOut(String),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Succeeded(_) => 0,
            Outcome::Failed(_) => 1,
            Outcome::NotReleased(_) => 2,
            Outcome::TimedOut(_) => 3,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Outcome::Succeeded(t)
            | Outcome::Failed(t)
            | Outcome::NotReleased(t)
            | Outcome::TimedOut(t) => t,
        }
    }
}

/// What one read of the Deployment says.
#[derive(Debug, Clone, PartialEq)]
pub enum Look {
    Done(Outcome),
    Running(Box<RolloutState>),
}

/// Decides from one read (`None`: the Deployment does not exist).
pub fn look(ns: &str, name: &str, d: Option<&Deployment>) -> Look {
    let Some(d) = d else {
        return Look::Done(Outcome::NotReleased(format!(
            "deployment {ns}/{name} not found"
        )));
    };
    let empty = BTreeMap::new();
    let annotations = d.metadata.annotations.as_ref().unwrap_or(&empty);
    let state = match RolloutState::from_annotations(annotations) {
        Ok(s) => s,
        Err(StateError::Absent) => {
            let why = if annotations.get(ann::ENABLED).map(String::as_str) == Some("true") {
                format!(
                    "deployment {ns}/{name} has no rollout recorded: its pod template has not changed since it became managed, or namespace {ns} lacks the label {}=true so the webhook never saw the update",
                    ann::ENABLED
                )
            } else {
                format!(
                    "deployment {ns}/{name} is not managed by canary-gate (annotate it {}=\"true\" in a namespace labelled {}=true)",
                    ann::ENABLED,
                    ann::ENABLED
                )
            };
            return Look::Done(Outcome::NotReleased(why));
        }
        Err(e) => {
            return Look::Done(Outcome::NotReleased(format!(
                "deployment {ns}/{name}: rollout state unreadable: {e}"
            )))
        }
    };
    let summary = |s: &RolloutState| {
        format!(
            "{ns}/{name} {} (canary {}, stable {}): {}",
            s.phase,
            s.canary_revision,
            s.stable_revision,
            detail(s)
        )
    };
    match state.phase {
        Phase::Succeeded => Look::Done(Outcome::Succeeded(summary(&state))),
        Phase::Failed => Look::Done(Outcome::Failed(summary(&state))),
        Phase::Cancelled => Look::Done(Outcome::NotReleased(summary(&state))),
        Phase::Pending | Phase::Progressing | Phase::Promoting | Phase::Paused => {
            Look::Running(Box::new(state))
        }
    }
}

/// One progress line, printed when the phase, weight or message changes.
pub fn progress_line(elapsed: Duration, s: &RolloutState) -> String {
    format!(
        "{:>6}  {:<11} {} {:>3}%  {}",
        format!("{}s", elapsed.as_secs()),
        s.phase.as_str(),
        bar(s.weight, 10),
        s.weight,
        detail(s)
    )
}

/// Reads the Deployment every `poll` until the rollout ends or `timeout` passes, writing
/// progress to `out`. API errors are retried (and shown once each) until the deadline: a
/// pipeline should not fail on one dropped connection.
pub async fn wait<C: Cluster>(
    cluster: &C,
    ns: &str,
    name: &str,
    timeout: Duration,
    poll: Duration,
    out: &mut (dyn Write + Send),
) -> Outcome {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut shown: Option<(Phase, u32, String)> = None;
    let mut last_error: Option<String> = None;
    let mut last_state: Option<String> = None;
    loop {
        let read = tokio::time::timeout_at(deadline, cluster.get_deployment(ns, name)).await;
        let looked = match read {
            Err(_) => None,
            Ok(Ok(d)) => Some(look(ns, name, Some(&d))),
            Ok(Err(KubeError::NotFound)) => Some(look(ns, name, None)),
            Ok(Err(e)) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    let _ = writeln!(
                        out,
                        "warning: reading deployment {ns}/{name}: {text}; retrying"
                    );
                    last_error = Some(text);
                }
                None
            }
        };
        match looked {
            Some(Look::Done(outcome)) => return outcome,
            Some(Look::Running(s)) => {
                last_error = None;
                let key = (s.phase, s.weight, s.message.clone());
                if shown.as_ref() != Some(&key) {
                    let _ = writeln!(out, "{}", progress_line(start.elapsed(), &s));
                    shown = Some(key);
                }
                last_state = Some(format!("{} at {} %: {}", s.phase, s.weight, s.message));
            }
            None => {}
        }
        if Instant::now() + poll >= deadline {
            tokio::time::sleep_until(deadline).await;
            let last = last_state
                .or(last_error.map(|e| format!("last read failed: {e}")))
                .unwrap_or_else(|| "never read".into());
            return Outcome::TimedOut(format!(
                "{ns}/{name}: still running after {} ({last})",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

/// The `wait` command: the exit code, the outcome on the last line.
pub async fn run(args: WaitArgs) -> anyhow::Result<u8> {
    let (cluster, default_ns) = args.kube.open().await?;
    let (ns, name) = parse_target(&args.target, args.kube.namespace.as_deref(), &default_ns)?;
    let mut stdout = std::io::stdout();
    let outcome = wait(
        &cluster,
        &ns,
        &name,
        args.timeout,
        args.poll_interval,
        &mut stdout,
    )
    .await;
    let label = match &outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Failed(_) => "failed",
        Outcome::NotReleased(_) => "not released",
        Outcome::TimedOut(_) => "timed out",
    };
    let line = format!("{label}: {}", outcome.text());
    if outcome.exit_code() == 0 {
        writeln!(stdout, "{line}")?;
    } else {
        stdout.flush()?;
        writeln!(std::io::stderr(), "{line}")?;
    }
    Ok(outcome.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(annotations: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "shop", "annotations": annotations}
        }))
        .expect("deployment")
    }

    fn with_phase(phase: Phase) -> Deployment {
        let mut s = RolloutState::pending(
            "25f52b04b8".into(),
            "2b5095476a".into(),
            "2026-12-01T10:00:00Z".parse().expect("ts"),
        );
        s.phase = phase;
        s.message = format!("now {phase}");
        let map: BTreeMap<String, String> = s
            .to_annotations()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        deployment(serde_json::to_value(map).expect("json"))
    }

    #[test]
    fn every_phase_maps_to_one_outcome() {
        for phase in Phase::ALL {
            let d = with_phase(phase);
            let got = look("shop", "podinfo", Some(&d));
            let code = match &got {
                Look::Done(o) => Some(o.exit_code()),
                Look::Running(s) => {
                    assert_eq!(s.phase, phase);
                    None
                }
            };
            let want = match phase {
                Phase::Succeeded => Some(0),
                Phase::Failed => Some(1),
                Phase::Cancelled => Some(2),
                _ => None,
            };
            assert_eq!(code, want, "{phase}");
            if let Look::Done(o) = got {
                assert!(o.text().contains(&format!("now {phase}")), "{o:?}");
                assert!(o.text().contains("25f52b04b8"), "{o:?}");
            }
        }
    }

    #[test]
    fn nothing_to_wait_for_says_why() {
        let Look::Done(gone) = look("shop", "podinfo", None) else {
            panic!("not found is final")
        };
        assert_eq!(gone.exit_code(), 2);
        assert!(gone.text().contains("shop/podinfo not found"));

        let plain = deployment(serde_json::json!({}));
        let Look::Done(unmanaged) = look("shop", "podinfo", Some(&plain)) else {
            panic!("unmanaged is final")
        };
        assert_eq!(unmanaged.exit_code(), 2);
        assert!(unmanaged.text().contains("not managed"), "{unmanaged:?}");

        let enabled = deployment(serde_json::json!({ann::ENABLED: "true"}));
        let Look::Done(never) = look("shop", "podinfo", Some(&enabled)) else {
            panic!("no rollout is final")
        };
        assert!(never.text().contains("no rollout recorded"), "{never:?}");
        assert!(never.text().contains("lacks the label"), "{never:?}");

        let broken = deployment(serde_json::json!({ann::PHASE: "Exploding"}));
        let Look::Done(bad) = look("shop", "podinfo", Some(&broken)) else {
            panic!("bad state is final")
        };
        assert!(bad.text().contains("unreadable"), "{bad:?}");
    }
}
