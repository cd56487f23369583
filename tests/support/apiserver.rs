//! Just enough of a Kubernetes API server, over plain HTTP on loopback, for the real kube
//! client and the real `KubeCluster`: list (label selectors, pages, metadata-only lists),
//! watch (replayed from a resourceVersion, then live), get, create, merge patch (with
//! resourceVersion preconditions), server-side apply (create, or merge into what is there),
//! JSON patch and delete. Deployments settle at every write as if their pods were ready at
//! once (there is no kubelet). Objects are kept as JSON, the way they would be stored; every
//! call is counted by verb and resource.
//!
//! Resources: Deployments, Services, VirtualServices, Events (core and events.k8s.io).
//! Anything else answers 404, as for a CRD that is not installed (HTTPRoutes here: an
//! Istio-only cluster).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// (group/version path prefix, plural, kind).
const RESOURCES: &[(&str, &str, &str)] = &[
    ("apis/apps/v1", "deployments", "Deployment"),
    ("api/v1", "services", "Service"),
    (
        "apis/networking.istio.io/v1",
        "virtualservices",
        "VirtualService",
    ),
    ("api/v1", "events", "Event"),
    ("apis/events.k8s.io/v1", "events", "Event"),
];

#[derive(Clone)]
struct Change {
    version: u64,
    resource: &'static str,
    kind: &'static str,
    object: Arc<Value>,
}

#[derive(Default)]
struct Store {
    /// (resource, namespace, name) -> object.
    objects: BTreeMap<(&'static str, String, String), Arc<Value>>,
    version: u64,
    /// Every change, for watches that start from an older resourceVersion.
    history: VecDeque<Change>,
    calls: BTreeMap<String, u64>,
}

struct Shared {
    store: Mutex<Store>,
    changes: tokio::sync::broadcast::Sender<Change>,
}

pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeApiServer {
    pub async fn start() -> std::io::Result<FakeApiServer> {
        let (changes, _) = tokio::sync::broadcast::channel(1 << 16);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changes,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeApiServer { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stores an object as a user's `kubectl apply` would, without counting it as a call.
    /// Typed objects serialise their own `apiVersion` and `kind`, which pick the resource.
    pub fn put(&self, object: &impl serde::Serialize) {
        let value = serde_json::to_value(object).expect("object as JSON");
        let resource = resource_of(&value).expect("a resource this server keeps");
        let mut store = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
        let ns = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        store_write(&self.shared, &mut store, resource, &ns, &name, None, value);
    }

    /// Calls by "verb resource" (`list deployments`, `patch virtualservices`, ...).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.shared
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .calls
            .clone()
    }

    pub fn object(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
        store
            .objects
            .iter()
            .find(|((r, n, m), _)| *r == resource && n == ns && m == name)
            .map(|(_, v)| (**v).clone())
    }

    /// Objects of one resource (all namespaces).
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        let store = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
        store
            .objects
            .iter()
            .filter(|((r, _, _), _)| *r == resource)
            .map(|(_, v)| (**v).clone())
            .collect()
    }
}

/// The plural of the object's `kind`, if this server keeps that resource.
fn resource_of(v: &Value) -> Option<&'static str> {
    let kind = v["kind"].as_str()?;
    RESOURCES
        .iter()
        .find(|(_, _, k)| *k == kind)
        .map(|(_, plural, _)| *plural)
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What a request addresses.
struct Target {
    resource: &'static str,
    kind: &'static str,
    api_version: String,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let path = path.trim_matches('/');
    for (prefix, plural, kind) in RESOURCES {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let (namespace, rest) = match segments.as_slice() {
            ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest.to_vec()),
            rest => (None, rest.to_vec()),
        };
        let api_version = prefix
            .trim_start_matches("apis/")
            .trim_start_matches("api/")
            .to_string();
        match rest.as_slice() {
            [p] if p == plural => {
                return Some(Target {
                    resource: plural,
                    kind,
                    api_version,
                    namespace,
                    name: None,
                })
            }
            [p, name] if p == plural => {
                return Some(Target {
                    resource: plural,
                    kind,
                    api_version,
                    namespace,
                    name: Some(name.to_string()),
                })
            }
            _ => continue,
        }
    }
    None
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `a`, `!a`, `a=b`, `a==b`, `a!=b`, comma-separated (all must hold).
fn selects(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some(key) = term.strip_prefix('!') {
                labels.get(key).is_none()
            } else if let Some((k, v)) = term.split_once("!=") {
                labels.get(k).and_then(Value::as_str) != Some(v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels.get(k).and_then(Value::as_str) == Some(v)
            } else {
                labels.get(term).is_some()
            }
        })
}

