//! Admission decisions. Pure: a decoded request and the configuration in, a decision out.
//! The HTTP layer (`crate::server`) only decodes, calls these and encodes.

pub mod mutate;
pub mod pod;
pub mod policy;
pub mod review;
pub mod revision;
pub mod validate;

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::settings::Defaults;
use policy::Policies;

/// What the webhook needs to decide.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub defaults: Defaults,
    pub manage_by_default: bool,
    /// The identity of canary-gate's own ServiceAccount: the only one that may change managed
    /// objects during a rollout, and whose writes pass the webhooks untouched.
    pub controller_username: String,
    pub policies: Policies,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            defaults: Defaults::default(),
            manage_by_default: false,
            controller_username: "system:serviceaccount:canary-gate:canary-gate".into(),
            policies: Policies::default(),
        }
    }
}

/// Captured reviews for the unit tests next to the decisions.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> review::Request {
    let path = format!(
        "{}/tests/fixtures/admission/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    review::decode(&body).unwrap_or_else(|e| panic!("{path} does not decode: {e}"))
}

/// Rewrites an object's pod template in a test, as a client would have sent it.
#[cfg(test)]
pub(crate) fn edit_template(obj: &mut review::Object, edit: impl FnOnce(&mut serde_json::Value)) {
    let spec = obj.spec.get_or_insert_with(Default::default);
    let mut t: serde_json::Value = spec
        .template
        .as_ref()
        .map(|raw| serde_json::from_str(raw.get()).expect("template"))
        .unwrap_or_default();
    edit(&mut t);
    spec.template = Some(serde_json::value::to_raw_value(&t).expect("raw"));
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// The object's `canary-gate.io/` annotations (the only ones decoded).
pub(crate) fn annotations(obj: &review::Object) -> &BTreeMap<String, String> {
    obj.metadata.annotations.as_ref().unwrap_or(&EMPTY)
}

pub(crate) fn labels(obj: &review::Object) -> &BTreeMap<String, String> {
    obj.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

pub(crate) fn template(obj: &review::Object) -> Option<&RawValue> {
    obj.spec.as_ref()?.template.as_deref()
}

pub(crate) fn is_paused(obj: &review::Object) -> bool {
    obj.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// The group and kind of the object under review, e.g. `("apps", "Deployment")`.
pub(crate) fn group_kind(req: &review::Request) -> (&str, &str) {
    (req.kind.group.as_str(), req.kind.kind.as_str())
}
