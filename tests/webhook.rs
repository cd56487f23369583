//! The admission webhook end to end: `canary-gate serve` started in-process through the real
//! CLI path, real TLS (rustls) on real loopback sockets, and the AdmissionReview bodies a real
//! kube-apiserver 1.26 sent (`tests/fixtures/admission`, see its README.md and INDEX.txt).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use canary_gate::admission::revision::template_revision;
use canary_gate::annotations as ann;
use common::{
    base64_decode, eventually, http_get, https_post, metric_value, read_raw_response, tls_connect,
    write_pair, TestCa, TestServer,
};
use rustls::ProtocolVersion;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission");
const MUTATE: &str = "/mutate?timeout=10s";
const VALIDATE: &str = "/validate?timeout=10s";
/// The scenario's defaults as kubectl prints them in the rollout warning.
const PLAN: &str = "10 % steps every 30s to 50 %, gates: success ≥ 99 %, p99 ≤ 500 ms; decisive evidence rolls back at any moment";

/// What the webhook must answer to one captured review.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Allowed, no patch.
    Allow,
    /// Allowed with a JSON patch that starts a rollout, and the warning
    /// `podinfo: canary <change>, <PLAN>` (plus a dry-run notice when `dry_run`).
    Rollout { change: &'static str, dry_run: bool },
    /// Denied with a message naming `canary-gate.io/max-weight` and `"150"`.
    DenyMaxWeight,
}

use Expect::{Allow, DenyMaxWeight};

const fn rollout(change: &'static str) -> Expect {
    Expect::Rollout {
        change,
        dry_run: false,
    }
}

/// Every captured review and its answer, derived from the design (not from the server):
/// - 01–15 do not opt in (no `canary-gate.io/enabled`) or are Istio route CRUD / DELETE: untouched;
/// - 20 is a CREATE and 25 a `Scale`: nothing to hold;
/// - 21, 22 (dry run), 23 (first server-side-apply call) and 24 change the image of a managed
///   Deployment: held with a patch; 23.2–23.8 only migrate field managers: untouched;
/// - 26, 27, 28.* carry `canary-gate.io/max-weight: "150"`: denied by both hooks;
/// - 29 is a DELETE: allowed.
const EXPECTED: &[(&str, Expect)] = &[
    ("01-create-kubectl-apply.mutate", Allow),
    ("01-create-kubectl-apply.validate", Allow),
    ("02-update-image-kubectl-apply.mutate", Allow),
    ("02-update-image-kubectl-apply.validate", Allow),
    ("03-update-image-dry-run-server.mutate", Allow),
    ("03-update-image-dry-run-server.validate", Allow),
    ("04-update-image-server-side-apply.mutate", Allow),
    ("04-update-image-server-side-apply.mutate.2", Allow),
    ("04-update-image-server-side-apply.mutate.3", Allow),
    ("04-update-image-server-side-apply.mutate.4", Allow),
    ("04-update-image-server-side-apply.mutate.5", Allow),
    ("04-update-image-server-side-apply.mutate.6", Allow),
    ("04-update-image-server-side-apply.mutate.7", Allow),
    ("04-update-image-server-side-apply.mutate.8", Allow),
    ("04-update-image-server-side-apply.mutate.9", Allow),
    ("04-update-image-server-side-apply.validate", Allow),
    ("04-update-image-server-side-apply.validate.2", Allow),
    ("04-update-image-server-side-apply.validate.3", Allow),
    ("04-update-image-server-side-apply.validate.4", Allow),
    ("04-update-image-server-side-apply.validate.5", Allow),
    ("04-update-image-server-side-apply.validate.6", Allow),
    ("04-update-image-server-side-apply.validate.7", Allow),
    ("04-update-image-server-side-apply.validate.8", Allow),
    ("04-update-image-server-side-apply.validate.9", Allow),
    ("05-update-image-set-image.mutate", Allow),
    ("05-update-image-set-image.validate", Allow),
    ("06-update-rollout-restart.mutate", Allow),
    ("06-update-rollout-restart.mutate.2", Allow),
    ("06-update-rollout-restart.mutate.3", Allow),
    ("06-update-rollout-restart.validate", Allow),
    ("06-update-rollout-restart.validate.2", Allow),
    ("06-update-rollout-restart.validate.3", Allow),
    ("07-update-scale-subresource.mutate", Allow),
    ("08-update-metadata-only-annotate.mutate", Allow),
    ("08-update-metadata-only-annotate.validate", Allow),
    ("09-update-replicas-kubectl-apply.mutate", Allow),
    ("09-update-replicas-kubectl-apply.validate", Allow),
    ("10-create-virtualservice.validate", Allow),
    ("11-create-destinationrule.validate", Allow),
    ("12-update-virtualservice-json-patch.validate", Allow),
    ("13-delete-virtualservice.validate", Allow),
    ("14-delete-destinationrule.validate", Allow),
    ("15-delete-deployment.validate", Allow),
    ("20-managed-create-kubectl-apply.mutate", Allow),
    ("20-managed-create-kubectl-apply.validate", Allow),
    (
        "21-managed-update-image-kubectl-apply.mutate",
        rollout("6.0.0 → 6.0.1"),
    ),
    ("21-managed-update-image-kubectl-apply.validate", Allow),
    (
        "22-managed-update-image-dry-run-server.mutate",
        Expect::Rollout {
            change: "6.0.1 → 6.0.2",
            dry_run: true,
        },
    ),
    ("22-managed-update-image-dry-run-server.validate", Allow),
    (
        "23-managed-update-image-server-side-apply.mutate",
        rollout("6.0.1 → 6.0.2"),
    ),
    ("23-managed-update-image-server-side-apply.mutate.2", Allow),
    ("23-managed-update-image-server-side-apply.mutate.3", Allow),
    ("23-managed-update-image-server-side-apply.mutate.4", Allow),
    ("23-managed-update-image-server-side-apply.mutate.5", Allow),
    ("23-managed-update-image-server-side-apply.mutate.6", Allow),
    ("23-managed-update-image-server-side-apply.mutate.7", Allow),
    ("23-managed-update-image-server-side-apply.mutate.8", Allow),
    ("23-managed-update-image-server-side-apply.validate", Allow),
    (
        "23-managed-update-image-server-side-apply.validate.2",
        Allow,
    ),
    (
        "23-managed-update-image-server-side-apply.validate.3",
        Allow,
    ),
    (
        "23-managed-update-image-server-side-apply.validate.4",
        Allow,
    ),
    (
        "23-managed-update-image-server-side-apply.validate.5",
        Allow,
    ),
    (
        "23-managed-update-image-server-side-apply.validate.6",
        Allow,
    ),
    (
        "23-managed-update-image-server-side-apply.validate.7",
        Allow,
    ),
    (
        "23-managed-update-image-server-side-apply.validate.8",
        Allow,
    ),
    (
        "24-managed-update-image-set-image.mutate",
        rollout("6.0.2 → 6.0.3"),
    ),
    ("24-managed-update-image-set-image.validate", Allow),
    ("25-managed-update-scale-subresource.mutate", Allow),
    ("26-managed-update-bad-max-weight.mutate", DenyMaxWeight),
    ("26-managed-update-bad-max-weight.validate", DenyMaxWeight),
    ("27-managed-update-rollout-restart.mutate", DenyMaxWeight),
    ("27-managed-update-rollout-restart.validate", DenyMaxWeight),
    ("28-managed-update-paused-already.mutate", DenyMaxWeight),
    ("28-managed-update-paused-already.mutate.2", DenyMaxWeight),
    ("28-managed-update-paused-already.validate", DenyMaxWeight),
    ("28-managed-update-paused-already.validate.2", DenyMaxWeight),
    ("29-managed-delete-deployment.validate", Allow),
    ("29-managed-delete-deployment.validate.2", Allow),
];