/// What the Deployment controller would report with pods that are ready at once.
fn settle(old: Option<&Value>, d: &mut Value) {
    let generation = match old {
        None => 1,
        Some(o) => {
            let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
            if o["spec"] != d["spec"] {
                g + 1
            } else {
                g
            }
        }
    };
    d["metadata"]["generation"] = json!(generation);
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let paused = d["spec"]["paused"].as_bool().unwrap_or(false);
    let updated = if paused {
        old.and_then(|o| o["status"]["updatedReplicas"].as_i64())
            .unwrap_or(0)
            .min(replicas)
    } else {
        replicas
    };
    // With the conditions the Deployment controller writes, as a watch receives them.
    d["status"] = json!({
        "replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
        "updatedReplicas": updated, "observedGeneration": generation,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": "ReplicaSet has successfully progressed."},
        ],
    });
}

/// Stores `object` (a create when `old` is None) with a new resourceVersion, records and
/// broadcasts the change, and returns the stored object.
fn store_write(
    shared: &Shared,
    store: &mut Store,
    resource: &'static str,
    ns: &str,
    name: &str,
    old: Option<Arc<Value>>,
    mut object: Value,
) -> Arc<Value> {
    store.version += 1;
    let version = store.version;
    object["metadata"]["name"] = json!(name);
    if !ns.is_empty() {
        object["metadata"]["namespace"] = json!(ns);
    }
    object["metadata"]["resourceVersion"] = json!(version.to_string());
    if object["metadata"]["uid"].is_null() {
        object["metadata"]["uid"] = json!(format!("uid-{resource}-{ns}-{name}"));
    }
    if resource == "deployments" {
        settle(old.as_deref(), &mut object);
    }
    let object = Arc::new(object);
    store
        .objects
        .insert((resource, ns.to_string(), name.to_string()), object.clone());
    let change = Change {
        version,
        resource,
        kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
        object: object.clone(),
    };
    store.history.push_back(change.clone());
    let _ = shared.changes.send(change);
    object
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/fake/calls" {
        let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        return ok(StatusCode::OK, &json!(store.calls));
    }
    // The newest resourceVersion, uncounted: how far behind a watch is (the benchmark).
    if uri.path() == "/fake/version" {
        let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        return ok(StatusCode::OK, &json!(store.version));
    }
    let Some(target) = parse_path(uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource ({})",
                uri.path()
            ),
        );
    };
    let params = query(&uri);
    let watching = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &target.name, watching) {
        (&Method::GET, None, true) => "watch",
        (&Method::GET, None, false) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, _, _) => "create",
        (&Method::PATCH, _, _) => "patch",
        (&Method::PUT, _, _) => "update",
        (&Method::DELETE, _, _) => "delete",
        _ => "other",
    };
    {
        let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        *store
            .calls
            .entry(format!("{verb} {}", target.resource))
            .or_default() += 1;
    }
    match verb {
        "watch" => watch(shared, target, params),
        "list" => list(&shared, &target, &params, &headers),
        "get" => get(&shared, &target),
        "create" => create(&shared, &target, &body),
        "patch" => patch(&shared, &target, &headers, &body),
        "delete" => delete(&shared, &target),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        ),
    }
}

fn matches(target: &Target, params: &BTreeMap<String, String>, key_ns: &str, obj: &Value) -> bool {
    target.namespace.as_deref().is_none_or(|ns| ns == key_ns)
        && params
            .get("labelSelector")
            .is_none_or(|s| selects(s, &obj["metadata"]["labels"]))
}

fn list(
    shared: &Shared,
    target: &Target,
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let metadata_only = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadataList"));
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let skip: usize = params
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let all: Vec<&Arc<Value>> = store
        .objects
        .iter()
        .filter(|((r, ns, _), obj)| *r == target.resource && matches(target, params, ns, obj))
        .map(|(_, v)| v)
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(limit)
        .map(|v| {
            if metadata_only {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": v["metadata"]})
            } else {
                (***v).clone()
            }
        })
        .collect();
    let next = skip.saturating_add(page.len());
    let mut meta = json!({"resourceVersion": store.version.to_string()});
    if next < all.len() {
        meta["continue"] = json!(next.to_string());
    }
    let (api_version, kind) = if metadata_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (target.api_version.clone(), format!("{}List", target.kind))
    };
    ok(
        StatusCode::OK,
        &json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "items": page}),
    )
}

