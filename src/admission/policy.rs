//! Rollout policies the platform team switches on in chart values. Checked on managed
//! Deployments when they are created or their pod template changes.

use serde_json::Value;

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
pub fn violations(policies: &Policies, template: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let containers = template
        .pointer("/spec/containers")
        .and_then(Value::as_array);
    for (i, c) in containers.into_iter().flatten().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
        let path = format!("spec.template.spec.containers[{i}] ({name})");
        if policies.require_readiness_probe && c.get("readinessProbe").is_none_or(Value::is_null) {
            out.push(format!(
                "{path}: readinessProbe is required so the canary only gets traffic when ready; add spec.template.spec.containers[{i}].readinessProbe"
            ));
        }
        if policies.forbid_latest_tag {
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            if uses_latest(image) {
                out.push(format!(
                    "{path}: image {image:?} has no fixed version (`:latest` or no tag), so stable and canary could run the same moving target; pin a tag or digest"
                ));
            }
        }
        if policies.require_resource_requests {
            for resource in ["cpu", "memory"] {
                let set = c
                    .pointer(&format!("/resources/requests/{resource}"))
                    .is_some_and(|v| !v.is_null());
                if !set {
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
        let t = json!({"spec": {"containers": [{"name": "app", "image": "r:5000/app:1.2", "readinessProbe": {"httpGet": {"port": 80}}, "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]}});
        assert!(violations(&all(), &t).is_empty());
    }

    #[test]
    fn each_policy_names_container_and_field() {
        let t = json!({"spec": {"containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "x:latest", "readinessProbe": {}}]}});
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
        let t = json!({"spec": {"containers": [{"name": "app", "image": "nginx"}]}});
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
