//! `canary-gate promote|abort|pause|resume|approve NAMESPACE/DEPLOYMENT`: the manual actions without
//! hand-written annotations. The command only writes `canary-gate.io/action`; the analyzer
//! acts on it at its next tick, exactly as on an annotation set by hand.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;

use super::target::{parse_target, KubeArgs};
use crate::annotations as ann;
use crate::cluster::{Cluster, KubeError};
use crate::rollout::state::{Action, Phase, RolloutState};

#[derive(Debug, Clone, clap::Args)]
pub struct ActArgs {
    /// NAMESPACE/DEPLOYMENT, or DEPLOYMENT with --namespace.
    pub target: String,
    /// How long to wait for the analyzer to take the action before returning (0: don't).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub wait_for_analyzer: Duration,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// What a manual action does to a rollout, decided before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Write the action annotation.
    Request { phase: Phase, weight: u32 },
    /// Already asked for and not yet taken: nothing to write.
    AlreadyRequested,
    /// The rollout is already where the action would take it: nothing to write.
    AlreadyDone(String),
    /// The rollout cannot take it.
    Refuse(String),
    /// No rollout to act on (exit code 2, as `wait`).
    NotManaged(String),
}

impl Plan {
    pub fn exit_code(&self) -> u8 {
        match self {
            Plan::Request { .. } | Plan::AlreadyRequested | Plan::AlreadyDone(_) => 0,
            Plan::Refuse(_) => 1,
            Plan::NotManaged(_) => 2,
        }
    }
}

/// Decides from one read of the Deployment; requests exactly what the analyzer would take
/// (`Action::applies_in`), so a refused action is never left on the object to be ignored.
pub fn plan(action: Action, ns: &str, name: &str, d: Option<&Deployment>) -> Plan {
    let Some(d) = d else {
        return Plan::NotManaged(format!("deployment {ns}/{name} not found"));
    };
    let empty = BTreeMap::new();
    let annotations = d.metadata.annotations.as_ref().unwrap_or(&empty);
    let state = match RolloutState::from_annotations(annotations) {
        Ok(s) => s,
        Err(e) => {
            return Plan::NotManaged(format!(
                "deployment {ns}/{name} has no canary-gate rollout to {} ({e})",
                action.as_str()
            ))
        }
    };
    if annotations.get(ann::ACTION).and_then(|a| Action::parse(a)) == Some(action) {
        return Plan::AlreadyRequested;
    }
    let phase = state.phase;
    if let (Action::Approve, Some(who)) = (action, &state.hooks.promotion_confirmed_by) {
        return Plan::AlreadyDone(format!("promotion already approved by {who}"));
    }
    if action.applies_in(phase) {
        return Plan::Request {
            phase,
            weight: state.weight,
        };
    }
    let revision = &state.canary_revision;
    match (action, phase) {
        (Action::Promote, Phase::Promoting) => {
            Plan::AlreadyDone(format!("revision {revision} is already being promoted"))
        }
        (Action::Abort, Phase::Failed) => {
            Plan::AlreadyDone(format!("revision {revision} is already rolled back"))
        }
        (Action::Pause, Phase::Paused) => Plan::AlreadyDone("already paused".into()),
        (Action::Approve, Phase::Promoting) => {
            Plan::AlreadyDone(format!("revision {revision} is already being promoted"))
        }
        (Action::Resume, Phase::Pending | Phase::Progressing) => {
            Plan::AlreadyDone(format!("not paused: the rollout is {phase}"))
        }
        (_, Phase::Succeeded | Phase::Failed | Phase::Cancelled) => Plan::Refuse(format!(
            "the rollout of revision {revision} already ended {phase}; apply a new version to start another"
        )),
        (Action::Pause | Action::Resume, Phase::Promoting) => Plan::Refuse(format!(
            "revision {revision} is being promoted: the stable Deployment is rolling it out; abort to roll back instead"
        )),
        (action, phase) => Plan::Refuse(format!("{} does not apply in phase {phase}", action.as_str())),
    }
}

