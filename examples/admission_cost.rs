//! Cost of one admission decision without network or TLS: decode, decide, encode.
//! `cargo run --release --example admission_cost` (used to find where webhook time goes).
use std::time::Instant;

use canary_gate::admission::{mutate, review, validate, WebhookConfig};

fn main() {
    lean_decode_cost();
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

#[allow(dead_code)] // fields are decoded to measure the cost, not read
mod lean {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    pub struct Review {
        pub request: Option<Request>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Request {
        pub uid: String,
        pub kind: Value,
        #[serde(default)]
        pub sub_resource: Option<String>,
        #[serde(default)]
        pub name: String,
        pub operation: String,
        pub user_info: Value,
        pub object: Option<Obj>,
        pub old_object: Option<Obj>,
        #[serde(default)]
        pub dry_run: bool,
    }
    #[derive(Deserialize)]
    pub struct Obj {
        pub metadata: Meta,
        #[serde(default)]
        pub spec: Option<Value>,
    }
    #[derive(Deserialize)]
    pub struct Meta {
        pub name: Option<String>,
        pub labels: Option<BTreeMap<String, String>>,
        pub annotations: Option<BTreeMap<String, String>>,
    }
}

/// What decoding would cost with a lean request type that skips managedFields and does not
/// buffer the object for `DynamicObject`'s flattened data (the next optimisation, issue 6).
fn lean_decode_cost() {
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
            let r: lean::Review = serde_json::from_slice(&body).expect("lean");
            std::hint::black_box(r);
        }
        println!("{name}: lean decode {:?}", t.elapsed() / n);
    }
}
