//! `canary-gate status`: every rollout with phase, weight, last gate values and age.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;

use super::target::KubeArgs;
use crate::rollout::state::RolloutState;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Redraw every 2 seconds until interrupted.
    #[arg(long, short = 'w')]
    pub watch: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The last gate values and the message, as `status` and `wait` show them.
pub fn detail(s: &RolloutState) -> String {
    if s.gates.is_empty() {
        s.message.clone()
    } else {
        format!("{} — {}", s.gates, s.message)
    }
}

/// `[#####.....]` for a weight out of 100.
pub fn bar(weight: u32, width: usize) -> String {
    let filled = (weight.min(100) as usize * width).div_ceil(100);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn age(since: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(since).as_secs().max(0) as u64;
    let d = Duration::from_secs(if secs > 3600 { secs / 60 * 60 } else { secs });
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// The table for a set of Deployments; those without a recorded rollout are left out.
pub fn render(deployments: &[Deployment], now: Timestamp) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_string(),
        "DEPLOYMENT".into(),
        "PHASE".into(),
        "WEIGHT".into(),
        "FAILED".into(),
        "AGE".into(),
        "GATES / MESSAGE".into(),
    ]];
    let mut sorted: Vec<&Deployment> = deployments.iter().collect();
    sorted.sort_by_key(|d| (d.metadata.namespace.clone(), d.metadata.name.clone()));
    for d in sorted {
        let annotations: BTreeMap<String, String> =
            d.metadata.annotations.clone().unwrap_or_default();
        let Ok(s) = RolloutState::from_annotations(&annotations) else {
            continue;
        };
        rows.push([
            d.metadata.namespace.clone().unwrap_or_default(),
            d.metadata.name.clone().unwrap_or_default(),
            s.phase.to_string(),
            format!("{} {:>3}%", bar(s.weight, 10), s.weight),
            s.failed_checks.to_string(),
            age(s.started_at, now),
            detail(&s),
        ]);
    }
    if rows.len() == 1 {
        return "no rollouts recorded (annotate a Deployment with canary-gate.io/enabled=\"true\" and apply a new version)\n".into();
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let judged = rows.iter().skip(1).any(|r| r[2] == "Progressing");
    let mut out = String::new();
    for r in rows {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}  ", r[c], width = w));
        }
        out.push_str(&r[6]);
        out.push('\n');
    }
    if judged {
        out.push_str("Progressing: one step per interval while the gates stay green; decisive evidence rolls back at any moment between checks.\n");
    }
    out
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (cluster, _) = args.kube.open().await?;
    // An overview: every namespace unless --namespace names one.
    loop {
        let list = cluster
            .list_deployments(args.kube.namespace.as_deref())
            .await?;
        let table = render(&list, Timestamp::now());
        // `write!` instead of `print!`: a closed pipe (`| head`) is an error, not a panic.
        let mut out = std::io::stdout().lock();
        if args.watch {
            write!(out, "\x1b[2J\x1b[H{table}")?;
        } else {
            write!(out, "{table}")?;
        }
        out.flush()?;
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations as ann;

    #[test]
    fn bars() {
        assert_eq!(bar(0, 10), "[..........]");
        assert_eq!(bar(30, 10), "[###.......]");
        assert_eq!(bar(100, 10), "[##########]");
    }

    #[test]
    fn renders_rollouts_only() {
        let now: Timestamp = "2026-11-27T10:05:00Z".parse().expect("ts");
        let mut state = RolloutState::pending(
            "new".into(),
            "old".into(),
            "2026-11-27T10:00:00Z".parse().expect("ts"),
        );
        state.phase = crate::rollout::state::Phase::Progressing;
        state.weight = 30;
        state.gates = "success=99.90% p99=120ms".into();
        let annotations: BTreeMap<String, String> = state
            .to_annotations()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        let managed: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "shop", "annotations": annotations}
        }))
        .expect("d");
        let plain: Deployment = serde_json::from_value(serde_json::json!({"metadata": {"name": "other", "namespace": "shop", "annotations": {ann::ENABLED: "true"}}})).expect("d");
        let table = render(&[managed, plain], now);
        assert!(table.contains("podinfo"), "{table}");
        assert!(!table.contains("other"), "{table}");
        assert!(table.contains("Progressing"));
        assert!(table.contains("[###.......]  30%"), "{table}");
        assert!(table.contains("5m"), "{table}");
        assert!(table.contains("success=99.90% p99=120ms"));
        assert!(table.contains("rolls back at any moment"), "{table}");
        assert!(render(&[], now).starts_with("no rollouts"));
    }
}
