use canary_gate::admission::{
    pod::PodTemplate, review, revision::template_revision, WebhookConfig,
};
use canary_gate::settings::Settings;
use std::hint::black_box;
use std::time::Instant;
fn t(l: &str, mut f: impl FnMut()) {
    let n = 50_000;
    let s = Instant::now();
    for _ in 0..n {
        f()
    }
    println!("{l}: {:?}", s.elapsed() / n);
}
fn main() {
    let body =
        std::fs::read("tests/fixtures/admission/21-managed-update-image-kubectl-apply.mutate.json")
            .unwrap();
    let req = review::decode(&body).unwrap();
    let cfg = WebhookConfig::default();
    let tpl = req
        .object
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap();
    println!("template {} bytes", tpl.get().len());
    t("revision", || {
        black_box(template_revision(tpl));
    });
    t("pod parse", || {
        black_box(PodTemplate::parse(tpl).unwrap());
    });
    let ann = req
        .object
        .as_ref()
        .unwrap()
        .metadata
        .annotations
        .clone()
        .unwrap();
    t("settings", || {
        black_box(Settings::from_annotations(&cfg.defaults, &ann).unwrap());
    });
    let s = Settings::from_annotations(&cfg.defaults, &ann).unwrap();
    t("plan", || {
        black_box(s.plan());
    });
    t("now", || {
        black_box(jiff::Timestamp::now());
    });
    extra(tpl);
}
pub fn extra(tpl: &serde_json::value::RawValue) {
    t("node-like parse (Value)", || {
        black_box(serde_json::from_str::<serde_json::Value>(tpl.get()).unwrap());
    });
    let compact =
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(tpl.get()).unwrap())
            .unwrap();
    println!("compact {} bytes", compact.len());
    let raw = serde_json::value::RawValue::from_string(compact.clone()).unwrap();
    t("revision compact", || {
        black_box(template_revision(&raw));
    });
    t("ignore compact", || {
        black_box(serde_json::from_str::<serde::de::IgnoredAny>(&compact).unwrap());
    });
    t("sha compact", || {
        black_box(ring::digest::digest(
            &ring::digest::SHA256,
            compact.as_bytes(),
        ));
    });
}
