//! Cost of one admission decision without network or TLS: decode, decide, encode, for the
//! three request kinds of `scripts/bench-webhook.sh`, on compact JSON as the apiserver sends it.
//! `cargo run --release --example admission_cost` (used to find where webhook time goes).
use std::hint::black_box;
use std::time::{Duration, Instant};

use canary_gate::admission::{mutate, review, validate, WebhookConfig};

const N: u32 = 20_000;
const BATCHES: usize = 5;

/// The fastest of a few batches: other work on a shared box only ever adds time.
fn per_call(mut f: impl FnMut()) -> Duration {
    (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..N {
                f();
            }
            t.elapsed() / N
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let cfg = WebhookConfig::default();
    for (kind, name) in [
        ("patch", "21-managed-update-image-kubectl-apply.mutate"),
        (
            "pass-through",
            "23-managed-update-image-server-side-apply.mutate.2",
        ),
        ("validate", "21-managed-update-image-kubectl-apply.validate"),
    ] {
        let path = format!(
            "{}/tests/fixtures/admission/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let pretty: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
        let body = serde_json::to_vec(&pretty).expect("compact");
        let scan = per_call(|| {
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&body).expect("json"));
        });
        let decode = per_call(|| {
            black_box(review::decode(&body).expect("decodes"));
        });
        let req = review::decode(&body).expect("decodes");
        let now = jiff::Timestamp::now();
        let decide = if kind == "validate" {
            per_call(|| {
                black_box(validate::decide(&req, &cfg));
            })
        } else {
            per_call(|| {
                black_box(mutate::decide(&req, &cfg, now));
            })
        };
        // The answer the server sends for this decision: with the patch and warnings if any.
        let answer = match mutate::decide(&req, &cfg, now) {
            mutate::Mutation::Patch {
                patch, warnings, ..
            } if kind != "validate" => (Some(patch), warnings),
            _ => (None, Vec::new()),
        };
        let encode = per_call(|| {
            let base = review::Answer::allow(&req);
            let a = match &answer {
                (Some(patch), warnings) => base.with_patch(patch, warnings.clone()).expect("patch"),
                _ => base,
            };
            black_box(a.encode());
        });
        // One pod template's revision, the part of a patch decision that grows with the template.
        let template = req
            .object
            .as_ref()
            .and_then(|o| o.spec.as_ref())
            .and_then(|s| s.template.as_ref());
        let revision = per_call(|| {
            black_box(template.map(|t| canary_gate::admission::revision::template_revision(t)));
        });
        println!(
            "{kind:>12} ({name}, {} bytes): scan only {scan:?} | decode {decode:?}, decide {decide:?} (one revision {revision:?}), encode {encode:?}",
            body.len()
        );
    }
}