// ---------------------------------------------------------------------------------------------
// Fixtures

/// One call from INDEX.txt: the fixture's name (file name without `.json`) and the path the
/// apiserver posted it to.
struct Call {
    name: String,
    path: String,
}

/// INDEX.txt lists every call in order as `<step> <hook> <path> <content-type>`; the n-th call
/// of a step to one hook is `<step>.<hook>.<n>.json` (the first has no `.n`).
fn captured_calls() -> Vec<Call> {
    let index = std::fs::read_to_string(format!("{FIXTURES}/INDEX.txt")).expect("INDEX.txt");
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut calls = Vec::new();
    for line in index.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [step, hook, path, content_type] = fields[..] else {
            panic!("unexpected INDEX.txt line {line:?}");
        };
        assert_eq!(content_type, "application/json", "{line}");
        let n = seen.entry((step.into(), hook.into())).or_default();
        *n += 1;
        let name = match *n {
            1 => format!("{step}.{hook}"),
            n => format!("{step}.{hook}.{n}"),
        };
        calls.push(Call {
            name,
            path: path.to_string(),
        });
    }
    calls
}

fn fixture_names_on_disk() -> BTreeSet<String> {
    std::fs::read_dir(FIXTURES)
        .expect("fixture directory")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|f| f.strip_suffix(".json").map(str::to_string))
        .collect()
}

fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn path_of(name: &str) -> String {
    captured_calls()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} is not in INDEX.txt"))
        .path
}

fn bytes(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).expect("serialise review")
}

// ---------------------------------------------------------------------------------------------
// Checking answers

/// The `response` of a well-formed AdmissionReview answer with the given HTTP status and uid.
fn admission_answer(
    response: &common::HttpResponse,
    status: u16,
    uid: &str,
) -> Result<Value, String> {
    if response.status != status {
        return Err(format!(
            "HTTP {} instead of {status}: {}",
            response.status,
            response.text()
        ));
    }
    let content_type = response.content_type.as_deref().unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "content-type {content_type:?}, not application/json"
        ));
    }
    let review = response.json()?;
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err(format!(
            "not an admission.k8s.io/v1 AdmissionReview: {review}"
        ));
    }
    let answer = review["response"].clone();
    if answer["uid"] != uid {
        return Err(format!("response.uid {} instead of {uid:?}", answer["uid"]));
    }
    if !answer["allowed"].is_boolean() {
        return Err(format!("response.allowed is not a boolean: {answer}"));
    }
    Ok(answer)
}

