//! Every JSON log line is valid JSON with unique keys at every level. Log pipelines that
//! reject duplicate keys (Elasticsearch does) would drop a line with two `message` keys, so
//! this installs the binary's own log subscriber (`cli::init_logs`, JSON) and runs a full demo:
//! admissions (a release started, a denial, a malformed body), a healthy rollout promoted and
//! a broken one rolled back against the real Prometheus. Then it reads back every line.

mod common;
mod support;

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canary_gate::cli::{init_logs, LogFormat};
use canary_gate::rollout::state::Phase;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use support::scenario::{fixture_path, run_rollout, Env};
use support::Profile;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Any JSON value; deserializing it fails on an object with a key twice, at any depth.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

#[test]
fn the_checker_catches_duplicates_at_any_depth() {
    let ok = |s: &str| serde_json::from_str::<UniqueKeys>(s).is_ok();
    assert!(ok(r#"{"a":1,"b":{"c":[{"d":1},{"d":2}]}}"#));
    assert!(!ok(r#"{"fields":{"message":"x","message":"y"}}"#));
    assert!(!ok(r#"{"a":[{"b":1,"b":2}]}"#));
    assert!(!ok(r#"{"a":1,"a":1}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_log_line_of_a_demo_has_unique_keys() {
    let capture = Capture::default();
    let sink = capture.clone();
    init_logs(LogFormat::Json, false, move || sink.clone()).expect("first subscriber");

    // Admissions: a release started, a denial (max-weight 150), a malformed body.
    let server = common::TestServer::start().await;
    let start = std::fs::read(fixture_path("21-managed-update-image-kubectl-apply.mutate"))
        .expect("fixture");
    assert_eq!(server.post("/mutate?timeout=10s", start).await.status, 200);
    let denied =
        std::fs::read(fixture_path("26-managed-update-bad-max-weight.validate")).expect("fixture");
    assert_eq!(
        server.post("/validate?timeout=10s", denied).await.status,
        200
    );
    // Answered with an AdmissionReview and a 400 (tests/webhook.rs); here only its log line counts.
    server.post("/mutate", "{not json").await;
    server.stop().await;

    // A healthy rollout promoted, a broken one rolled back.
    let env = Env::start().await.expect("prometheus + exporter");
    let fast = [("canary-gate.io/interval", "2s")];
    let healthy = Profile {
        error_rate: 0.001,
        latency_p50_ms: 40.0,
        latency_p99_ms: 120.0,
    };
    let broken = Profile {
        error_rate: 0.10,
        ..healthy
    };
    let good = run_rollout(
        &env,
        "shop",
        &fast,
        healthy,
        healthy,
        true,
        Duration::from_secs(90),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(good.phase, Phase::Succeeded, "{}", good.state.message);
    let bad = run_rollout(
        &env,
        "team-b",
        &fast,
        healthy,
        broken,
        false,
        Duration::from_secs(90),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(bad.phase, Phase::Failed, "{}", bad.state.message);

    let bytes = capture.0.lock().expect("capture").clone();
    let text = String::from_utf8(bytes).expect("log lines are UTF-8");
    let mut messages: Vec<(String, Value)> = Vec::new();
    for line in text.lines() {
        serde_json::from_str::<UniqueKeys>(line)
            .unwrap_or_else(|e| panic!("log line with duplicate keys or not JSON ({e}): {line}"));
        let v: Value = serde_json::from_str(line).expect("JSON");
        let message = v["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fixed message: {line}"))
            .to_string();
        messages.push((message, v));
    }
    // The lines that carried two `message` keys before are here, with their text kept.
    fn with<'a>(messages: &'a [(String, Value)], m: &'a str) -> impl Iterator<Item = &'a Value> {
        messages
            .iter()
            .filter(move |(msg, _)| msg == m)
            .map(|(_, v)| v)
    }
    let events: Vec<&Value> = with(&messages, "rollout event").collect();
    assert!(events.len() >= 6, "rollout events logged: {}", events.len());
    assert!(
        events.iter().any(|v| v["fields"]["reason"] == "RolledBack"
            && v["fields"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("rolled back"))),
        "the rollback event keeps its text"
    );
    assert!(
        with(&messages, "denied").any(|v| v["fields"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max-weight"))),
        "the denial keeps its reason"
    );
    assert!(
        with(&messages, "patched").next().is_some(),
        "the release start is logged"
    );
}
