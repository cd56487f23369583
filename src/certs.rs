//! `canary-gate certs`: a private CA and a serving certificate for the admission webhook.
//!
//! The kube-apiserver only calls webhooks over HTTPS and must trust the serving certificate
//! through the `caBundle` of the webhook configuration. This subcommand produces both halves
//! (files for the pod, base64 bundle for the configuration) without needing openssl or
//! cert-manager on the admin's machine.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// File names inside `--out-dir`; they match the keys of a `kubernetes.io/tls` Secret plus the
/// CA, so the directory can be fed to `kubectl create secret generic --from-file`.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";

/// Upper bound on `--days`: far beyond any sane webhook certificate, and it keeps the date
/// arithmetic well inside what X.509 GeneralizedTime can express.
pub const MAX_DAYS: u32 = 36_500;

const SECS_PER_DAY: u64 = 86_400;

/// Arguments of `canary-gate certs`.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Name of the webhook's Kubernetes Service (first label of every DNS SAN).
    #[arg(long, env = "CANARY_GATE_CERTS_SERVICE", default_value = "canary-gate")]
    pub service: String,

    /// Namespace the webhook Service lives in.
    #[arg(
        long,
        env = "CANARY_GATE_CERTS_NAMESPACE",
        default_value = "canary-gate"
    )]
    pub namespace: String,

    /// Directory to write ca.crt, ca.key, tls.crt and tls.key into (created if missing).
    #[arg(long, env = "CANARY_GATE_CERTS_OUT_DIR", default_value = "certs")]
    pub out_dir: PathBuf,

    /// Validity of the CA and the serving certificate, in days.
    #[arg(
        long,
        env = "CANARY_GATE_CERTS_DAYS",
        default_value_t = 365,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS))
    )]
    pub days: u32,

    /// Extra DNS subject alternative name (repeatable or comma separated), e.g. localhost.
    #[arg(long, env = "CANARY_GATE_CERTS_EXTRA_DNS", value_delimiter = ',')]
    pub extra_dns: Vec<String>,

    /// Extra IP subject alternative name (repeatable or comma separated), e.g. 127.0.0.1.
    #[arg(long, env = "CANARY_GATE_CERTS_EXTRA_IP", value_delimiter = ',')]
    pub extra_ip: Vec<IpAddr>,

    /// Overwrite existing files in --out-dir.
    #[arg(
        long,
        env = "CANARY_GATE_CERTS_FORCE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub force: bool,
}

impl Default for CertsArgs {
    fn default() -> Self {
        Self {
            service: "canary-gate".to_owned(),
            namespace: "canary-gate".to_owned(),
            out_dir: PathBuf::from("certs"),
            days: 365,
            extra_dns: Vec::new(),
            extra_ip: Vec::new(),
            force: false,
        }
    }
}

/// Errors a caller may want to tell apart (bad input vs. refusing to overwrite vs. I/O).
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid {flag} {value:?}: {reason}")]
    InvalidName {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid --days {0}: must be between 1 and {MAX_DAYS}")]
    InvalidDays(u32),
    #[error("the system clock is before 1970")]
    Clock,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("refusing to overwrite existing {}: pass --force to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// PEM material and facts about it, as produced by [`generate`]. Nothing is written anywhere.
#[derive(Clone)]
pub struct Generated {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub tls_cert_pem: String,
    pub tls_key_pem: String,
    /// DNS SANs of the serving certificate, in the order they were put in.
    pub dns_names: Vec<String>,
    /// IP SANs of the serving certificate.
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Generated {
    /// Value for `caBundle` in a (Mutating|Validating)WebhookConfiguration: base64 of the CA PEM.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_cert_pem.as_bytes())
    }

    /// SANs in openssl's notation (`DNS:x`, `IP:y`), for humans.
    pub fn sans(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(self.ip_addresses.iter().map(|ip| format!("IP:{ip}")))
            .collect()
    }
}

// Hand-written so that `{:?}` in a log line or a test failure can never leak private keys.
impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generated")
            .field("dns_names", &self.dns_names)
            .field("ip_addresses", &self.ip_addresses)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("ca_key_pem", &"[elided]")
            .field("tls_key_pem", &"[elided]")
            .finish_non_exhaustive()
    }
}

