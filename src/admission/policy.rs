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
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            require_readiness_probe: true,
            forbid_latest_tag: true,
            require_resource_requests: false,
            allow_custom_gates: true,
        }
    }
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
        };
        assert!(violations(&none, &t).is_empty());
    }

    #[test]
    fn digests_and_ports_are_not_latest() {
        assert!(!uses_latest("app@sha256:abc"));
        assert!(uses_latest("registry:5000/app"));
        assert!(!uses_latest("registry:5000/app:v1"));
    }
}
