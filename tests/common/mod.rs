//! Shared helpers for the integration tests: a throw-away CA and serving certificates (rcgen),
//! a `canary-gate serve` started in-process through the real CLI path, and small HTTPS/HTTP
//! clients that trust only the test CA.
#![allow(dead_code)] // each test binary uses a different subset

pub mod crds;
pub mod schema;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use canary_gate::cli::{self, Args, Command, Running, ServeArgs};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// No single exchange in these tests may take longer: a hang is a failure, not a stuck run.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A throw-away certificate authority.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving certificate for `localhost` and 127.0.0.1 signed by this CA: (cert PEM, key PEM).
    pub fn serving_pair(&self) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf signed by CA");
        (cert.pem(), key.serialize_pem())
    }

    /// A client that trusts this CA and nothing else, offering TLS 1.3 and 1.2.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.client_with_versions(rustls::ALL_VERSIONS)
    }

    pub fn client_with_versions(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots
                .add(cert.expect("CA PEM"))
                .expect("CA is a valid trust anchor");
        }
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Writes a PEM pair where the webhook reads it.
pub fn write_pair(cert_path: &Path, key_path: &Path, (cert, key): &(String, String)) {
    std::fs::write(key_path, key).expect("write key");
    std::fs::write(cert_path, cert).expect("write cert");
}

/// `canary-gate serve ...` parsed by the real clap definition.
pub fn serve_args(cert: &Path, key: &Path) -> ServeArgs {
    serve_args_with(cert, key, &[])
}

/// [`serve_args`] plus `extra` flags (e.g. `--policy-require-resource-requests=true`).
pub fn serve_args_with(cert: &Path, key: &Path, extra: &[String]) -> ServeArgs {
    let base: [&std::ffi::OsStr; 13] = [
        "canary-gate".as_ref(),
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--admin-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
        "--no-analyzer".as_ref(),
        "--tls-reload-interval".as_ref(),
        "200ms".as_ref(),
    ];
    let args = Args::try_parse_from(
        base.into_iter()
            .chain(extra.iter().map(|f| std::ffi::OsStr::new(f.as_str()))),
    )
    .expect("serve arguments parse");
    let Command::Serve(serve) = args.command else {
        panic!("`serve` did not parse as Command::Serve");
    };
    *serve
}

/// A running `canary-gate serve` with its certificate files in a temporary directory.
pub struct TestServer {
    pub running: Running,
    pub ca: TestCa,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with_flags(&[]).await
    }

    /// Like [`TestServer::start`], with `extra` flags on the `serve` command line.
    pub async fn start_with_flags(extra: &[String]) -> Self {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("canary-gate test CA");
        let cert_path = dir.path().join("tls.crt");
        let key_path = dir.path().join("tls.key");
        write_pair(&cert_path, &key_path, &ca.serving_pair());
        let running = cli::start(serve_args_with(&cert_path, &key_path, extra))
            .await
            .unwrap_or_else(|e| panic!("canary-gate serve did not start: {e:#}"));
        TestServer {
            running,
            ca,
            cert_path,
            key_path,
            dir,
        }
    }

    /// Starts on files the caller prepared (e.g. a Secret-volume-like symlink layout).
    pub async fn start_with(
        ca: TestCa,
        cert_path: PathBuf,
        key_path: PathBuf,
        dir: tempfile::TempDir,
    ) -> Self {
        install_crypto_provider();
        let running = cli::start(serve_args(&cert_path, &key_path))
            .await
            .unwrap_or_else(|e| panic!("canary-gate serve did not start: {e:#}"));
        TestServer {
            running,
            ca,
            cert_path,
            key_path,
            dir,
        }
    }

    pub fn webhook(&self) -> SocketAddr {
        self.running.webhook_addr
    }

    pub fn admin(&self) -> SocketAddr {
        self.running.admin_addr
    }

    /// POST over HTTPS, trusting only the test CA; panics on transport errors.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> HttpResponse {
        let body = body.into();
        self.try_post(path, body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn try_post(&self, path: &str, body: Bytes) -> Result<HttpResponse, String> {
        https_post(self.webhook(), self.ca.client(), path, body).await
    }

    /// GET on the plain-HTTP admin port; panics on transport errors.
    pub async fn admin_get(&self, path: &str) -> HttpResponse {
        http_get(self.admin(), path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the admin port: {e}"))
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// One HTTP exchange's outcome.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A TLS connection to the webhook as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    TlsConnector::from(config).connect(name, tcp).await
}

pub async fn https_post(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    body: Bytes,
) -> Result<HttpResponse, String> {
    let exchange = async {
        let stream = tls_connect(addr, config)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        send(stream, request).await
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {IO_TIMEOUT:?}"))?
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        send(stream, request).await
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {IO_TIMEOUT:?}"))?
}

/// One HTTP/1.1 request on its own connection (hyper's client).
async fn send<S>(io: S, request: hyper::Request<Full<Bytes>>) -> Result<HttpResponse, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed (connection dropped?): {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    driver.abort();
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
}

/// Reads one HTTP/1.1 response (status line, headers, `Content-Length` body) from a raw stream.
pub async fn read_raw_response<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<HttpResponse, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = reader
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the response head: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut content_type = None;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(value.trim().to_string()),
                "content-length" => length = value.trim().parse::<usize>().ok(),
                _ => {}
            }
        }
    }
    let length = length.ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = reader
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the response body: {e}"))?;
        if n == 0 {
            return Err("connection closed in the middle of the body".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(HttpResponse {
        status,
        content_type,
        body: body.into(),
    })
}

/// The value of one exposition line, e.g.
/// `canary_gate_tls_reloads_total{call="reload",outcome="Failure"}`.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Standard base64 (with or without padding), as Go's `encoding/json` writes `[]byte`.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Polls `check` every 100 ms until it returns true or `within` has passed.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