/// Generates a fresh CA and a serving certificate signed by it (ECDSA P-256 keys).
///
/// The serving certificate covers `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`,
/// `<svc>.<ns>.svc.cluster.local`, then `extra_dns` and `extra_ip`. `out_dir` and `force`
/// are ignored here; see [`write_files`].
pub fn generate(args: &CertsArgs) -> Result<Generated, CertsError> {
    check_label("--service", &args.service)?;
    check_label("--namespace", &args.namespace)?;
    if args.days == 0 || args.days > MAX_DAYS {
        return Err(CertsError::InvalidDays(args.days));
    }
    let (dns_names, ip_addresses) = subject_alt_names(args)?;

    // Day granularity via rcgen's own date constructor: rcgen takes `time::OffsetDateTime`,
    // and `time` is not a dependency of ours. Starting yesterday absorbs clock skew between
    // this machine and the apiserver; ending one day late guarantees at least `days` days.
    let today = days_since_epoch(SystemTime::now())?;
    let first_day = today.saturating_sub(1);
    let last_day = today + u64::from(args.days) + 1;
    let (not_before, not_after) = (day_start(first_day), day_start(last_day));

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "canary-gate CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "canary-gate");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let (by, bm, bd) = civil_from_days(first_day)?;
    let (ay, am, ad) = civil_from_days(last_day)?;
    ca_params.not_before = rcgen::date_time_ymd(by, bm, bd);
    ca_params.not_after = rcgen::date_time_ymd(ay, am, ad);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_cert_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let tls_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{}.{}.svc", args.service, args.namespace),
    );
    params.subject_alt_names = dns_names
        .iter()
        .map(|d| rcgen::string::Ia5String::try_from(d.as_str()).map(SanType::DnsName))
        .collect::<Result<Vec<_>, _>>()?;
    params
        .subject_alt_names
        .extend(ip_addresses.iter().copied().map(SanType::IpAddress));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(by, bm, bd);
    params.not_after = rcgen::date_time_ymd(ay, am, ad);
    let tls_cert = params.signed_by(&tls_key, &issuer)?;

    Ok(Generated {
        ca_cert_pem,
        ca_key_pem,
        tls_cert_pem: tls_cert.pem(),
        tls_key_pem: tls_key.serialize_pem(),
        dns_names,
        ip_addresses,
        not_before,
        not_after,
    })
}

/// Writes the four PEM files into `out_dir` (created if needed) and returns their paths.
///
/// Without `force`, any existing target file aborts the whole write before anything is
/// written, so a half-replaced CA/cert pair can't happen. Keys get mode 0600 on unix.
pub fn write_files(
    generated: &Generated,
    out_dir: &Path,
    force: bool,
) -> Result<Vec<PathBuf>, CertsError> {
    let files: [(&str, &str, bool); 4] = [
        (CA_CERT_FILE, &generated.ca_cert_pem, false),
        (CA_KEY_FILE, &generated.ca_key_pem, true),
        (TLS_CERT_FILE, &generated.tls_cert_pem, false),
        (TLS_KEY_FILE, &generated.tls_key_pem, true),
    ];
    if !force {
        for (name, _, _) in &files {
            let path = out_dir.join(name);
            // symlink_metadata: a dangling symlink is still something we'd clobber.
            if fs::symlink_metadata(&path).is_ok() {
                return Err(CertsError::Exists { path });
            }
        }
    }
    fs::create_dir_all(out_dir).map_err(|source| CertsError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::with_capacity(files.len());
    for (name, contents, secret) in files {
        let path = out_dir.join(name);
        write_atomically(&path, contents.as_bytes(), secret)?;
        written.push(path);
    }
    Ok(written)
}

/// `canary-gate certs`: generate, write, and print what a human needs next.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let generated = generate(&args)?;
    let written = write_files(&generated, &args.out_dir, args.force)?;

    let stdout = io::stdout();
    let mut out = stdout.lock();
    print_report(&mut out, &generated, &written, args.days).context("writing to stdout")?;
    Ok(())
}

