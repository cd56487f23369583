//! Property tests over mutated captured AdmissionReviews (`tests/fixtures/admission/*.json`):
//! byte flips, truncations, JSON node replacements (random values, huge strings, deep
//! nesting), dropped keys and hostile `canary-gate.io/*` annotations go through
//! `review::decode`, both decisions and `review::encode` exactly as the HTTP layer chains them
//! (`src/server/http.rs`). Properties: no panic, no hang, every answer a well-formed
//! AdmissionReview (the uid echoed, `allowed` a bool), and every patch applies to the object
//! the apiserver sent and touches only `spec.paused` and `canary-gate.io/` annotations.
//!
//! Runs are deterministic: each property has a fixed seed and no failure-persistence file.
//! The real HTTP path (body limits, 400 on non-JSON) is covered by `tests/webhook.rs`.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use canary_gate::admission::mutate::{self, Mutation};
use canary_gate::admission::review::{self, Answer, DecodeError};
use canary_gate::admission::validate::{self, Validation};
use canary_gate::admission::WebhookConfig;
use canary_gate::annotations as ann;
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Map, Value};

/// Cases per property; the whole file stays well under 20 s in a debug build.
const CASES: u32 = 256;
const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";
/// One input must be answered within this (debug build, loaded CI machine): "no hang". The
/// time is linear in the body (a 4 MiB image takes ~1 s through the whole chain in debug).
const PER_INPUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Fixtures and counters

struct Fixture {
    name: String,
    bytes: Vec<u8>,
    json: Value,
}

fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission");
        let mut out: Vec<Fixture> = std::fs::read_dir(dir)
            .expect("fixture dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let bytes = std::fs::read(&p).expect("fixture");
                let json = serde_json::from_slice(&bytes).expect("fixture is JSON");
                Fixture {
                    name: p.file_name().unwrap_or_default().to_string_lossy().into(),
                    bytes,
                    json,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(
            out.len() >= 40,
            "expected the captured reviews, got {}",
            out.len()
        );
        out
    })
}

/// What the inputs exercised, so that a property cannot pass vacuously.
#[derive(Default)]
struct Stats {
    tried: AtomicUsize,
    not_json: AtomicUsize,
    malformed: AtomicUsize,
    decoded: AtomicUsize,
    patched: AtomicUsize,
    denied: AtomicUsize,
    /// Decoded although `kind`/`apiVersion` are not an AdmissionReview's (must stay 0).
    bad_types_echoed: AtomicUsize,
}

impl Stats {
    fn get(&self, c: &AtomicUsize) -> usize {
        let _ = self;
        c.load(Ordering::Relaxed)
    }

    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} inputs tried: {} not JSON, {} malformed reviews, {} decoded ({} patched, {} denied, {} with a bad kind/apiVersion echoed)",
            self.get(&self.tried),
            self.get(&self.not_json),
            self.get(&self.malformed),
            self.get(&self.decoded),
            self.get(&self.patched),
            self.get(&self.denied),
            self.get(&self.bad_types_echoed),
        );
    }
}

