//! Rollout state and settings as parsed from a Deployment's annotations, kept until the
//! Deployment changes. Every tick looks at every rollout; at 10,000 rollouts parsing ~30
//! annotations (timestamps, numbers, durations) per rollout per tick cost more CPU than
//! everything else the analyzer does, although almost none of them had changed. The
//! resourceVersion says when they have.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::Deployment;

use crate::rollout::state::RolloutState;
use crate::settings::{Defaults, Settings};

/// What a Deployment's annotations hold: `None` when there is no usable rollout state.
pub type Parsed = Option<(Arc<RolloutState>, Arc<Settings>)>;

struct Entry {
    resource_version: String,
    parsed: Parsed,
}

/// namespace → name → the last parse. Two levels so that a lookup borrows the names.
#[derive(Default)]
pub struct ParseCache {
    inner: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

impl ParseCache {
    /// The rollout state and settings of `d`, parsed again only if it changed since the last
    /// call (an object without a resourceVersion is parsed every time).
    pub fn get(&self, d: &Deployment, defaults: &Defaults) -> Parsed {
        let meta = &d.metadata;
        let (ns, name) = (
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        let Some(rv) = meta.resource_version.as_deref() else {
            return parse(d, defaults);
        };
        if let Some(e) = self.lock().get(ns).and_then(|m| m.get(name)) {
            if e.resource_version == rv {
                return e.parsed.clone();
            }
        }
        // Parsed outside the lock: concurrent ticks look up other rollouts meanwhile.
        let parsed = parse(d, defaults);
        self.lock().entry(ns.to_string()).or_default().insert(
            name.to_string(),
            Entry {
                resource_version: rv.to_string(),
                parsed: parsed.clone(),
            },
        );
        parsed
    }

    /// Forget the Deployments for which `keep(namespace, name)` is false (deleted ones).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut inner = self.lock();
        inner.retain(|ns, names| {
            names.retain(|name, _| keep(ns, name));
            !names.is_empty()
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Entry>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }
}

fn parse(d: &Deployment, defaults: &Defaults) -> Parsed {
    let empty = Default::default();
    let annotations = d.metadata.annotations.as_ref().unwrap_or(&empty);
    let state = RolloutState::from_annotations(annotations).ok()?;
    // A Deployment that opted out keeps its last state; it is still worked on so that the
    // cleanup of a cancelled rollout happens (once: then the memo says it is in sync).
    let settings = Settings::from_annotations(defaults, annotations).unwrap_or_else(|errors| {
        tracing::warn!(%errors, "invalid settings on a running rollout; using defaults");
        Settings::from(defaults)
    });
    Some((Arc::new(state), Arc::new(settings)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations as ann;
    use crate::rollout::state::Phase;

    fn deployment(rv: Option<&str>, annotations: &[(&str, String)]) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.namespace = Some("shop".into());
        d.metadata.name = Some("web".into());
        d.metadata.resource_version = rv.map(str::to_string);
        d.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        );
        d
    }

    fn state(weight: u32) -> Vec<(&'static str, String)> {
        let mut s = RolloutState::pending("c1".into(), "s1".into(), jiff::Timestamp::UNIX_EPOCH);
        s.phase = Phase::Progressing;
        s.weight = weight;
        s.to_annotations()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }

    #[test]
    fn parses_again_only_when_the_resource_version_changes() {
        let defaults = Defaults::default();
        let cache = ParseCache::default();
        let first = cache.get(&deployment(Some("1"), &state(10)), &defaults);
        assert_eq!(first.as_ref().map(|(s, _)| s.weight), Some(10));
        // Same resourceVersion: the kept parse, even though the annotations differ (they
        // cannot, for a real object; this shows that no parse happened).
        let kept = cache.get(&deployment(Some("1"), &state(20)), &defaults);
        assert!(Arc::ptr_eq(&first.unwrap().0, &kept.unwrap().0));
        let changed = cache.get(&deployment(Some("2"), &state(20)), &defaults);
        assert_eq!(changed.map(|(s, _)| s.weight), Some(20));
        // Without a resourceVersion there is nothing to key on.
        let bare = cache.get(&deployment(None, &state(30)), &defaults);
        assert_eq!(bare.map(|(s, _)| s.weight), Some(30));
    }

    #[test]
    fn no_state_is_remembered_too_and_deleted_ones_are_forgotten() {
        let defaults = Defaults::default();
        let cache = ParseCache::default();
        let plain = deployment(Some("7"), &[(ann::ENABLED, "true".into())]);
        assert!(cache.get(&plain, &defaults).is_none());
        assert_eq!(cache.len(), 1);
        cache.retain(|ns, name| (ns, name) != ("shop", "web"));
        assert_eq!(cache.len(), 0);
    }
}