fn print_report(
    out: &mut impl Write,
    generated: &Generated,
    written: &[PathBuf],
    days: u32,
) -> io::Result<()> {
    for path in written {
        let note = match path.file_name().and_then(|n| n.to_str()) {
            Some(CA_KEY_FILE | TLS_KEY_FILE) => " (private key, mode 0600)",
            _ => "",
        };
        writeln!(out, "wrote {}{note}", path.display())?;
    }
    writeln!(out, "SANs: {}", generated.sans().join(", "))?;
    writeln!(
        out,
        "not after: {} (valid for at least {days} days)",
        humantime::format_rfc3339_seconds(generated.not_after)
    )?;
    writeln!(out, "caBundle: {}", generated.ca_bundle())?;
    Ok(())
}

/// Writes through a temporary file in the same directory and renames it into place: the
/// target is never seen half-written, and a replaced key gets fresh 0600 permissions
/// (`mode()` only applies when a file is created, so truncating an old 0644 key would keep
/// it world-readable).
fn write_atomically(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertsError> {
    let io_err = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("cert");
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));

    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;

    let result = (|| {
        let mut file = options.open(&tmp)?;
        // A stale temp file from a crashed run keeps its old mode; force the right one.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(if secret {
                0o600
            } else {
                0o644
            }))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

/// DNS SANs (cluster names first, then extras) and IP SANs, validated and de-duplicated.
fn subject_alt_names(args: &CertsArgs) -> Result<(Vec<String>, Vec<IpAddr>), CertsError> {
    let (svc, ns) = (&args.service, &args.namespace);
    let mut dns = vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ];
    let mut ips: Vec<IpAddr> = Vec::new();
    for extra in &args.extra_dns {
        let extra = extra.trim();
        // People write `--extra-dns 127.0.0.1`; a DNS SAN with an IP text never matches an
        // IP connection, so do what they meant.
        if let Ok(ip) = extra.parse::<IpAddr>() {
            ips.push(ip);
            continue;
        }
        check_dns_name(extra)?;
        dns.push(extra.to_ascii_lowercase());
    }
    ips.extend(args.extra_ip.iter().copied());

    let mut seen = HashSet::new();
    dns.retain(|d| seen.insert(d.clone()));
    let mut seen = HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    Ok((dns, ips))
}