fn runner(seed: u8) -> TestRunner {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        // Shrinking a failure is useful; bounded so a failing run still ends quickly.
        max_shrink_iters: 512,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

fn now() -> Timestamp {
    "2026-11-27T12:00:00Z".parse().expect("ts")
}

// ---------------------------------------------------------------------------------------------
// The property: what the HTTP layer does with a body, checked at every step

/// Runs one body through decode → decide → encode like `server::http::decide` does, for both
/// endpoints, and checks every answer.
fn check_body(body: &[u8], stats: &Stats) -> Result<(), TestCaseError> {
    stats.tried.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let cfg = WebhookConfig::default();
    let request = match review::decode(body) {
        Ok(r) => r,
        Err(error) => {
            let uid = match &error {
                DecodeError::NotJson(_) => {
                    stats.not_json.fetch_add(1, Ordering::Relaxed);
                    // The HTTP layer answers 400 with this body.
                    String::new()
                }
                DecodeError::Malformed { uid, .. } => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    uid.clone()
                }
            };
            let answer = Answer::malformed(&uid, &error.to_string()).encode();
            check_answer(&answer, Some(V1), &uid, None, Some(false))?;
            prop_assert!(
                started.elapsed() < PER_INPUT,
                "slow: {:?}",
                started.elapsed()
            );
            return Ok(());
        }
    };
    stats.decoded.fetch_add(1, Ordering::Relaxed);
    // Only an AdmissionReview (v1 or v1beta1) decodes; the answer echoes its apiVersion.
    let types = (request.types.kind == "AdmissionReview"
        && [V1, V1BETA1].contains(&request.types.api_version.as_str()))
    .then_some(request.types.api_version.as_str());
    if types.is_none() {
        stats.bad_types_echoed.fetch_add(1, Ordering::Relaxed);
    }
    prop_assert!(
        types.is_some(),
        "decoded a review of kind {:?} in {:?}",
        request.types.kind,
        request.types.api_version
    );
    // The object exactly as the apiserver sent it: a patch must apply to that.
    let raw = object_as_sent(body);
    let roundtrip = review::object_json(request.object.as_ref());

    // /mutate
    let mutation = mutate::decide(&request, &cfg, now());
    prop_assert_eq!(
        &mutation,
        &mutate::decide(&request, &cfg, now()),
        "decision not deterministic"
    );
    let base = Answer::allow(&request);
    let response = match &mutation {
        Mutation::Pass { .. } => base,
        Mutation::Deny { message, .. } => {
            stats.denied.fetch_add(1, Ordering::Relaxed);
            prop_assert!(!message.is_empty(), "denial without a message");
            base.deny(message)
        }
        Mutation::Patch {
            patch, warnings, ..
        } => {
            stats.patched.fetch_add(1, Ordering::Relaxed);
            prop_assert!(
                request.object.is_some(),
                "a patch for a request without object"
            );
            for op in &patch.0 {
                let path = op.path().to_string();
                prop_assert!(
                    path == "/spec/paused"
                        || path == "/metadata/annotations"
                        || path.starts_with("/metadata/annotations/canary-gate.io~1")
                        || path == "/metadata/labels"
                        || path == "/metadata/labels/canary-gate.io~1rollout",
                    "patch touches {} (only spec.paused, canary-gate.io/ annotations and the rollout label may change)",
                    path
                );
            }
            base.with_patch(patch, warnings.clone())
                .map_err(|e| TestCaseError::fail(format!("patch does not serialise: {e}")))?
        }
    };
    let answer = response.encode();
    let expect_allowed = match &mutation {
        Mutation::Deny { .. } => Some(false),
        _ => Some(true),
    };
    for target in [raw.as_ref(), roundtrip.as_ref()].into_iter().flatten() {
        check_answer(&answer, types, &request.uid, Some(target), expect_allowed)?;
    }
    if raw.is_none() && roundtrip.is_none() {
        check_answer(&answer, types, &request.uid, None, expect_allowed)?;
    }

    // /validate
    let validation = validate::decide(&request, &cfg);
    let base = Answer::allow(&request);
    let (response, expect_allowed) = match &validation {
        Validation::Allow { .. } => (base, true),
        Validation::Deny { message, .. } => {
            prop_assert!(!message.is_empty(), "denial without a message");
            (base.deny(message), false)
        }
    };
    let answer = response.encode();
    let v = check_answer(&answer, types, &request.uid, None, Some(expect_allowed))?;
    prop_assert!(
        v["response"].get("patch").is_none(),
        "validate answered with a patch"
    );
    prop_assert!(
        started.elapsed() < PER_INPUT,
        "slow: {:?}",
        started.elapsed()
    );
    Ok(())
}