fn key(target: &Target) -> (&'static str, String, String) {
    (
        target.resource,
        target.namespace.clone().unwrap_or_default(),
        target.name.clone().unwrap_or_default(),
    )
}

fn not_found(target: &Target) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "{} \"{}\" not found",
            target.resource,
            target.name.as_deref().unwrap_or_default()
        ),
    )
}

fn get(shared: &Shared, target: &Target) -> Response {
    let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    match store.objects.get(&key(target)) {
        Some(v) => ok(StatusCode::OK, v),
        None => not_found(target),
    }
}

fn create(shared: &Shared, target: &Target, body: &[u8]) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "body is not JSON".into(),
        );
    };
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let name = match object["metadata"]["name"].as_str() {
        Some(n) => n.to_string(),
        None => format!(
            "{}{}",
            object["metadata"]["generateName"]
                .as_str()
                .unwrap_or("object-"),
            store.version + 1
        ),
    };
    let ns = target.namespace.clone().unwrap_or_default();
    if store
        .objects
        .contains_key(&(target.resource, ns.clone(), name.clone()))
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", target.resource),
        );
    }
    object["apiVersion"] = json!(target.api_version);
    object["kind"] = json!(target.kind);
    let stored = store_write(
        shared,
        &mut store,
        target.resource,
        &ns,
        &name,
        None,
        object,
    );
    ok(StatusCode::CREATED, &stored)
}

fn patch(shared: &Shared, target: &Target, headers: &HeaderMap, body: &[u8]) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "body is not JSON".into(),
        );
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let k = key(target);
    let old = store.objects.get(&k).cloned();
    let apply = content_type.starts_with("application/apply-patch");
    let mut next = match (&old, apply) {
        (Some(o), _) => (**o).clone(),
        (None, true) => {
            json!({"apiVersion": target.api_version, "kind": target.kind, "metadata": {}})
        }
        (None, false) => return not_found(target),
    };
    if content_type.starts_with("application/json-patch") {
        let Ok(ops) = serde_json::from_value::<json_patch::Patch>(patch) else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "not a JSON patch".into(),
            );
        };
        if let Err(e) = json_patch::patch(&mut next, &ops) {
            return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string());
        }
    } else {
        let wanted = &patch["metadata"]["resourceVersion"];
        if let (false, Some(o)) = (wanted.is_null(), &old) {
            if *wanted != o["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again".into(),
                );
            }
        }
        json_patch::merge(&mut next, &patch);
    }
    let stored = store_write(shared, &mut store, k.0, &k.1, &k.2, old, next);
    ok(StatusCode::OK, &stored)
}

fn delete(shared: &Shared, target: &Target) -> Response {
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let Some(old) = store.objects.remove(&key(target)) else {
        return not_found(target);
    };
    store.version += 1;
    let change = Change {
        version: store.version,
        resource: target.resource,
        kind: "DELETED",
        object: old.clone(),
    };
    store.history.push_back(change.clone());
    let _ = shared.changes.send(change);
    ok(StatusCode::OK, &old)
}

/// Changes after `resourceVersion` (replayed), then live ones, as newline-delimited watch
/// events, until `timeoutSeconds` or the client goes away.
fn watch(shared: Arc<Shared>, target: Target, params: BTreeMap<String, String>) -> Response {
    // Subscribe before reading the history so that nothing falls between the two.
    let live = shared.changes.subscribe();
    let since: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let replay: VecDeque<Change> = {
        let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        let start = store.history.partition_point(|c| c.version <= since);
        store.history.range(start..).cloned().collect()
    };
    let last = replay.back().map_or(since, |c| c.version);
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let state = (replay, live, last, target, params);
    let stream = futures::stream::unfold(
        state,
        move |(mut replay, mut live, mut last, target, params)| async move {
            loop {
                let change = match replay.pop_front() {
                    Some(c) => c,
                    None => match tokio::time::timeout_at(deadline, live.recv()).await {
                        Ok(Ok(c)) if c.version > last => c,
                        Ok(Ok(_)) => continue,
                        // Lagged or closed: end the watch; the client lists again.
                        Ok(Err(_)) | Err(_) => return None,
                    },
                };
                last = last.max(change.version);
                let ns = change.object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if change.resource != target.resource
                    || !matches(&target, &params, &ns, &change.object)
                {
                    continue;
                }
                let mut line =
                    json!({"type": change.kind, "object": change.object.as_ref()}).to_string();
                line.push('\n');
                return Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                    (replay, live, last, target, params),
                ));
            }
        },
    );
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