/// Service and namespace names are DNS-1123 labels in Kubernetes; checking here gives a
/// message naming the flag instead of a certificate that silently matches nothing.
fn check_label(flag: &'static str, value: &str) -> Result<(), CertsError> {
    let invalid = |reason: &str| CertsError::InvalidName {
        flag,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value.is_empty() || value.len() > 63 {
        return Err(invalid("must be 1 to 63 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "must contain only lowercase letters, digits and '-' (a DNS-1123 label)",
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(invalid("must start and end with a letter or digit"));
    }
    Ok(())
}

fn check_dns_name(value: &str) -> Result<(), CertsError> {
    // rustls' DnsName knows the rules but not wildcards, which are legal in a SAN.
    let rest = value.strip_prefix("*.").unwrap_or(value);
    rustls::pki_types::DnsName::try_from(rest)
        .map(|_| ())
        .map_err(|_| CertsError::InvalidName {
            flag: "--extra-dns",
            value: value.to_owned(),
            reason: "not a valid DNS name".to_owned(),
        })
}

fn days_since_epoch(t: SystemTime) -> Result<u64, CertsError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / SECS_PER_DAY)
        .map_err(|_| CertsError::Clock)
}

fn day_start(day: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(day * SECS_PER_DAY)
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01, after Howard
/// Hinnant's `civil_from_days`; exact for every day we can be asked for.
fn civil_from_days(day: u64) -> Result<(i32, u8, u8), CertsError> {
    let z = i64::try_from(day).map_err(|_| CertsError::Clock)? + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // m is in 1..=12 and d in 1..=31 by construction; the errors are unreachable.
    Ok((
        i32::try_from(y).map_err(|_| CertsError::Clock)?,
        u8::try_from(m).map_err(|_| CertsError::Clock)?,
        u8::try_from(d).map_err(|_| CertsError::Clock)?,
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    use super::*;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn args_with_extras() -> CertsArgs {
        CertsArgs {
            extra_dns: vec!["localhost".into()],
            extra_ip: vec!["127.0.0.1".parse().expect("literal ip")],
            ..CertsArgs::default()
        }
    }

    fn certs_of(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert PEM parses")
    }

    fn roots_of(generated: &Generated) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for ca in certs_of(&generated.ca_cert_pem) {
            roots.add(ca).expect("CA accepted as trust anchor");
        }
        Arc::new(roots)
    }

    fn verify_at(generated: &Generated, name: &str, now: UnixTime) -> Result<(), rustls::Error> {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots_of(generated),
            provider(),
        )
        .build()
        .expect("verifier builds");
        let chain = certs_of(&generated.tls_cert_pem);
        let (leaf, intermediates) = chain.split_first().expect("one certificate");
        let name = ServerName::try_from(name.to_owned()).expect("valid server name");
        verifier
            .verify_server_cert(leaf, intermediates, &name, &[], now)
            .map(|_| ())
    }

    fn verify(generated: &Generated, name: &str) -> Result<(), rustls::Error> {
        verify_at(generated, name, UnixTime::now())
    }

    /// A full TLS 1.3 handshake between in-memory rustls client and server connections:
    /// proves the key matches the certificate and the chain is usable, not only parseable.
    fn handshake(generated: &Generated, name: &str) -> Result<(), rustls::Error> {
        let key = PrivateKeyDer::from_pem_slice(generated.tls_key_pem.as_bytes())
            .expect("key PEM parses");
        let server_config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs_of(&generated.tls_cert_pem), key)?;
        let client_config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots_of(generated))
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned()).expect("valid server name");
        let mut client = ClientConnection::new(Arc::new(client_config), name)?;
        let mut server = ServerConnection::new(Arc::new(server_config))?;

        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).expect("write to Vec");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).expect("read from slice");
                server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).expect("write to Vec");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).expect("read from slice");
                client.process_new_packets()?;
            }
        }
        panic!("handshake did not finish in 10 round trips");
    }

    #[test]
    fn serving_cert_verifies_for_service_names_and_extras() {
        let generated = generate(&args_with_extras()).expect("generate");
        for name in [
            "canary-gate",
            "canary-gate.canary-gate",
            "canary-gate.canary-gate.svc",
            "canary-gate.canary-gate.svc.cluster.local",
            "localhost",
            "127.0.0.1",
        ] {
            verify(&generated, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(
            generated.sans(),
            [
                "DNS:canary-gate",
                "DNS:canary-gate.canary-gate",
                "DNS:canary-gate.canary-gate.svc",
                "DNS:canary-gate.canary-gate.svc.cluster.local",
                "DNS:localhost",
                "IP:127.0.0.1",
            ]
        );
    }

    #[test]
    fn wrong_names_are_rejected() {
        let generated = generate(&args_with_extras()).expect("generate");
        for name in [
            "other.canary-gate.svc",
            "canary-gate.default.svc",
            "127.0.0.2",
        ] {
            let err = verify(&generated, name).expect_err(name);
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                            | rustls::CertificateError::NotValidForNameContext { .. }
                    )
                ),
                "{name}: {err:?}"
            );
        }
        // Without --extra-ip the loopback address must not be accepted.
        let plain = generate(&CertsArgs::default()).expect("generate");
        assert!(verify(&plain, "127.0.0.1").is_err());
    }

    #[test]
    fn another_ca_is_not_trusted() {
        let a = generate(&CertsArgs::default()).expect("generate");
        let b = generate(&CertsArgs::default()).expect("generate");
        let mixed = Generated {
            ca_cert_pem: b.ca_cert_pem.clone(),
            ..a
        };
        let err = verify(&mixed, "canary-gate.canary-gate.svc").expect_err("foreign CA");
        // Both CAs share the subject "canary-gate CA", so webpki finds a candidate issuer by
        // name and then rejects its signature.
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                        | rustls::CertificateError::BadSignature
                )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn validity_window_covers_the_requested_days() {
        let args = CertsArgs {
            days: 30,
            ..CertsArgs::default()
        };
        let generated = generate(&args).expect("generate");
        let now = SystemTime::now();
        let at = |t: SystemTime| {
            UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).expect("after 1970"))
        };
        let day = Duration::from_secs(SECS_PER_DAY);
        let name = "canary-gate.canary-gate.svc";
        verify_at(&generated, name, at(now + day * 30)).expect("valid after 30 days");
        verify_at(&generated, name, at(now - Duration::from_secs(3600)))
            .expect("an hour of clock skew is tolerated");
        let err = verify_at(&generated, name, at(now + day * 33)).expect_err("expired");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                )
            ),
            "{err:?}"
        );
        assert!(generated.not_after > now + day * 30);
        assert!(generated.not_after < now + day * 32);
        assert!(generated.not_before < now);
    }

    #[test]
    fn tls_handshake_succeeds_with_generated_pair() {
        let generated = generate(&args_with_extras()).expect("generate");
        handshake(&generated, "canary-gate.canary-gate.svc").expect("handshake by DNS name");
        handshake(&generated, "127.0.0.1").expect("handshake by IP");
        assert!(handshake(&generated, "example.com").is_err());
    }

    #[test]
    fn ca_bundle_is_base64_of_ca_pem() {
        let generated = generate(&CertsArgs::default()).expect("generate");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(generated.ca_bundle())
            .expect("base64");
        assert_eq!(decoded, generated.ca_cert_pem.as_bytes());
        assert!(generated
            .ca_cert_pem
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{generated:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn custom_service_namespace_and_wildcard_extra() {
        let args = CertsArgs {
            service: "webhook".into(),
            namespace: "ops".into(),
            extra_dns: vec!["*.example.test".into(), "WebHook.Example.Test".into()],
            ..CertsArgs::default()
        };
        let generated = generate(&args).expect("generate");
        assert_eq!(
            generated.dns_names,
            [
                "webhook",
                "webhook.ops",
                "webhook.ops.svc",
                "webhook.ops.svc.cluster.local",
                "*.example.test",
                "webhook.example.test",
            ]
        );
        verify(&generated, "webhook.ops.svc").expect("service name");
        verify(&generated, "anything.example.test").expect("wildcard");
    }

    #[test]
    fn bad_input_is_named_in_the_error() {
        let bad_service = CertsArgs {
            service: "Canary_Gate".into(),
            ..CertsArgs::default()
        };
        let err = generate(&bad_service).expect_err("invalid service");
        assert!(
            matches!(
                err,
                CertsError::InvalidName {
                    flag: "--service",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("Canary_Gate"), "{err}");

        let bad_dns = CertsArgs {
            extra_dns: vec!["bad name".into()],
            ..CertsArgs::default()
        };
        let err = generate(&bad_dns).expect_err("invalid extra dns");
        assert!(
            matches!(
                err,
                CertsError::InvalidName {
                    flag: "--extra-dns",
                    ..
                }
            ),
            "{err:?}"
        );

        let zero_days = CertsArgs {
            days: 0,
            ..CertsArgs::default()
        };
        assert!(matches!(
            generate(&zero_days),
            Err(CertsError::InvalidDays(0))
        ));
    }

    #[test]
    fn ip_given_as_extra_dns_becomes_an_ip_san() {
        let args = CertsArgs {
            extra_dns: vec!["::1".into()],
            extra_ip: vec!["::1".parse().expect("literal ip")],
            ..CertsArgs::default()
        };
        let generated = generate(&args).expect("generate");
        assert_eq!(
            generated.ip_addresses,
            ["::1".parse::<IpAddr>().expect("ip")]
        );
        verify(&generated, "::1").expect("IPv6 SAN");
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "canary-gate-certs-test-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn existing_files_are_refused_without_force() {
        let dir = scratch_dir("force");
        let generated = generate(&CertsArgs::default()).expect("generate");
        write_files(&generated, &dir, false).expect("first write");

        let again = generate(&CertsArgs::default()).expect("generate");
        let err = write_files(&again, &dir, false).expect_err("second write refused");
        match &err {
            CertsError::Exists { path } => assert_eq!(path, &dir.join(CA_CERT_FILE)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(err.to_string().contains("ca.crt"), "{err}");
        // Nothing was replaced.
        let on_disk = fs::read_to_string(dir.join(CA_CERT_FILE)).expect("read");
        assert_eq!(on_disk, generated.ca_cert_pem);

        // Only the last file existing must still block the whole write.
        fs::remove_file(dir.join(CA_CERT_FILE)).expect("rm");
        let err = write_files(&again, &dir, false).expect_err("refused");
        assert!(matches!(err, CertsError::Exists { .. }), "{err:?}");
        assert!(!dir.join(CA_CERT_FILE).exists());

        write_files(&again, &dir, true).expect("forced write");
        let on_disk = fs::read_to_string(dir.join(TLS_CERT_FILE)).expect("read");
        assert_eq!(on_disk, again.tls_cert_pem);
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch_dir("modes");
        fs::create_dir_all(&dir).expect("mkdir");
        // A pre-existing world-readable key must come out 0600 after --force.
        fs::write(dir.join(TLS_KEY_FILE), "old").expect("write");
        fs::set_permissions(dir.join(TLS_KEY_FILE), fs::Permissions::from_mode(0o644))
            .expect("chmod");

        let args = CertsArgs {
            out_dir: dir.clone(),
            force: true,
            ..args_with_extras()
        };
        run(args).expect("run");
        let mode = |name: &str| {
            fs::metadata(dir.join(name))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(TLS_KEY_FILE), 0o600);
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        assert_eq!(mode(TLS_CERT_FILE), 0o644);

        // What was written is what the server will load.
        let key = fs::read(dir.join(TLS_KEY_FILE)).expect("read key");
        PrivateKeyDer::from_pem_slice(&key).expect("key parses");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn report_lists_files_sans_expiry_and_bundle() {
        let generated = generate(&args_with_extras()).expect("generate");
        let written = vec![
            PathBuf::from("certs/ca.crt"),
            PathBuf::from("certs/tls.key"),
        ];
        let mut out = Vec::new();
        print_report(&mut out, &generated, &written, 365).expect("print");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("wrote certs/ca.crt\n"), "{text}");
        assert!(
            text.contains("wrote certs/tls.key (private key, mode 0600)"),
            "{text}"
        );
        assert!(text.contains("DNS:canary-gate.canary-gate.svc"), "{text}");
        assert!(text.contains("IP:127.0.0.1"), "{text}");
        assert!(text.contains("not after: "), "{text}");
        assert!(
            text.contains(&format!("caBundle: {}\n", generated.ca_bundle())),
            "{text}"
        );
    }

    #[test]
    fn clap_parses_repeated_and_comma_separated_extras() {
        use clap::Parser as _;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            args: CertsArgs,
        }
        let cli = Cli::try_parse_from([
            "certs",
            "--service",
            "hook",
            "--namespace",
            "ops",
            "--out-dir",
            "/tmp/x",
            "--days",
            "7",
            "--extra-dns",
            "localhost",
            "--extra-dns",
            "a.test,b.test",
            "--extra-ip",
            "127.0.0.1,::1",
            "--force",
        ])
        .expect("parses");
        assert_eq!(cli.args.service, "hook");
        assert_eq!(cli.args.namespace, "ops");
        assert_eq!(cli.args.out_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cli.args.days, 7);
        assert_eq!(cli.args.extra_dns, ["localhost", "a.test", "b.test"]);
        assert_eq!(cli.args.extra_ip.len(), 2);
        assert!(cli.args.force);

        let defaults = Cli::try_parse_from(["certs"]).expect("parses");
        assert_eq!(defaults.args.service, CertsArgs::default().service);
        assert_eq!(defaults.args.out_dir, PathBuf::from("certs"));
        assert_eq!(defaults.args.days, 365);
        assert!(!defaults.args.force);

        let err = Cli::try_parse_from(["certs", "--extra-ip", "localhost"]).expect_err("ip");
        assert!(err.to_string().contains("localhost"), "{err}");
        assert!(Cli::try_parse_from(["certs", "--days", "0"]).is_err());
    }

    #[test]
    fn civil_dates_match_humantime() {
        // humantime formats SystemTime independently; agreeing on every day across leap
        // years and century rules is a good oracle for the hand-written conversion.
        for day in (0..=80_000u64)
            .step_by(7)
            .chain([11_016, 11_017, 19_782, 47_541])
        {
            let (y, m, d) = civil_from_days(day).expect("civil");
            let expected = humantime::format_rfc3339_seconds(day_start(day)).to_string();
            assert_eq!(
                format!("{y:04}-{m:02}-{d:02}T00:00:00Z"),
                expected,
                "day {day}"
            );
        }
    }
}
