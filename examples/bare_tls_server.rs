//! The floor for `scripts/bench-webhook.sh`: a bare axum + axum-server + rustls (ring) HTTPS
//! server built from the same crates and versions as canary-gate, answering every POST with a
//! fixed body and doing no decoding at all. Whatever the webhook costs on top of this is ours.
//!
//! ```text
//! cargo run --release --example bare_tls_server -- \
//!     --listen 127.0.0.1:9443 --tls-cert tls.crt --tls-key tls.key \
//!     --body /mutate-patch=answer-patch.json --body /validate=answer-validate.json
//! ```
//!
//! Each `--body PATH=FILE` serves FILE's bytes (read once at start) for `POST PATH`; the bench
//! script fills them with the webhook's own answers so that both servers write the same number
//! of bytes. The request body is received in full (a real server must read it) but not parsed.
//!
//! With `--scan`, each body is also checked to be one JSON value (serde_json, building nothing)
//! before the fixed answer goes out: the least any webhook that reads its input must do, so the
//! bench can tell the cost of reading JSON at all from the cost of canary-gate's decisions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Same bound as the webhook, so that both read bodies the same way.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

#[derive(Clone)]
struct Answers {
    bodies: Arc<HashMap<String, Bytes>>,
    scan: bool,
}

struct Args {
    listen: SocketAddr,
    cert: String,
    key: String,
    bodies: HashMap<String, Bytes>,
    scan: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bare_tls_server --listen ADDR --tls-cert FILE --tls-key FILE [--scan] --body /PATH=FILE..."
    );
    std::process::exit(2)
}

fn parse_args() -> anyhow::Result<Args> {
    let mut listen = None;
    let mut cert = None;
    let mut key = None;
    let mut bodies = HashMap::new();
    let mut scan = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--listen" => listen = Some(value().parse()?),
            "--tls-cert" => cert = Some(value()),
            "--tls-key" => key = Some(value()),
            "--scan" => scan = true,
            "--body" => {
                let spec = value();
                let Some((path, file)) = spec.split_once('=') else {
                    usage()
                };
                let bytes = std::fs::read(file)
                    .map_err(|e| anyhow::anyhow!("cannot read body file {file}: {e}"))?;
                bodies.insert(path.to_string(), Bytes::from(bytes));
            }
            _ => usage(),
        }
    }
    match (listen, cert, key) {
        (Some(listen), Some(cert), Some(key)) if !bodies.is_empty() => Ok(Args {
            listen,
            cert,
            key,
            bodies,
            scan,
        }),
        _ => usage(),
    }
}

/// The same TLS settings as the webhook: ring, TLS 1.3 + 1.2, no client auth, ALPN http/1.1.
fn tls_config(cert: &str, key: &str) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn answer(State(answers): State<Answers>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    // Receive the whole request like the webhook does.
    let Ok(received) = to_bytes(request.into_body(), MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    if answers.scan && serde_json::from_slice::<serde::de::IgnoredAny>(&received).is_err() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match answers.bodies.get(&path) {
        Some(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body.clone()),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let config = tls_config(&args.cert, &args.key)?;
    let paths: Vec<String> = args.bodies.keys().cloned().collect();
    let router = Router::new().fallback(answer).with_state(Answers {
        bodies: Arc::new(args.bodies),
        scan: args.scan,
    });
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    println!(
        "bare_tls_server listening on https://{} for POST {paths:?} (scan: {})",
        args.listen, args.scan
    );
    axum_server::bind_rustls(args.listen, rustls)
        .serve(router.into_make_service())
        .await?;
    Ok(())
}