fn warnings(answer: &Value) -> Vec<String> {
    answer["warnings"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn has_patch(answer: &Value) -> bool {
    !answer["patch"].is_null() || !answer["patchType"].is_null()
}

fn check_expectation(answer: &Value, expect: Expect) -> Result<(), String> {
    let allowed = answer["allowed"] == true;
    let message = answer["status"]["message"].as_str().unwrap_or("");
    match expect {
        Allow => {
            if !allowed {
                return Err(format!("denied, expected allowed: {message:?}"));
            }
            if has_patch(answer) {
                return Err(format!("patched, expected no patch: {answer}"));
            }
        }
        Expect::Rollout { change, dry_run } => {
            if !allowed {
                return Err(format!("denied, expected a rollout patch: {message:?}"));
            }
            if answer["patchType"] != "JSONPatch" || answer["patch"].is_null() {
                return Err(format!("no JSONPatch in {answer}"));
            }
            let warnings = warnings(answer);
            let wanted = format!("podinfo: canary {change}, {PLAN}");
            if !warnings.contains(&wanted) {
                return Err(format!("warning {wanted:?} missing from {warnings:?}"));
            }
            let says_dry_run = warnings.iter().any(|w| w.contains("dry run"));
            if says_dry_run != dry_run {
                return Err(format!(
                    "dry-run notice expected: {dry_run}, warnings {warnings:?}"
                ));
            }
        }
        DenyMaxWeight => {
            if allowed {
                return Err(format!("allowed, expected denied: {answer}"));
            }
            if has_patch(answer) {
                return Err(format!("denied with a patch: {answer}"));
            }
            if !(message.contains("canary-gate.io/max-weight") && message.contains("\"150\"")) {
                return Err(format!(
                    "denial does not name max-weight and \"150\": {message:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The patch bytes: the apiserver decodes `[]byte` from a base64 string or a JSON array of bytes.
fn patch_bytes(patch: &Value) -> Result<Vec<u8>, String> {
    match patch {
        Value::String(s) => base64_decode(s).ok_or_else(|| format!("patch is not base64: {s:?}")),
        Value::Array(items) => items
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| format!("patch array holds a non-byte {b}"))
            })
            .collect(),
        other => Err(format!("patch is neither base64 nor a byte array: {other}")),
    }
}

/// Applies the answer's patch to the request's `object` like the apiserver would and checks
/// that the result holds the stable version and records the rollout, and nothing else moved.
fn check_rollout_patch(request: &Value, answer: &Value) -> Result<Value, String> {
    if answer["allowed"] != true || answer["patchType"] != "JSONPatch" {
        return Err(format!("not an allowed JSONPatch answer: {answer}"));
    }
    let raw = patch_bytes(&answer["patch"])?;
    let patch: json_patch::Patch = serde_json::from_slice(&raw).map_err(|e| {
        format!(
            "patch is not a JSON Patch ({e}): {}",
            String::from_utf8_lossy(&raw)
        )
    })?;
    let original = request["object"].clone();
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch)
        .map_err(|e| format!("patch does not apply to the request object: {e}; patch {patch:?}"))?;

    if patched["spec"]["paused"] != true {
        return Err(format!(
            "spec.paused is {} after the patch",
            patched["spec"]["paused"]
        ));
    }
    let annotation = |key: &str| {
        patched["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_string)
    };
    if annotation(ann::PHASE).as_deref() != Some("Pending") {
        return Err(format!("{} is {:?}", ann::PHASE, annotation(ann::PHASE)));
    }
    if annotation(ann::WEIGHT).as_deref() != Some("0") {
        return Err(format!("{} is {:?}", ann::WEIGHT, annotation(ann::WEIGHT)));
    }
    let canary = annotation(ann::CANARY_REVISION).unwrap_or_default();
    let stable = annotation(ann::STABLE_REVISION).unwrap_or_default();
    if canary.is_empty() || stable.is_empty() || canary == stable {
        return Err(format!(
            "canary revision {canary:?} / stable revision {stable:?}"
        ));
    }
    let rev = |v: &Value| {
        serde_json::value::to_raw_value(v)
            .map(|raw| template_revision(&raw))
            .unwrap_or_default()
    };
    let new_rev = rev(&request["object"]["spec"]["template"]);
    let old_rev = rev(&request["oldObject"]["spec"]["template"]);
    if (canary.as_str(), stable.as_str()) != (new_rev.as_str(), old_rev.as_str()) {
        return Err(format!(
            "revisions canary {canary} / stable {stable}, expected the new template {new_rev} / the old {old_rev}"
        ));
    }
    let started = annotation(ann::STARTED_AT).unwrap_or_default();
    let started: jiff::Timestamp = started
        .parse()
        .map_err(|e| format!("{} {started:?} is not a timestamp: {e}", ann::STARTED_AT))?;
    let age = jiff::Timestamp::now().duration_since(started);
    if age.unsigned_abs() > Duration::from_secs(300) {
        return Err(format!("{} {started} is not now", ann::STARTED_AT));
    }
    if patched["spec"]["template"] != original["spec"]["template"] {
        return Err("the patch changed spec.template: drift for kubectl / GitOps".into());
    }
    // Nothing but spec.paused, canary-gate's own state annotations and its rollout label may
    // change.
    let strip = |obj: &Value| {
        let mut obj = obj.clone();
        if let Some(spec) = obj["spec"].as_object_mut() {
            spec.remove("paused");
        }
        if let Some(annotations) = obj["metadata"]["annotations"].as_object_mut() {
            for key in ann::STATE.iter().chain([&ann::ACTION]) {
                annotations.remove(*key);
            }
            if annotations.is_empty() {
                obj["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("annotations"));
            }
        }
        // The label the analyzer's watch selects on.
        if let Some(labels) = obj["metadata"]["labels"].as_object_mut() {
            labels.remove(ann::ROLLOUT_LABEL);
            if labels.is_empty() {
                obj["metadata"].as_object_mut().map(|m| m.remove("labels"));
            }
        }
        obj
    };
    if strip(&patched) != strip(&original) {
        return Err(
            "the patch changed more than spec.paused, canary-gate state annotations and the rollout label".into(),
        );
    }
    Ok(patched)
}

// ---------------------------------------------------------------------------------------------
// 1. Every captured review

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_captured_review_gets_the_expected_answer() {
    let calls = captured_calls();
    let expected: BTreeMap<&str, Expect> = EXPECTED.iter().copied().collect();
    assert_eq!(
        expected.len(),
        EXPECTED.len(),
        "a fixture is listed twice in EXPECTED"
    );
    let on_disk = fixture_names_on_disk();
    let indexed: BTreeSet<String> = calls.iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        indexed.len(),
        calls.len(),
        "INDEX.txt maps two calls to one file"
    );
    assert_eq!(indexed, on_disk, "INDEX.txt and the fixture files disagree");
    let tabled: BTreeSet<String> = expected.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        tabled, on_disk,
        "EXPECTED must name every fixture, and only those"
    );

    let server = TestServer::start().await;
    let mut failures = Vec::new();
    for call in &calls {
        let review = fixture(&call.name);
        let uid = review["request"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let outcome = match server.try_post(&call.path, bytes(&review).into()).await {
            Ok(response) => admission_answer(&response, 200, &uid)
                .and_then(|answer| check_expectation(&answer, expected[call.name.as_str()])),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            failures.push(format!("{} (POST {}): {e}", call.name, call.path));
        }
    }
    server.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} captured reviews were answered wrongly:\n{}",
        failures.len(),
        calls.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The patches

async fn mutate_answer(server: &TestServer, review: &Value) -> Value {
    let uid = review["request"]["uid"].as_str().expect("uid").to_string();
    let response = server.post(MUTATE, bytes(review)).await;
    admission_answer(&response, 200, &uid).unwrap_or_else(|e| panic!("{uid}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_patches_apply_to_the_request_object_without_drift() {
    let server = TestServer::start().await;
    let rollouts: Vec<&str> = EXPECTED
        .iter()
        .filter(|(_, e)| matches!(e, Expect::Rollout { .. }))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(rollouts.len(), 4, "{rollouts:?}");
    for name in rollouts {
        let review = fixture(name);
        assert_eq!(path_of(name), MUTATE);
        let answer = mutate_answer(&server, &review).await;
        check_rollout_patch(&review["request"], &answer).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_patch_applies_when_only_the_enabled_annotation_is_left() {
    let server = TestServer::start().await;
    let mut review = fixture("21-managed-update-image-kubectl-apply.mutate");
    for object in ["object", "oldObject"] {
        review["request"][object]["metadata"]["annotations"] = json!({ (ann::ENABLED): "true" });
    }
    let answer = mutate_answer(&server, &review).await;
    check_expectation(&answer, rollout("6.0.0 → 6.0.1")).expect("rollout answer");
    let patched = check_rollout_patch(&review["request"], &answer).expect("patch");
    assert_eq!(patched["metadata"]["annotations"][ann::ENABLED], "true");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_patch_applies_to_an_already_paused_deployment() {
    let server = TestServer::start().await;
    let mut review = fixture("28-managed-update-paused-already.mutate.2");
    for object in ["object", "oldObject"] {
        let annotations = review["request"][object]["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations");
        assert_eq!(
            annotations.remove(ann::MAX_WEIGHT),
            Some(json!("150")),
            "{object}"
        );
    }
    assert_eq!(review["request"]["object"]["spec"]["paused"], true);
    let answer = mutate_answer(&server, &review).await;
    check_expectation(&answer, rollout("6.0.3 → 6.0.4")).expect("rollout answer");
    let patched = check_rollout_patch(&review["request"], &answer).expect("patch");
    assert_eq!(patched["spec"]["paused"], true);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Malformed input and misbehaving clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_well_formed_reviews() {
    let server = TestServer::start().await;
    let good = fixture("21-managed-update-image-kubectl-apply.mutate");
    let uid = good["request"]["uid"].as_str().expect("uid").to_string();
    let mut kind_is_a_number = good.clone();
    kind_is_a_number["request"]["kind"] = json!(42);
    let mut no_old_object = good.clone();
    no_old_object["request"]
        .as_object_mut()
        .expect("request")
        .remove("oldObject");

    struct Case<'a> {
        what: &'a str,
        endpoints: &'a [&'a str],
        body: Vec<u8>,
        status: u16,
        uid: &'a str,
    }
    let both = &[MUTATE, VALIDATE][..];
    let cases = [
        Case {
            what: "not JSON",
            endpoints: both,
            body: b"this is not JSON {".to_vec(),
            status: 400,
            uid: "",
        },
        Case {
            what: "an empty body",
            endpoints: both,
            body: Vec::new(),
            status: 400,
            uid: "",
        },
        Case {
            what: "{}",
            endpoints: both,
            body: b"{}".to_vec(),
            status: 200,
            uid: "",
        },
        Case {
            what: "a review without a request",
            endpoints: both,
            body: br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            status: 200,
            uid: "",
        },
        Case {
            what: "request.kind is a number",
            endpoints: both,
            body: bytes(&kind_is_a_number),
            status: 200,
            uid: &uid,
        },
        Case {
            what: "an UPDATE without oldObject",
            endpoints: &[MUTATE],
            body: bytes(&no_old_object),
            status: 200,
            uid: &uid,
        },
    ];
    let mut failures = Vec::new();
    for Case {
        what,
        endpoints,
        body,
        status,
        uid,
    } in &cases
    {
        for endpoint in endpoints.iter() {
            let outcome = match server.try_post(endpoint, body.clone().into()).await {
                Ok(response) => admission_answer(&response, *status, uid).and_then(|answer| {
                    let message = answer["status"]["message"].as_str().unwrap_or("");
                    if answer["allowed"] != false {
                        Err(format!("allowed: {answer}"))
                    } else if message.is_empty() {
                        Err(format!("denied without a message: {answer}"))
                    } else if has_patch(&answer) {
                        Err(format!("denied with a patch: {answer}"))
                    } else {
                        Ok(())
                    }
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                failures.push(format!("{what} on {endpoint}: {e}"));
            }
        }
    }
    // None of that left the server worse off.
    let answer = mutate_answer(&server, &good).await;
    check_expectation(&answer, rollout("6.0.0 → 6.0.1")).expect("a good review after bad ones");
    server.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A review whose `object` and `oldObject` each carry an annotation of `pad` bytes.
fn padded_review(pad: usize) -> Value {
    let mut review = fixture("21-managed-update-image-kubectl-apply.mutate");
    for object in ["object", "oldObject"] {
        review["request"][object]["metadata"]["annotations"]["example.com/padding"] =
            json!("x".repeat(pad));
    }
    review
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused_with_413_and_the_limit_fits_real_reviews() {
    let server = TestServer::start().await;

    // The apiserver caps an object at ~3 MiB and a review carries two: that must pass.
    let big = padded_review(3 * 1024 * 1024);
    let uid = big["request"]["uid"].as_str().expect("uid").to_string();
    let body = bytes(&big);
    assert!(body.len() > 6 * 1024 * 1024 && body.len() < 8 * 1024 * 1024);
    let response = server.post(MUTATE, body).await;
    let answer = admission_answer(&response, 200, &uid).expect("a 6 MiB review is answered");
    check_expectation(&answer, rollout("6.0.0 → 6.0.1")).expect("6 MiB review decided");

    // Over 8 MiB: 413 with an AdmissionReview. Written by hand so the client keeps reading the
    // answer even if the server stops reading the body early.
    let body = bytes(&padded_review(9 * 1024 * 1024 / 2));
    assert!(body.len() > 9 * 1024 * 1024);
    let stream = tls_connect(server.webhook(), server.ca.client())
        .await
        .expect("TLS handshake");
    let (mut reader, mut writer) = tokio::io::split(stream);
    let head = format!(
        "POST {MUTATE} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(64 * 1024) {
            writer.write_all(chunk).await?;
        }
        writer.flush().await
    });
    let response = tokio::time::timeout(Duration::from_secs(10), read_raw_response(&mut reader))
        .await
        .expect("an answer to the oversized body within 10 s")
        .expect("a complete HTTP response");
    upload.abort();
    let answer = admission_answer(&response, 413, "").expect("413 with an AdmissionReview");
    assert_eq!(answer["allowed"], false, "{answer}");

    // And the server still answers.
    let answer = mutate_answer(
        &server,
        &fixture("21-managed-update-image-kubectl-apply.mutate"),
    )
    .await;
    check_expectation(&answer, rollout("6.0.0 → 6.0.1")).expect("answer after the 413");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_do_not_block_other_requests() {
    let server = TestServer::start().await;
    // A TCP connection that never starts the TLS handshake.
    let mut silent = TcpStream::connect(server.webhook()).await.expect("connect");
    // A TLS connection that sends half a request head.
    let mut half_head = tls_connect(server.webhook(), server.ca.client())
        .await
        .expect("TLS");
    half_head
        .write_all(b"POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
        .await
        .expect("write");
    half_head.flush().await.expect("flush");
    // A TLS connection that sends the head and 14 of the 5000 body bytes it announced.
    let mut half_body = tls_connect(server.webhook(), server.ca.client())
        .await
        .expect("TLS");
    half_body
        .write_all(
            b"POST /validate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"apiVersion\":",
        )
        .await
        .expect("write");
    half_body.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Meanwhile normal requests are answered promptly, one after another and concurrently.
    let review = fixture("21-managed-update-image-kubectl-apply.mutate");
    let body = bytes(&review);
    let uid = review["request"]["uid"].as_str().expect("uid").to_string();
    let one = || {
        let server = &server;
        let body = body.clone();
        let uid = uid.clone();
        async move {
            let started = Instant::now();
            let response = server.post(MUTATE, body).await;
            let elapsed = started.elapsed();
            let answer = admission_answer(&response, 200, &uid).expect("answer");
            check_expectation(&answer, rollout("6.0.0 → 6.0.1")).expect("rollout");
            elapsed
        }
    };
    for _ in 0..3 {
        let elapsed = one().await;
        assert!(
            elapsed < Duration::from_secs(2),
            "answered after {elapsed:?}"
        );
    }
    let concurrent = futures::future::join_all((0..8).map(|_| one())).await;
    for elapsed in concurrent {
        assert!(
            elapsed < Duration::from_secs(2),
            "answered after {elapsed:?}"
        );
    }

    // The stalled ones are not held forever: the stalled body is answered 408 with a review,
    // the other two connections are closed (the server's limits are 10 s).
    let limit = Duration::from_secs(16);
    let (silent_end, head_end, body_answer) = tokio::join!(
        tokio::time::timeout(limit, async {
            let mut sink = Vec::new();
            silent.read_to_end(&mut sink).await.map(|_| sink.len())
        }),
        tokio::time::timeout(limit, async {
            let mut sink = Vec::new();
            half_head.read_to_end(&mut sink).await.map(|_| sink.len())
        }),
        tokio::time::timeout(limit, read_raw_response(&mut half_body)),
    );
    assert!(
        silent_end.is_ok(),
        "a connection without a TLS handshake was kept open {limit:?}"
    );
    assert!(
        head_end.is_ok(),
        "a connection with half a request head was kept open {limit:?}"
    );
    let response = body_answer
        .unwrap_or_else(|_| {
            panic!("a request with a stalled body was not answered within {limit:?}")
        })
        .expect("HTTP response to the stalled body");
    let answer = admission_answer(&response, 408, "").expect("408 with an AdmissionReview");
    assert_eq!(answer["allowed"], false);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. TLS

/// A hand-made ClientHello (rustls cannot be told to speak TLS 1.1): `version` in the hello,
/// no `supported_versions` extension, the given cipher suites.
fn client_hello(version: [u8; 2], suites: &[u16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&u16::try_from(suites.len() * 2).expect("len").to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let host = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&u16::try_from(host.len() + 3).expect("len").to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&u16::try_from(host.len()).expect("len").to_be_bytes());
    sni.extend_from_slice(host);
    let mut extensions = vec![0x00, 0x00];
    extensions.extend_from_slice(&u16::try_from(sni.len()).expect("len").to_be_bytes());
    extensions.extend_from_slice(&sni);
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // groups
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // point formats
    extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]); // sig algs
    body.extend_from_slice(&u16::try_from(extensions.len()).expect("len").to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).expect("len").to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The first TLS record header + 2 bytes the server sends back to a raw ClientHello.
async fn first_server_record(server: &TestServer, hello: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(server.webhook()).await.expect("connect");
    tcp.write_all(hello).await.expect("send ClientHello");
    let mut out = vec![0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut out))
        .await
        .expect("the server answers the ClientHello")
        .expect("7 bytes back");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_speaks_1_3_and_1_2_only_and_the_client_must_trust_the_ca() {
    let server = TestServer::start().await;

    let stream = tls_connect(server.webhook(), server.ca.client())
        .await
        .expect("TLS handshake");
    let (_, connection) = stream.get_ref();
    assert_eq!(
        connection.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(connection.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(stream);

    let tls12 = server.ca.client_with_versions(&[&rustls::version::TLS12]);
    let stream = tls_connect(server.webhook(), tls12.clone())
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    drop(stream);
    let review = fixture("20-managed-create-kubectl-apply.validate");
    let response = https_post(server.webhook(), tls12, VALIDATE, bytes(&review).into())
        .await
        .expect("a review over TLS 1.2");
    let uid = review["request"]["uid"].as_str().expect("uid");
    let answer = admission_answer(&response, 200, uid).expect("answer over TLS 1.2");
    assert_eq!(answer["allowed"], true);

    // A TLS 1.1 ClientHello is refused with a fatal protocol_version alert; the same hello
    // saying TLS 1.2 gets a ServerHello (so the hand-made hello itself is fine).
    let suites = [
        0xc02b, 0xc02c, 0xc009, 0xc00a, 0xc013, 0xc014, 0x002f, 0x0035,
    ];
    let refused = first_server_record(&server, &client_hello([3, 2], &suites)).await;
    assert_eq!(
        refused[0], 0x15,
        "expected an alert record, got {refused:02x?}"
    );
    assert_eq!(
        &refused[5..7],
        &[2, 70],
        "expected fatal protocol_version, got {refused:02x?}"
    );
    let accepted = first_server_record(&server, &client_hello([3, 3], &suites)).await;
    assert_eq!(
        accepted[0], 0x16,
        "expected a handshake record, got {accepted:02x?}"
    );
    assert_eq!(
        accepted[5], 0x02,
        "expected a ServerHello, got {accepted:02x?}"
    );

    // A client that trusts another CA refuses the serving certificate.
    let stranger = TestCa::new("some other CA");
    let error = tls_connect(server.webhook(), stranger.client())
        .await
        .expect_err("a client trusting another CA must not connect");
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
    server.stop().await;
}

async fn handshake_ok(server: &TestServer, ca: &TestCa) -> bool {
    tls_connect(server.webhook(), ca.client()).await.is_ok()
}

const RELOAD_FAILURES: &str = r#"canary_gate_tls_reloads_total{call="reload",outcome="Failure"}"#;
const RELOAD_SUCCESSES: &str = r#"canary_gate_tls_reloads_total{call="reload",outcome="Success"}"#;

async fn reload_count(server: &TestServer, series: &str) -> f64 {
    let metrics = server.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    metric_value(&metrics.text(), series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_serves_a_new_pair_and_keeps_the_last_good_one() {
    let server = TestServer::start().await;
    let first_ca = &server.ca;
    assert!(handshake_ok(&server, first_ca).await);

    // A new pair from a new CA replaces the files: served without a restart.
    let second_ca = TestCa::new("second CA");
    write_pair(
        &server.cert_path,
        &server.key_path,
        &second_ca.serving_pair(),
    );
    assert!(
        eventually(Duration::from_secs(5), || handshake_ok(&server, &second_ca)).await,
        "the new certificate was not served within 5 s"
    );
    assert!(
        !handshake_ok(&server, first_ca).await,
        "the old certificate is still served"
    );
    assert!(reload_count(&server, RELOAD_SUCCESSES).await >= 1.0);

    // A broken certificate file is rejected; the last good pair keeps serving.
    let failures_before = reload_count(&server, RELOAD_FAILURES).await;
    std::fs::write(&server.cert_path, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failures_after = failures_before;
    while failures_after <= failures_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        failures_after = reload_count(&server, RELOAD_FAILURES).await;
    }
    assert!(
        failures_after > failures_before,
        "{RELOAD_FAILURES} stayed at {failures_after} for 5 s"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        handshake_ok(&server, &second_ca).await,
        "a broken certificate file replaced the last good one"
    );
    let readyz = server.admin_get("/readyz").await;
    assert_eq!(readyz.status, 200, "{}", readyz.text());

    // Fixing the files is picked up again: the watcher survived the failure.
    let third_ca = TestCa::new("third CA");
    write_pair(
        &server.cert_path,
        &server.key_path,
        &third_ca.serving_pair(),
    );
    assert!(
        eventually(Duration::from_secs(5), || handshake_ok(&server, &third_ca)).await,
        "a good pair after a broken one was not served within 5 s"
    );
    server.stop().await;
}

/// Kubernetes updates a mounted Secret by writing a new timestamped directory and swapping the
/// `..data` symlink atomically; `tls.crt` and `tls.key` are symlinks through `..data`.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_follows_a_secret_volume_symlink_swap() {
    use std::os::unix::fs::symlink;

    common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let first_ca = TestCa::new("first CA");
    let version = |root: &std::path::Path, name: &str, ca: &TestCa| {
        let version_dir = root.join(name);
        std::fs::create_dir(&version_dir).expect("mkdir");
        write_pair(
            &version_dir.join("tls.crt"),
            &version_dir.join("tls.key"),
            &ca.serving_pair(),
        );
    };
    let root = dir.path();
    version(root, "..2026_11_27_12_00_00.1", &first_ca);
    symlink("..2026_11_27_12_00_00.1", root.join("..data")).expect("..data");
    symlink("..data/tls.crt", root.join("tls.crt")).expect("tls.crt");
    symlink("..data/tls.key", root.join("tls.key")).expect("tls.key");
    let (cert, key) = (root.join("tls.crt"), root.join("tls.key"));
    let server = TestServer::start_with(first_ca, cert, key, dir).await;
    assert!(handshake_ok(&server, &server.ca).await);

    let second_ca = TestCa::new("second CA");
    let root = server.dir.path();
    version(root, "..2026_11_27_13_00_00.2", &second_ca);
    symlink("..2026_11_27_13_00_00.2", root.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(root.join("..2026_11_27_12_00_00.1")).expect("remove old version");
    assert!(
        eventually(Duration::from_secs(5), || handshake_ok(&server, &second_ca)).await,
        "the certificate behind the swapped ..data symlink was not served within 5 s"
    );
    assert!(!handshake_ok(&server, &server.ca).await);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Admin port

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_reports_health_readiness_and_admission_metrics() {
    let server = TestServer::start().await;

    let healthz = server.admin_get("/healthz").await;
    assert_eq!((healthz.status, healthz.text().trim()), (200, "ok"));
    let readyz = server.admin_get("/readyz").await;
    assert_eq!(readyz.status, 200, "{}", readyz.text());
    assert!(
        readyz.text().contains("webhook tls: ok"),
        "{}",
        readyz.text()
    );
    assert!(
        readyz.text().contains("analyzer: disabled (--no-analyzer)"),
        "{}",
        readyz.text()
    );

    const SERIES: &str = "canary_gate_admission_requests_total{";
    let before = server.admin_get("/metrics").await.text();
    assert!(
        !before.contains(SERIES),
        "admission series before any request:\n{before}"
    );

    let calls = [
        (MUTATE, "21-managed-update-image-kubectl-apply.mutate"),
        (MUTATE, "21-managed-update-image-kubectl-apply.mutate"),
        (MUTATE, "20-managed-create-kubectl-apply.mutate"),
        (MUTATE, "25-managed-update-scale-subresource.mutate"),
        (VALIDATE, "26-managed-update-bad-max-weight.validate"),
        (VALIDATE, "21-managed-update-image-kubectl-apply.validate"),
    ];
    for (path, name) in calls {
        let response = server.post(path, bytes(&fixture(name))).await;
        assert_eq!(response.status, 200, "{name}");
    }
    let response = server.post(MUTATE, &b"not json"[..]).await;
    assert_eq!(response.status, 400);

    let metrics = server.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let content_type = metrics.content_type.as_deref().unwrap_or("");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = metrics.text();
    let expected = [
        (
            r#"endpoint="mutate",outcome="patched",reason="rollout_started""#,
            2.0,
        ),
        (
            r#"endpoint="mutate",outcome="allowed",reason="not_an_update""#,
            1.0,
        ),
        (
            r#"endpoint="mutate",outcome="allowed",reason="not_a_deployment""#,
            1.0,
        ),
        (
            r#"endpoint="mutate",outcome="invalid",reason="not_json""#,
            1.0,
        ),
        (
            r#"endpoint="validate",outcome="denied",reason="invalid_settings""#,
            1.0,
        ),
        (
            r#"endpoint="validate",outcome="allowed",reason="valid""#,
            1.0,
        ),
    ];
    for (labels, value) in expected {
        let series = format!("canary_gate_admission_requests_total{{{labels}}}");
        assert_eq!(
            metric_value(&text, &series),
            Some(value),
            "{series} in\n{text}"
        );
    }
    assert_eq!(
        text.lines().filter(|l| l.starts_with(SERIES)).count(),
        expected.len(),
        "unexpected admission series in\n{text}"
    );
    let durations = [("mutate", 5.0), ("validate", 2.0)];
    for (endpoint, count) in durations {
        let series =
            format!("canary_gate_admission_duration_seconds_count{{endpoint=\"{endpoint}\"}}");
        assert_eq!(
            metric_value(&text, &series),
            Some(count),
            "{series} in\n{text}"
        );
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Startup and shutdown

async fn start_error(cert: &std::path::Path, key: &std::path::Path) -> String {
    common::install_crypto_provider();
    match canary_gate::cli::start(common::serve_args(cert, key)).await {
        Ok(running) => {
            running.stop().await;
            panic!(
                "started with cert {} and key {}",
                cert.display(),
                key.display()
            );
        }
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_refuses_a_missing_or_invalid_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("startup CA");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    write_pair(&cert, &key, &ca.serving_pair());
    let missing = dir.path().join("no-such-dir/tls.crt");

    let message = start_error(&missing, &key).await;
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );

    let missing_key = dir.path().join("missing.key");
    let message = start_error(&cert, &missing_key).await;
    assert!(
        message.contains(&missing_key.display().to_string()),
        "{message}"
    );

    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let message = start_error(&garbage, &key).await;
    assert!(
        message.contains(&garbage.display().to_string()),
        "{message}"
    );
    assert!(message.contains("no PEM certificate"), "{message}");

    let bad_key = dir.path().join("bad.key");
    std::fs::write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let message = start_error(&cert, &bad_key).await;
    assert!(
        message.contains(&bad_key.display().to_string()),
        "{message}"
    );

    // A certificate with somebody else's key.
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, ca.serving_pair().1).expect("write");
    let message = start_error(&cert, &other_key).await;
    assert!(message.contains(&cert.display().to_string()), "{message}");
    assert!(
        message.contains(&other_key.display().to_string()),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_both_ports() {
    let server = TestServer::start().await;
    let (webhook, admin) = (server.webhook(), server.admin());
    assert!(handshake_ok(&server, &server.ca).await);
    assert_eq!(
        http_get(admin, "/healthz").await.expect("healthz").status,
        200
    );
    server.stop().await;
    let closed = eventually(Duration::from_secs(2), || async {
        TcpStream::connect(webhook).await.is_err() && TcpStream::connect(admin).await.is_err()
    })
    .await;
    assert!(closed, "a port still accepts connections 2 s after stop()");
}

/// `stop()` (what `serve` runs on SIGTERM before the process exits) must let a request that
/// is already being read finish, like the 5 s graceful shutdown it asks axum-server for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_an_in_flight_request_finish() {
    let server = TestServer::start().await;
    let review = fixture("21-managed-update-image-kubectl-apply.mutate");
    let uid = review["request"]["uid"].as_str().expect("uid").to_string();
    let body = bytes(&review);
    let mut stream = tls_connect(server.webhook(), server.ca.client())
        .await
        .expect("TLS");
    let head = format!(
        "POST {MUTATE} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&body[..100]).await.expect("first bytes");
    stream.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "stop() returned while a request was in flight"
    );
    stream
        .write_all(&body[100..])
        .await
        .expect("rest of the body");
    stream.flush().await.expect("flush");
    let response = tokio::time::timeout(Duration::from_secs(5), read_raw_response(&mut stream))
        .await
        .expect("an answer during the graceful shutdown")
        .expect("a complete response");
    let answer = admission_answer(&response, 200, &uid).expect("answer");
    check_expectation(&answer, rollout("6.0.0 → 6.0.1")).expect("rollout");
    tokio::time::timeout(Duration::from_secs(6), stopping)
        .await
        .expect("stop() returns once the in-flight request is answered")
        .expect("stop() did not panic");
}

#[test]
fn base64_decoder_matches_known_vectors() {
    for (encoded, plain) in [
        ("", ""),
        ("Zg==", "f"),
        ("Zm8=", "fo"),
        ("Zm9v", "foo"),
        ("Zm9vYmFy", "foobar"),
        ("W3sib3AiOiJhZGQifV0=", r#"[{"op":"add"}]"#),
    ] {
        assert_eq!(
            base64_decode(encoded).as_deref(),
            Some(plain.as_bytes()),
            "{encoded}"
        );
    }
    assert_eq!(base64_decode("not base64!"), None);
}

/// The apiserver reuses idle connections for up to 90 s and does not retry a POST written
/// onto a connection the server is closing: a kept-alive connection must survive a quiet
/// spell longer than the 10 s first-request limit.
#[tokio::test]
async fn idle_keepalive_connections_survive_a_quiet_spell() {
    let server = TestServer::start().await;
    let review = fixture("21-managed-update-image-kubectl-apply.validate");
    let body = bytes(&review);
    let mut conn = tls_connect(server.webhook(), server.ca.client())
        .await
        .expect("TLS");
    for round in 0..2 {
        let head = format!(
            "POST /validate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.expect("write head");
        conn.write_all(&body).await.expect("write body");
        conn.flush().await.expect("flush");
        let response = read_raw_response(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(response.status, 200, "round {round}");
        if round == 0 {
            tokio::time::sleep(Duration::from_secs(12)).await;
        }
    }
}