/// Reads, decides and writes with the resourceVersion read, so a concurrent change is never
/// overwritten: on a conflict it reads and decides again.
pub async fn act<C: Cluster>(
    cluster: &C,
    action: Action,
    ns: &str,
    name: &str,
) -> Result<Plan, KubeError> {
    for _ in 0..5 {
        let d = match cluster.get_deployment(ns, name).await {
            Ok(d) => Some(d),
            Err(KubeError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let decided = plan(action, ns, name, d.as_ref());
        let (Plan::Request { .. }, Some(d)) = (&decided, &d) else {
            return Ok(decided);
        };
        let rv = d.metadata.resource_version.clone().unwrap_or_default();
        let annotations =
            BTreeMap::from([(ann::ACTION.to_string(), Some(action.as_str().to_string()))]);
        match cluster
            .patch_deployment(ns, name, &rv, annotations, None)
            .await
        {
            Ok(()) => return Ok(decided),
            Err(KubeError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(KubeError::Conflict)
}

/// After a request: polls until the analyzer cleared the annotation, and returns the
/// rollout's phase and message then (`None`: not taken within `patience`).
pub async fn taken<C: Cluster>(
    cluster: &C,
    ns: &str,
    name: &str,
    patience: Duration,
    poll: Duration,
) -> Option<RolloutState> {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(poll).await;
        let Ok(d) = cluster.get_deployment(ns, name).await else {
            continue;
        };
        let empty = BTreeMap::new();
        let annotations = d.metadata.annotations.as_ref().unwrap_or(&empty);
        if !annotations.contains_key(ann::ACTION) {
            return RolloutState::from_annotations(annotations).ok();
        }
    }
    None
}

pub async fn run(action: Action, args: ActArgs) -> anyhow::Result<u8> {
    let (cluster, default_ns) = args.kube.open().await?;
    let (ns, name) = parse_target(&args.target, args.kube.namespace.as_deref(), &default_ns)?;
    let verb = action.as_str();
    let decided = act(&cluster, action, &ns, &name)
        .await
        .map_err(|e| anyhow::anyhow!("{verb} {ns}/{name}: {e}"))?;
    let mut out = std::io::stdout();
    match &decided {
        Plan::Request { phase, weight } => {
            writeln!(
                out,
                "{ns}/{name}: {verb} requested ({phase} at {weight} %, set {}={verb})",
                ann::ACTION
            )?;
            if !args.wait_for_analyzer.is_zero() {
                match taken(&cluster, &ns, &name, args.wait_for_analyzer, Duration::from_millis(500)).await {
                    Some(s) => writeln!(out, "{ns}/{name}: {} at {} %: {}", s.phase, s.weight, s.message)?,
                    None => writeln!(
                        out,
                        "{ns}/{name}: the analyzer has not taken it within {}; it will at its next tick (is canary-gate running, with a leader?)",
                        humantime::format_duration(args.wait_for_analyzer)
                    )?,
                }
            }
        }
        Plan::AlreadyRequested => writeln!(
            out,
            "{ns}/{name}: {verb} already requested; waiting for the analyzer (nothing changed)"
        )?,
        Plan::AlreadyDone(why) => writeln!(out, "{ns}/{name}: nothing to do: {why}")?,
        Plan::Refuse(why) | Plan::NotManaged(why) => {
            writeln!(std::io::stderr(), "{ns}/{name}: cannot {verb}: {why}")?
        }
    }
    Ok(decided.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(phase: Option<Phase>, pending: Option<Action>) -> Deployment {
        let mut annotations = BTreeMap::new();
        if let Some(phase) = phase {
            let mut s = RolloutState::pending(
                "25f52b04b8".into(),
                "2b5095476a".into(),
                "2026-12-01T10:00:00Z".parse().expect("ts"),
            );
            s.phase = phase;
            s.weight = 30;
            annotations.extend(
                s.to_annotations()
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
            );
        }
        if let Some(a) = pending {
            annotations.insert(ann::ACTION.to_string(), a.as_str().to_string());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "shop", "resourceVersion": "7", "annotations": annotations}
        }))
        .expect("deployment")
    }

    const ACTIONS: [Action; 5] = [
        Action::Promote,
        Action::Abort,
        Action::Pause,
        Action::Resume,
        Action::Approve,
    ];

    #[test]
    fn requests_exactly_what_the_analyzer_takes() {
        for action in ACTIONS {
            for phase in Phase::ALL {
                let p = plan(
                    action,
                    "shop",
                    "podinfo",
                    Some(&deployment(Some(phase), None)),
                );
                assert_eq!(
                    matches!(p, Plan::Request { .. }),
                    action.applies_in(phase),
                    "{} in {phase}: {p:?}",
                    action.as_str()
                );
                if !matches!(p, Plan::Request { .. }) {
                    assert!(matches!(p, Plan::AlreadyDone(_) | Plan::Refuse(_)), "{p:?}");
                }
            }
        }
    }

    #[test]
    fn repetition_is_a_no_op_and_ended_rollouts_are_refused() {
        let p = |a, phase, pending| plan(a, "shop", "podinfo", Some(&deployment(phase, pending)));
        assert_eq!(
            p(
                Action::Promote,
                Some(Phase::Progressing),
                Some(Action::Promote)
            ),
            Plan::AlreadyRequested
        );
        assert!(matches!(
            p(Action::Promote, Some(Phase::Promoting), None),
            Plan::AlreadyDone(_)
        ));
        assert!(matches!(
            p(Action::Abort, Some(Phase::Failed), None),
            Plan::AlreadyDone(_)
        ));
        assert!(matches!(
            p(Action::Pause, Some(Phase::Paused), None),
            Plan::AlreadyDone(_)
        ));
        let Plan::Refuse(why) = p(Action::Promote, Some(Phase::Succeeded), None) else {
            panic!("promote on Succeeded is refused")
        };
        assert!(why.contains("already ended Succeeded"), "{why}");
        assert_eq!(
            p(Action::Promote, Some(Phase::Succeeded), None).exit_code(),
            1
        );
        // A different pending action is replaced by the newer one.
        assert_eq!(
            p(Action::Abort, Some(Phase::Progressing), Some(Action::Pause)),
            Plan::Request {
                phase: Phase::Progressing,
                weight: 30
            }
        );
        let none = p(Action::Abort, None, None);
        assert!(
            matches!(none, Plan::NotManaged(_)) && none.exit_code() == 2,
            "{none:?}"
        );
        assert!(matches!(
            plan(Action::Abort, "shop", "x", None),
            Plan::NotManaged(_)
        ));
    }
}