/// `request.object` as sent, for applying patches to. The decoder skips what it does not
/// read without building it, so an object nested deeper than `serde_json::Value` allows is
/// still decided; then the too-deep parts stand in as `null` (a patch must not touch them).
fn object_as_sent(body: &[u8]) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Review {
        request: Request,
    }
    #[derive(serde::Deserialize)]
    struct Request {
        object: Option<Box<RawValue>>,
    }
    fn pruned(raw: &RawValue, depth: usize) -> Value {
        if let Ok(v) = serde_json::from_str::<Value>(raw.get()) {
            return v;
        }
        if depth == 0 {
            return Value::Null;
        }
        if let Ok(map) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(raw.get()) {
            let map = map.into_iter().map(|(k, v)| (k, pruned(&v, depth - 1)));
            return Value::Object(map.collect());
        }
        match serde_json::from_str::<Vec<Box<RawValue>>>(raw.get()) {
            Ok(items) => Value::Array(items.iter().map(|v| pruned(v, depth - 1)).collect()),
            Err(_) => Value::Null,
        }
    }
    let object = serde_json::from_slice::<Review>(body)
        .ok()?
        .request
        .object?;
    Some(pruned(&object, 8)).filter(|o| !o.is_null())
}

/// A well-formed AdmissionReview answer; a patch in it applies to `object`.
fn check_answer(
    bytes: &[u8],
    api_version: Option<&str>,
    uid: &str,
    object: Option<&Value>,
    allowed: Option<bool>,
) -> Result<Value, TestCaseError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| TestCaseError::fail(format!("answer is not JSON: {e}")))?;
    if let Some(api_version) = api_version {
        prop_assert_eq!(&v["kind"], "AdmissionReview");
        prop_assert_eq!(&v["apiVersion"], api_version);
    }
    let r = &v["response"];
    prop_assert!(r["uid"].is_string(), "response.uid not a string: {}", r);
    prop_assert_eq!(r["uid"].as_str(), Some(uid), "uid not echoed");
    prop_assert!(
        r["allowed"].is_boolean(),
        "response.allowed not a bool: {}",
        r
    );
    if let Some(want) = allowed {
        prop_assert_eq!(r["allowed"].as_bool(), Some(want));
    }
    if r["allowed"] == false {
        prop_assert!(
            r["status"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "a denial without status.message: {}",
            r
        );
    }
    if let Some(p) = r.get("patch") {
        prop_assert_eq!(&r["allowed"], true, "a patch on a denial");
        prop_assert_eq!(&r["patchType"], "JSONPatch");
        let raw = patch_bytes(p)?;
        let patch: json_patch::Patch = serde_json::from_slice(&raw)
            .map_err(|e| TestCaseError::fail(format!("patch is not a JSON patch: {e}")))?;
        let Some(object) = object else {
            return Err(TestCaseError::fail("a patch but no object to apply it to"));
        };
        let mut target = object.clone();
        json_patch::patch(&mut target, &patch).map_err(|e| {
            TestCaseError::fail(format!("patch does not apply to the object sent: {e}"))
        })?;
    }
    Ok(v)
}

