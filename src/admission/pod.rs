//! The few fields of a pod template the decisions look at (container names, images,
//! readiness probes, resource requests), parsed from the template's raw JSON only when a
//! decision needs them.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodTemplate {
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// Present and not null; what it checks is the kubelet's business.
    #[serde(default)]
    pub readiness_probe: Option<IgnoredAny>,
    #[serde(default)]
    pub resources: Resources,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resources {
    /// Resource name → whether a (non-null) quantity is set.
    #[serde(default)]
    pub requests: BTreeMap<String, Option<IgnoredAny>>,
}

impl Container {
    pub fn requests(&self, resource: &str) -> bool {
        matches!(self.resources.requests.get(resource), Some(Some(_)))
    }
}

impl PodTemplate {
    /// The apiserver only sends templates that passed its schema, so an error here means a
    /// hand-made review: `/validate` refuses to check it, `/mutate` describes the change by
    /// revisions instead.
    pub fn parse(template: &RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(template.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PodTemplate, serde_json::Error> {
        PodTemplate::parse(&RawValue::from_string(text.into()).expect("raw"))
    }

    #[test]
    fn reads_names_images_probes_and_requests() {
        let t = parse(
            r#"{"metadata":{"labels":{"app":"x"}},"spec":{"containers":[
                {"name":"app","image":"i:1","readinessProbe":{"httpGet":{"port":80}},
                 "resources":{"requests":{"cpu":"10m","memory":null}}},
                {"name":"side","image":"s:2","readinessProbe":null}]}}"#,
        )
        .expect("parses");
        let [app, side] = &t.spec.containers[..] else {
            panic!("{t:?}")
        };
        assert_eq!((app.name.as_str(), app.image.as_str()), ("app", "i:1"));
        assert!(app.readiness_probe.is_some());
        assert!(app.requests("cpu"));
        assert!(!app.requests("memory"), "a null quantity is not set");
        assert!(side.readiness_probe.is_none(), "a null probe is no probe");
        assert!(!side.requests("cpu"));
    }

    #[test]
    fn a_template_of_the_wrong_shape_is_an_error() {
        assert!(parse(r#"{"spec":{"containers":[{"image":42}]}}"#).is_err());
        assert!(parse(r#"{"spec":{"containers":{}}}"#).is_err());
        assert!(parse("42").is_err());
    }
}
