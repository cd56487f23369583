//! Which cluster and which Deployment a command talks to, named the way kubectl users name
//! them: `NAMESPACE/DEPLOYMENT`, or `DEPLOYMENT` with `-n` or the context's namespace.

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::kube::{connect, ConnectError, KubeCluster};
use crate::metrics::Metrics;

/// The kubectl flags every command honours (kubectl does not pass its own to a plugin).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Cluster (as kubectl)")]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the
    /// pod's ServiceAccount).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Timeout of one Kubernetes API call.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
}

impl KubeArgs {
    /// A cluster client for one command, and the context's default namespace. The Deployment
    /// watch the analyzer runs is not started: commands read single objects.
    pub async fn open(&self) -> Result<(KubeCluster, String), ConnectError> {
        let (client, namespace) =
            connect(self.kubeconfig.as_deref(), self.context.as_deref()).await?;
        let (cluster, _unstarted_watch) = KubeCluster::start(
            client,
            crate::cluster::limit::KubeLimits {
                timeout: self.request_timeout,
                ..Default::default()
            },
            Metrics::new(),
            "canary-gate-cli".into(),
            |_| None,
        );
        Ok((cluster, namespace))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} is not NAMESPACE/DEPLOYMENT or DEPLOYMENT")]
    Malformed(String),
    #[error("{target:?} names namespace {named:?} but --namespace is {flag:?}; give one")]
    Conflicting {
        target: String,
        named: String,
        flag: String,
    },
}

/// `(namespace, name)` from the command's argument, `--namespace` and the context's default.
pub fn parse_target(
    target: &str,
    namespace_flag: Option<&str>,
    default_namespace: &str,
) -> Result<(String, String), TargetError> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let malformed = || TargetError::Malformed(target.to_string());
    // kubectl's own spellings of the resource, so a name copied from its output works.
    let bare = ["deployment.apps/", "deployment/", "deploy/"]
        .iter()
        .find_map(|prefix| target.strip_prefix(prefix))
        .unwrap_or(target);
    let (namespace, name) = match bare.split_once('/') {
        Some((ns, name)) => {
            if let Some(flag) = namespace_flag.filter(|f| *f != ns) {
                return Err(TargetError::Conflicting {
                    target: target.into(),
                    named: ns.into(),
                    flag: flag.into(),
                });
            }
            (ns, name)
        }
        None => (namespace_flag.unwrap_or(default_namespace), bare),
    };
    if !valid(namespace) || !valid(name) || name.contains('/') {
        return Err(malformed());
    }
    Ok((namespace.into(), name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_like_kubectl() {
        let ok = |t, flag, def| parse_target(t, flag, def).expect("valid target");
        assert_eq!(
            ok("shop/podinfo", None, "default"),
            ("shop".into(), "podinfo".into())
        );
        assert_eq!(
            ok("podinfo", Some("shop"), "default"),
            ("shop".into(), "podinfo".into())
        );
        assert_eq!(
            ok("podinfo", None, "team-a"),
            ("team-a".into(), "podinfo".into())
        );
        assert_eq!(
            ok("shop/podinfo", Some("shop"), "x"),
            ("shop".into(), "podinfo".into())
        );
        assert_eq!(
            ok("deployment.apps/podinfo", Some("shop"), "x").1,
            "podinfo"
        );
    }

    #[test]
    fn bad_targets_are_named() {
        assert!(matches!(
            parse_target("shop/podinfo", Some("other"), "default"),
            Err(TargetError::Conflicting { .. })
        ));
        for bad in ["", "/podinfo", "shop/", "a/b/c", "Shop/podinfo", "pod info"] {
            assert_eq!(
                parse_target(bad, None, "default"),
                Err(TargetError::Malformed(bad.into())),
                "{bad:?}"
            );
        }
    }
}