/// The apiserver decodes the `[]byte` patch from a base64 string or a JSON array of bytes
/// (kube-core writes the latter).
fn patch_bytes(p: &Value) -> Result<Vec<u8>, TestCaseError> {
    match p {
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| TestCaseError::fail(format!("patch is not base64: {e}"))),
        Value::Array(items) => items
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| TestCaseError::fail(format!("patch byte {b} is not a byte")))
            })
            .collect(),
        other => Err(TestCaseError::fail(format!(
            "patch is neither base64 nor a byte array: {other}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Strings that tend to break parsers of durations, numbers, timestamps, phases and PromQL.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "0",
            "-1",
            "1",
            "100",
            "101",
            "4294967295",
            "4294967296",
            "18446744073709551616",
            "-9223372036854775808",
            "1e309",
            "-1e309",
            "NaN",
            "inf",
            "-inf",
            "0.0000001",
            "0s",
            "1ns",
            "-5s",
            "1s",
            "30s",
            "2m",
            "99999999999999999h",
            "584542046091y",
            "1y 2mo",
            "Pending",
            "Progressing",
            "Promoting",
            "Succeeded",
            "Failed",
            "Paused",
            "Cancelled",
            "pending",
            "true",
            "false",
            "promote",
            "abort",
            "pause",
            "resume",
            "2026-11-26T15:23:23Z",
            "9999-12-31T23:59:59Z",
            "-009999-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "{\"c\":[1e308,1e308],\"s\":[-1,\"x\"]}",
            "{\"c\":[NaN]}",
            "{\"query\":\"up\",\"max\":1}",
            "{\"query\":\"sum(\",\"max\":1}",
            "{\"query\":\"{workload}{namespace}{interval}\",\"min\":1e309}",
            "{\"query\":\"up\"}",
            "\u{0}",
            "é🦀\u{202e}",
            "podinfo:latest",
            "podinfo-canary",
        ])
        .prop_map(str::to_string),
        ".{0,24}",
        (1usize..2048).prop_map(|n| "9".repeat(n)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_string().prop_map(Value::String),
    ]
}

/// Random JSON, bounded in depth and size.
fn random_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        "[a-zA-Z/.~-]{0,12}",
                        prop::sample::select(vec![
                            "metadata",
                            "annotations",
                            "spec",
                            "template",
                            "paused",
                            "kind",
                            "uid",
                            "name",
                            ann::PHASE,
                            ann::ENABLED
                        ])
                        .prop_map(str::to_string),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// JSON pointers to every node of `v`, in pre-order.
fn pointers(v: &Value, prefix: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

/// The node `pick` selects under `root` (falling back to the whole document).
fn select(doc: &Value, root: &str, pick: usize) -> Option<String> {
    let base = if doc.pointer(root).is_some() {
        root
    } else {
        ""
    };
    let mut all = Vec::new();
    pointers(doc.pointer(base)?, base.to_string(), &mut all);
    if all.is_empty() {
        return None;
    }
    Some(all[pick % all.len()].clone())
}

fn split_pointer(p: &str) -> Option<(&str, String)> {
    let (parent, last) = p.rsplit_once('/')?;
    Some((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn remove_at(doc: &mut Value, p: &str) {
    let Some((parent, key)) = split_pointer(p) else {
        return;
    };
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.remove(&key);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
    }
}

fn replace_at(doc: &mut Value, p: &str, with: Value) {
    if let Some(slot) = doc.pointer_mut(p) {
        *slot = with;
    }
}

/// `depth` levels of arrays or objects around a leaf.
fn nested(depth: usize, objects: bool) -> Value {
    let mut v = Value::String("bottom".into());
    for _ in 0..depth {
        v = if objects {
            Value::Object(Map::from_iter([("a".to_string(), v)]))
        } else {
            Value::Array(vec![v])
        };
    }
    v
}

/// Where mutations are aimed: the whole review, or the parts the decisions read.
const ROOTS: &[&str] = &[
    "",
    "/request",
    "/request/object",
    "/request/oldObject",
    "/request/object/spec/template",
    "/request/object/metadata",
    "/request/oldObject/metadata",
];

/// Keys whose absence the decoder and decisions must survive.
const DROPPABLE: &[&str] = &[
    "/request",
    "/request/uid",
    "/request/kind",
    "/request/kind/kind",
    "/request/kind/group",
    "/request/resource",
    "/request/operation",
    "/request/name",
    "/request/namespace",
    "/request/userInfo",
    "/request/userInfo/username",
    "/request/object",
    "/request/oldObject",
    "/request/object/kind",
    "/request/object/metadata",
    "/request/object/metadata/annotations",
    "/request/object/spec",
    "/request/object/spec/template",
    "/request/oldObject/metadata",
    "/request/oldObject/metadata/annotations",
    "/request/oldObject/spec",
    "/request/oldObject/spec/template",
    "/request/dryRun",
    "/request/subResource",
    "/kind",
    "/apiVersion",
];

#[derive(Debug, Clone)]
enum Op {
    Replace {
        root: &'static str,
        pick: usize,
        with: Value,
    },
    Remove {
        root: &'static str,
        pick: usize,
    },
    Drop(&'static str),
    Nest {
        root: &'static str,
        pick: usize,
        depth: usize,
        objects: bool,
    },
    Huge {
        root: &'static str,
        pick: usize,
        len: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let root = || prop::sample::select(ROOTS);
    prop_oneof![
        4 => (root(), any::<usize>(), random_json())
            .prop_map(|(root, pick, with)| Op::Replace { root, pick, with }),
        2 => (root(), any::<usize>()).prop_map(|(root, pick)| Op::Remove { root, pick }),
        2 => prop::sample::select(DROPPABLE).prop_map(Op::Drop),
        1 => (root(), any::<usize>(), 1usize..200, any::<bool>())
            .prop_map(|(root, pick, depth, objects)| Op::Nest { root, pick, depth, objects }),
        1 => (root(), any::<usize>(), 1usize..(1 << 20))
            .prop_map(|(root, pick, len)| Op::Huge { root, pick, len }),
    ]
}

fn apply(doc: &mut Value, op: &Op) {
    match op {
        Op::Replace { root, pick, with } => {
            if let Some(p) = select(doc, root, *pick) {
                replace_at(doc, &p, with.clone());
            }
        }
        Op::Remove { root, pick } => {
            if let Some(p) = select(doc, root, *pick) {
                remove_at(doc, &p);
            }
        }
        Op::Drop(p) => remove_at(doc, p),
        Op::Nest {
            root,
            pick,
            depth,
            objects,
        } => {
            if let Some(p) = select(doc, root, *pick) {
                replace_at(doc, &p, nested(*depth, *objects));
            }
        }
        Op::Huge { root, pick, len } => {
            if let Some(p) = select(doc, root, *pick) {
                replace_at(doc, &p, Value::String("x".repeat(*len)));
            }
        }
    }
}

/// Mostly bytes that keep the text JSON-ish (so mutations reach past the parser), some raw.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b"0123456789azAZ \"{}[]:,.-+eE\\ntf".to_vec()),
        1 => any::<u8>(),
    ]
}

fn fixture_index() -> impl Strategy<Value = usize> {
    0..fixtures().len()
}

// ---------------------------------------------------------------------------------------------
// Properties

#[test]
fn unmodified_fixtures_are_answered() {
    let stats = Stats::default();
    for f in fixtures() {
        check_body(&f.bytes, &stats).unwrap_or_else(|e| panic!("{}: {e}", f.name));
    }
    stats.report("fixtures");
    assert_eq!(stats.get(&stats.decoded), fixtures().len());
    assert!(stats.get(&stats.patched) > 0, "no fixture starts a rollout");
}

#[test]
fn byte_flips_and_truncations_are_answered() {
    let stats = Stats::default();
    let strategy = (
        fixture_index(),
        prop::collection::vec((any::<usize>(), byte()), 0..3),
        prop::option::weighted(0.2, any::<usize>()),
        prop::option::weighted(0.3, (any::<usize>(), prop::collection::vec(byte(), 1..16))),
    );
    runner(1)
        .run(&strategy, |(i, flips, truncate, insert)| {
            let mut body = fixtures()[i].bytes.clone();
            for (at, byte) in flips {
                let n = body.len();
                body[at % n] = byte;
            }
            if let Some((at, bytes)) = insert {
                let at = at % (body.len() + 1);
                body.splice(at..at, bytes);
            }
            if let Some(at) = truncate {
                body.truncate(at % (body.len() + 1));
            }
            check_body(&body, &stats)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    stats.report("byte mutations");
    assert!(stats.get(&stats.tried) >= CASES as usize);
}

#[test]
fn json_node_mutations_are_answered() {
    let stats = Stats::default();
    let strategy = (fixture_index(), prop::collection::vec(op(), 1..4));
    runner(2)
        .run(&strategy, |(i, ops)| {
            let mut doc = fixtures()[i].json.clone();
            for op in &ops {
                apply(&mut doc, op);
            }
            let body = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_body(&body, &stats)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    stats.report("JSON node mutations");
    // Not vacuous: a fair share still decodes and reaches the decisions.
    assert!(
        stats.get(&stats.decoded) >= CASES as usize / 10,
        "too few mutated reviews decoded"
    );
}

#[test]
fn every_dropped_key_is_answered() {
    // Exhaustive: each fixture without each key (and without each pair of request keys).
    let stats = Stats::default();
    for f in fixtures() {
        for key in DROPPABLE {
            let mut doc = f.json.clone();
            remove_at(&mut doc, key);
            let body = serde_json::to_vec(&doc).expect("json");
            check_body(&body, &stats).unwrap_or_else(|e| panic!("{} without {key}: {e}", f.name));
        }
        for pair in [
            ["/request/object", "/request/oldObject"],
            ["/request/object/spec", "/request/oldObject/spec"],
            [
                "/request/object/metadata/annotations",
                "/request/oldObject/metadata/annotations",
            ],
        ] {
            let mut doc = f.json.clone();
            for key in pair {
                remove_at(&mut doc, key);
            }
            let body = serde_json::to_vec(&doc).expect("json");
            check_body(&body, &stats)
                .unwrap_or_else(|e| panic!("{} without {pair:?}: {e}", f.name));
        }
    }
    stats.report("dropped keys");
    assert!(stats.get(&stats.decoded) > 0);
}

#[test]
fn hostile_annotations_are_answered() {
    // Settings, state and action annotations with hostile values, on the new and the stored
    // object, over the managed-Deployment reviews: this reaches settings and state parsing,
    // revision and warning building, and the patch.
    let managed: Vec<usize> = fixtures()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name.starts_with('2') && f.name.contains("mutate"))
        .map(|(i, _)| i)
        .collect();
    assert!(!managed.is_empty());
    let keys: Vec<String> = ann::SETTINGS
        .iter()
        .chain(ann::STATE)
        .map(|s| s.to_string())
        .chain([
            format!("{}x", ann::GATE_PREFIX),
            format!("{}error-rate", ann::GATE_PREFIX),
            "canary-gate.io/typo".to_string(),
            ann::ORIGINAL_ROUTES.to_string(),
            ann::OWNER.to_string(),
        ])
        .collect();
    let edit = (
        any::<bool>(), // on oldObject rather than object
        prop::sample::select(keys),
        prop_oneof![
            20 => hostile_string().prop_map(Value::String),
            1 => random_json(),
            1 => Just(Value::Null),
        ],
    );
    let strategy = (
        prop::sample::select(managed),
        prop::collection::vec(edit, 1..8),
        any::<bool>(), // also change the template (a new revision)
    );
    let stats = Stats::default();
    runner(3)
        .run(&strategy, |(i, edits, bump)| {
            let mut doc = fixtures()[i].json.clone();
            for (old, key, value) in edits {
                let obj = if old { "oldObject" } else { "object" };
                if let Some(Value::Object(meta)) =
                    doc.pointer_mut(&format!("/request/{obj}/metadata"))
                {
                    let a = meta
                        .entry("annotations")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(a) = a {
                        a.insert(key, value);
                    }
                }
            }
            if bump {
                if let Some(Value::Object(m)) =
                    doc.pointer_mut("/request/object/spec/template/metadata")
                {
                    m.insert("annotations".into(), serde_json::json!({"fuzz/bump": "1"}));
                }
            }
            let body = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_body(&body, &stats)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    stats.report("hostile annotations");
    assert!(stats.get(&stats.decoded) >= CASES as usize / 4);
    assert!(
        stats.get(&stats.patched) > 0,
        "no mutated review reached a patch"
    );
    assert!(
        stats.get(&stats.denied) > 0,
        "no hostile setting was denied"
    );
}

#[test]
fn deep_nesting_and_huge_values_are_bounded() {
    // Nesting past serde_json's recursion limit must be a clean decode error, and just under
    // it must still be decided; huge strings must not blow up the answer.
    let stats = Stats::default();
    let managed = fixtures()
        .iter()
        .find(|f| f.name == "21-managed-update-image-kubectl-apply.mutate.json")
        .expect("fixture 21");
    for depth in [1usize, 64, 100, 120, 126, 127, 128, 129, 200, 1000, 10_000] {
        for objects in [false, true] {
            for at in [
                "/request/object/spec/template/spec/containers/0/env",
                "/request/object/metadata/labels",
                "/request/oldObject/spec/template/metadata",
                "/request/options",
            ] {
                let mut doc = managed.json.clone();
                if let Some((parent, key)) = split_pointer(at) {
                    if let Some(Value::Object(m)) = doc.pointer_mut(parent) {
                        m.insert(key, Value::Null);
                    }
                }
                // Spliced into the text: building a 10 000-level `Value` would risk the stack
                // of the test itself, not of the code under test.
                let mut body = serde_json::to_vec(&doc).expect("json");
                let marker = b"null";
                let text = String::from_utf8(body.clone()).expect("utf8");
                let needle = format!("\"{}\":null", split_pointer(at).expect("ptr").1);
                if let Some(pos) = text.find(&needle) {
                    let start = pos + needle.len() - marker.len();
                    let (open, close) = if objects {
                        ("{\"a\":", "}")
                    } else {
                        ("[", "]")
                    };
                    let nested = format!("{}0{}", open.repeat(depth), close.repeat(depth));
                    body.splice(start..start + marker.len(), nested.into_bytes());
                }
                check_body(&body, &stats).unwrap_or_else(|e| panic!("depth {depth} at {at}: {e}"));
            }
        }
    }
    for len in [1usize << 10, 1 << 16, 1 << 20, 4 << 20] {
        for at in [
            "/request/uid",
            "/request/name",
            "/request/object/spec/template/spec/containers/0/image",
            "/request/object/metadata/annotations/canary-gate.io~1interval",
        ] {
            let mut doc = managed.json.clone();
            if let Some((parent, key)) = split_pointer(at) {
                if let Some(Value::Object(m)) = doc.pointer_mut(parent) {
                    m.insert(key, Value::String("7".repeat(len)));
                }
            }
            let body = serde_json::to_vec(&doc).expect("json");
            check_body(&body, &stats).unwrap_or_else(|e| panic!("{len} bytes at {at}: {e}"));
        }
    }
    stats.report("deep and huge");
}

#[test]
fn bad_review_kind_is_malformed() {
    let body = &fixtures()
        .iter()
        .find(|f| f.name == "21-managed-update-image-kubectl-apply.mutate.json")
        .expect("fixture 21")
        .json;
    for (field, value) in [
        ("kind", "0dmissionReview"),
        ("kind", "Deployment"),
        ("apiVersion", "admission.k8s.io/v2"),
        ("apiVersion", "apps/v1"),
    ] {
        let mut doc = body.clone();
        doc[field] = Value::String(value.into());
        let bytes = serde_json::to_vec(&doc).expect("json");
        match review::decode(&bytes) {
            Err(DecodeError::Malformed { uid, .. }) => {
                assert_eq!(
                    uid, "acc0792c-a158-4055-b2e3-4b693c0ad8d2",
                    "uid still echoed"
                )
            }
            other => panic!("{field}={value}: expected Malformed, got {other:?}"),
        }
    }
}
