//! Routes. The webhook handlers read the body themselves (bounded, with a timeout) so that
//! every request gets an AdmissionReview answer: axum's `Json` extractor would reject a bad
//! body before our code runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use jiff::Timestamp;
use tracing::Instrument;

use super::health::Health;
use crate::admission::mutate::{self, Mutation};
use crate::admission::review::{self, Answer, DecodeError};
use crate::admission::validate::{self, Validation};
use crate::admission::WebhookConfig;
use crate::dashboard::{html as pages, Dashboard, SCRIPT};
use crate::metrics::{AdmissionLabels, EndpointLabels, Metrics};

/// Real reviews are a few KiB; the apiserver caps objects at ~3 MiB and a review carries two.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How long a kept-alive connection may wait for its next request (longer than the
/// apiserver's 90 s idle timeout).
pub const IDLE_KEEPALIVE: Duration = Duration::from_secs(100);
/// A client that has not sent its whole body by then is holding a connection hostage.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<WebhookConfig>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The web dashboard; `None` with `--no-dashboard` (its routes are not served).
    pub dashboard: Option<Arc<Dashboard>>,
}

pub fn webhook_router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler))
        .route("/validate", post(validate_handler))
        .with_state(state)
}

/// The plain-HTTP admin port: health, metrics and (unless disabled) the read-only dashboard.
/// Unauthenticated: it must stay cluster-internal (reach it with `kubectl port-forward`).
pub fn admin_router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.dashboard.is_some() {
        router = router
            .route("/", get(dashboard_list))
            .route("/dashboard.js", get(dashboard_script))
            .route("/rollouts/{ns}/{name}", get(dashboard_rollout))
            .route("/api/rollouts", get(api_rollouts))
            .route("/api/rollouts/{ns}/{name}", get(api_rollout));
    }
    router.with_state(state)
}

/// `?wait=<version>`: answer once the data differs from that version (long poll);
/// `?fragment=live`: only the live part of a rollout page.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DashboardQuery {
    pub wait: Option<String>,
    pub fragment: Option<String>,
}

const WAIT: Duration = crate::dashboard::MAX_WAIT;
/// Pages only run our own script and styles; nothing is fetched from anywhere else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(status: StatusCode, body: String, version: Option<&str>) -> Response {
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response();
    if let Some(v) = version.and_then(|v| header::HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert("x-version", v);
    }
    response
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "dashboard JSON could not be encoded");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding error\n").into_response()
        }
    }
}

fn disabled() -> Response {
    (StatusCode::NOT_FOUND, "dashboard disabled\n").into_response()
}

async fn dashboard_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn dashboard_list(State(state): State<AppState>) -> Response {
    let Some(d) = state.dashboard.as_ref() else {
        return disabled();
    };
    let list = d.list(Timestamp::now()).await;
    page(StatusCode::OK, pages::list_page(&list), Some(&list.version))
}

async fn dashboard_rollout(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<DashboardQuery>,
) -> Response {
    let Some(d) = state.dashboard.as_ref() else {
        return disabled();
    };
    let fragment = q.fragment.as_deref() == Some("live");
    let wait = if fragment { q.wait.as_deref() } else { None };
    match d.wait_detail(&ns, &name, wait, WAIT).await {
        Ok(Some(detail)) if fragment => {
            page(StatusCode::OK, pages::live(&detail), Some(&detail.version))
        }
        Ok(Some(detail)) => page(
            StatusCode::OK,
            pages::rollout_page(&detail),
            Some(&detail.version),
        ),
        Ok(None) => page(
            StatusCode::NOT_FOUND,
            pages::not_found(&format!("no rollout recorded on deployment {ns}/{name}")),
            None,
        ),
        Err(why) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(&why),
            None,
        ),
    }
}

async fn api_rollouts(State(state): State<AppState>, Query(q): Query<DashboardQuery>) -> Response {
    let Some(d) = state.dashboard.as_ref() else {
        return disabled();
    };
    let list = match q.wait.as_deref() {
        Some(v) => d.wait_list(Some(v), WAIT).await,
        None => d.list(Timestamp::now()).await,
    };
    let status = if list.error.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &list)
}

async fn api_rollout(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<DashboardQuery>,
) -> Response {
    let Some(d) = state.dashboard.as_ref() else {
        return disabled();
    };
    match d.wait_detail(&ns, &name, q.wait.as_deref(), WAIT).await {
        Ok(Some(detail)) => json(StatusCode::OK, &detail),
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no rollout recorded on deployment {ns}/{name}")}),
        ),
        Err(why) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": why }),
        ),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, report) = state.health.report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[derive(Clone, Copy)]
enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

async fn mutate_handler(State(state): State<AppState>, request: Request) -> Response {
    admit(state, Endpoint::Mutate, request.into_body()).await
}

async fn validate_handler(State(state): State<AppState>, request: Request) -> Response {
    admit(state, Endpoint::Validate, request.into_body()).await
}

