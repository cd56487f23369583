//! Cost of one admission decision without network or TLS: decode, decide, encode.
//! `cargo run --release --example admission_cost` (used to find where webhook time goes).
use std::time::Instant;

use canary_gate::admission::{mutate, review, validate, WebhookConfig};

fn main() {
    let cfg = WebhookConfig::default();
    for name in [
        "21-managed-update-image-kubectl-apply.mutate",
        "23-managed-update-image-server-side-apply.mutate.2",
    ] {
        let path = format!(
            "{}/tests/fixtures/admission/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).expect("fixture");
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            let _ = review::decode(&body).expect("decodes");
        }
        let decode = t.elapsed() / n;
        let req = review::decode(&body).expect("decodes");
        let t = Instant::now();
        for _ in 0..n {
            let _ = mutate::decide(&req, &cfg, jiff::Timestamp::now());
            let _ = validate::decide(&req, &cfg);
        }
        let decide = t.elapsed() / n;
        let t = Instant::now();
        for _ in 0..n {
            let r = review::allow(&req);
            let _ = review::encode(r);
        }
        let encode = t.elapsed() / n;
        println!(
            "{name}: {} bytes; decode {decode:?}, mutate+validate {decide:?}, encode {encode:?}",
            body.len()
        );
    }
}
