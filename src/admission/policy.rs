//! Rollout policies the platform team switches on in chart values. Checked on managed
//! Deployments when they are created or their pod template changes.

use super::pod::PodTemplate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    pub require_readiness_probe: bool,
    pub forbid_latest_tag: bool,
    pub require_resource_requests: bool,
    /// Custom PromQL gates can read any series in Prometheus and report it: switchable.
    pub allow_custom_gates: bool,
    /// Hooks make canary-gate send requests inside the cluster on a namespace user's behalf.
    pub allow_hooks: bool,
    /// When not empty, hook URLs must start with one of these.
    pub hook_url_prefixes: Vec<String>,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            require_readiness_probe: true,
            forbid_latest_tag: true,
            require_resource_requests: false,
            allow_custom_gates: true,
            allow_hooks: true,
            hook_url_prefixes: Vec::new(),
        }
    }
}

/// Hooks this cluster's policy does not allow, each naming the annotation and the rule.
pub fn hook_violations(policies: &Policies, hooks: &[crate::rollout::hooks::Hook]) -> Vec<String> {
    let prefix = crate::annotations::HOOK_PREFIX;
    hooks
        .iter()
        .filter_map(|h| {
            if !policies.allow_hooks {
                return Some(format!(
                    "{prefix}{}: hooks are disabled on this cluster (chart value policies.allowHooks)",
                    h.name
                ));
            }
            let allowed = policies.hook_url_prefixes.is_empty()
                || policies.hook_url_prefixes.iter().any(|p| h.url.starts_with(p.as_str()));
            (!allowed).then(|| {
                format!(
                    "{prefix}{}: url {:?} does not start with an allowed prefix ({}; chart value policies.hookUrlPrefixes)",
                    h.name,
                    h.url,
                    policies.hook_url_prefixes.join(", ")
                )
            })
        })
        .collect()
}

/// Every violation in the template, each naming the container, the field and the fix.
pub fn violations(policies: &Policies, template: &PodTemplate) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in template.spec.containers.iter().enumerate() {
        let name = if c.name.is_empty() { "?" } else { &c.name };
        let path = format!("spec.template.spec.containers[{i}] ({name})");
        if policies.require_readiness_probe && c.readiness_probe.is_none() {
            out.push(format!(
                "{path}: readinessProbe is required so the canary only gets traffic when ready; add spec.template.spec.containers[{i}].readinessProbe"
            ));
        }
        if policies.forbid_latest_tag && uses_latest(&c.image) {
            out.push(format!(
                "{path}: image {:?} has no fixed version (`:latest` or no tag), so stable and canary could run the same moving target; pin a tag or digest",
                c.image
            ));
        }
        if policies.require_resource_requests {
            for resource in ["cpu", "memory"] {
                if !c.requests(resource) {
                    out.push(format!(
                        "{path}: resources.requests.{resource} is required; set spec.template.spec.containers[{i}].resources.requests.{resource}"
                    ));
                }
            }
        }
    }
    out
}

fn uses_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodTemplate {
        serde_json::from_value(v).expect("pod template")
    }

    fn all() -> Policies {
        Policies {
            require_readiness_probe: true,
            forbid_latest_tag: true,
            require_resource_requests: true,
            allow_custom_gates: true,
            ..Policies::default()
        }
    }

    #[test]
    fn a_compliant_template_has_no_violations() {
        let t = pod(
            json!({"spec": {"containers": [{"name": "app", "image": "r:5000/app:1.2", "readinessProbe": {"httpGet": {"port": 80}}, "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]}}),
        );
        assert!(violations(&all(), &t).is_empty());
    }

    #[test]
    fn each_policy_names_container_and_field() {
        let t = pod(
            json!({"spec": {"containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "x:latest", "readinessProbe": {}}]}}),
        );
        let v = violations(&all(), &t);
        assert_eq!(v.len(), 1 + 1 + 2 + 1 + 2, "{v:#?}");
        assert!(
            v[0].starts_with("spec.template.spec.containers[0] (app): readinessProbe is required")
        );
        assert!(v
            .iter()
            .any(|m| m.contains("containers[1] (side): image \"x:latest\"")));
        assert!(v.iter().any(|m| m.contains("resources.requests.memory")));
    }

    #[test]
    fn switched_off_policies_do_not_apply() {
        let t = pod(json!({"spec": {"containers": [{"name": "app", "image": "nginx"}]}}));
        let none = Policies {
            require_readiness_probe: false,
            forbid_latest_tag: false,
            require_resource_requests: false,
            allow_custom_gates: true,
            ..Policies::default()
        };
        assert!(violations(&none, &t).is_empty());
    }

    #[test]
    fn hooks_can_be_forbidden_or_limited_to_url_prefixes() {
        let hook = |url: &str| {
            crate::rollout::hooks::parse_hook(
                "smoke",
                &format!(r#"{{"type": "pre-rollout", "url": "{url}"}}"#),
            )
            .expect("valid hook")
        };
        let internal = hook("http://hooks.ci.svc.cluster.local/smoke");
        let external = hook("http://169.254.169.254/latest/meta-data");
        assert!(
            hook_violations(&Policies::default(), &[internal.clone(), external.clone()]).is_empty()
        );
        let off = Policies {
            allow_hooks: false,
            ..Policies::default()
        };
        let v = hook_violations(&off, std::slice::from_ref(&internal));
        assert!(
            v[0].contains("canary-gate.io/hook.smoke: hooks are disabled"),
            "{v:?}"
        );
        let limited = Policies {
            hook_url_prefixes: vec!["http://hooks.ci.svc.cluster.local/".into()],
            ..Policies::default()
        };
        assert!(hook_violations(&limited, &[internal]).is_empty());
        let v = hook_violations(&limited, &[external]);
        assert!(
            v[0].contains("does not start with an allowed prefix"),
            "{v:?}"
        );
    }

    #[test]
    fn digests_and_ports_are_not_latest() {
        assert!(!uses_latest("app@sha256:abc"));
        assert!(uses_latest("registry:5000/app"));
        assert!(!uses_latest("registry:5000/app:v1"));
    }
}