async fn admit(state: AppState, endpoint: Endpoint, body: Body) -> Response {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, MAX_BODY_BYTES)).await {
        Err(_) => Err((StatusCode::REQUEST_TIMEOUT, "body not received in time")),
        Ok(Err(e)) if is_length_limit(&e) => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, "body larger than 8 MiB"))
        }
        Ok(Err(_)) => Err((StatusCode::BAD_REQUEST, "body could not be read")),
        Ok(Ok(bytes)) => Ok(bytes),
    };
    let (status, body, labels) = match outcome {
        Err((status, reason)) => {
            tracing::warn!(endpoint = endpoint.name(), %status, reason, "admission body rejected");
            let labels = AdmissionLabels {
                endpoint: endpoint.name(),
                outcome: "invalid",
                reason: "body",
            };
            (status, Answer::malformed("", reason).encode(), labels)
        }
        Ok(bytes) => decide(&state, endpoint, &bytes),
    };
    state
        .metrics
        .admission_requests
        .get_or_create(&labels)
        .inc();
    state
        .metrics
        .admission_duration
        .get_or_create(&EndpointLabels {
            endpoint: endpoint.name(),
        })
        .observe(started.elapsed().as_secs_f64());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Was the body refused for its size (as opposed to a client that went away)?
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn decide(
    state: &AppState,
    endpoint: Endpoint,
    bytes: &[u8],
) -> (StatusCode, Vec<u8>, AdmissionLabels) {
    let ep = endpoint.name();
    let request = match review::decode(bytes) {
        Ok(r) => r,
        Err(error) => {
            let (status, uid) = match &error {
                DecodeError::NotJson(_) => (StatusCode::BAD_REQUEST, ""),
                DecodeError::Malformed { uid, .. } => (StatusCode::OK, uid.as_str()),
            };
            tracing::warn!(endpoint = ep, uid, %error, "malformed admission request");
            let labels = AdmissionLabels {
                endpoint: ep,
                outcome: "invalid",
                reason: error.kind(),
            };
            return (
                status,
                Answer::malformed(uid, &error.to_string()).encode(),
                labels,
            );
        }
    };
    // Decide first, then open the request's span at the level of what it logs: an admission
    // that is denied or patched is logged (info) within its span; a pass-through logs nothing
    // at the default level, and its span (debug) then costs nothing. At 40,000 reviews/s
    // an info span on every request was ~3 µs each, an eighth of the request's CPU.
    let decision = match endpoint {
        Endpoint::Mutate => {
            Decision::Mutate(mutate::decide(&request, &state.config, Timestamp::now()))
        }
        Endpoint::Validate => Decision::Validate(validate::decide(&request, &state.config)),
    };
    let quiet = matches!(
        decision,
        Decision::Mutate(Mutation::Pass { .. }) | Decision::Validate(Validation::Allow { .. })
    );
    macro_rules! admission_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "admission",
                endpoint = ep,
                uid = %request.uid,
                kind = %request.kind.kind,
                namespace = request.namespace.as_deref().unwrap_or(""),
                object = %request.name,
                operation = ?request.operation,
                user = request.user_info.username.as_deref().unwrap_or(""),
                dry_run = request.dry_run,
            )
        };
    }
    let span = if quiet {
        admission_span!(tracing::Level::DEBUG)
    } else {
        admission_span!(tracing::Level::INFO)
    };
    let _entered = span.enter();
    let base = Answer::allow(&request);
    let (response, outcome, reason) = match decision {
        Decision::Mutate(Mutation::Pass { reason })
        | Decision::Validate(Validation::Allow { reason }) => (base, "allowed", reason),
        Decision::Mutate(Mutation::Deny { reason, message })
        | Decision::Validate(Validation::Deny { reason, message }) => {
            tracing::info!(reason, detail = %message, "denied");
            (base.deny(message), "denied", reason)
        }
        Decision::Mutate(Mutation::Patch {
            reason,
            patch,
            warnings,
        }) => {
            tracing::info!(reason, warnings = %warnings.join(" | "), "patched");
            match base.clone().with_patch(&patch, warnings) {
                Ok(r) => (r, "patched", reason),
                // Refusing is safer than letting an unguarded release through.
                Err(error) => {
                    tracing::error!(%error, "patch could not be serialised");
                    (
                        base.deny("canary-gate could not encode its patch; retry"),
                        "denied",
                        "internal",
                    )
                }
            }
        }
    };
    tracing::debug!(outcome, reason, "admission decided");
    (
        StatusCode::OK,
        response.encode(),
        AdmissionLabels {
            endpoint: ep,
            outcome,
            reason,
        },
    )
}

/// The decision of either endpoint.
enum Decision {
    Mutate(Mutation),
    Validate(Validation),
}

/// Serves the HTTPS webhook on an already bound listener until `shutdown` fires.
pub async fn serve_webhook(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    handle: axum_server::Handle<std::net::SocketAddr>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    // Slow or stuck clients are cut off at every stage: handshake, headers, first request.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .handshake_timeout(Duration::from_secs(10));
    let mut server = axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle)
        .first_request_timeout(Duration::from_secs(10));
    // hyper counts the wait for the next request on a kept-alive connection as header read
    // time. The apiserver keeps idle connections for 90 s and does not retry a POST written
    // onto a connection we are closing, so idle connections must outlive its idle timeout;
    // a new connection still has to send its first request within 10 s.
    server
        .http_builder()
        .http1()
        .header_read_timeout(IDLE_KEEPALIVE);
    server
        .serve(router.into_make_service())
        .instrument(tracing::info_span!("webhook"))
        .await
}
