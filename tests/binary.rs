//! The shipped binary as a pod runs it: `canary-gate serve` in its own process, JSON logs on
//! stderr, stopped with SIGTERM. Logs are written by a background thread, so this checks that
//! what was logged reaches stderr, up to the last line before exit.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{https_post, write_pair, TestCa};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStderr, Command};

const REVIEW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/admission/21-managed-update-image-kubectl-apply.mutate.json"
);
const WAIT: Duration = Duration::from_secs(20);

/// The next JSON log line whose message is `message`; panics after `WAIT` or at end of output.
async fn line_with(lines: &mut Lines<BufReader<ChildStderr>>, message: &str) -> Value {
    let next = async {
        while let Some(line) = lines.next_line().await.expect("stderr readable") {
            let parsed = serde_json::from_str::<Value>(&line)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
            if parsed["fields"]["message"] == message {
                return parsed;
            }
        }
        panic!("stderr ended without a log line {message:?}")
    };
    tokio::time::timeout(WAIT, next)
        .await
        .unwrap_or_else(|_| panic!("no log line {message:?} on stderr within {WAIT:?}"))
}

#[tokio::test]
async fn serve_logs_reach_stderr_up_to_the_last_line() {
    common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("binary-test-ca");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    write_pair(&cert, &key, &ca.serving_pair());

    let mut child = Command::new(env!("CARGO_BIN_EXE_canary-gate"))
        .args(["serve", "--no-analyzer", "--log-format", "json"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("canary-gate starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();

    let serving = line_with(&mut lines, "canary-gate serving").await;
    let addr = serving["fields"]["webhook_addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no webhook_addr in {serving}"));
    let review = std::fs::read(REVIEW).expect("fixture");
    let answer = https_post(addr, ca.client(), "/mutate?timeout=10s", review.into())
        .await
        .expect("webhook answers");
    assert_eq!(answer.status, 200, "{}", answer.text());

    // The admission is logged with its span, as it happened. JSON logs keep the object's
    // name: a span field called `name` would clash with the span's own name.
    let patched = line_with(&mut lines, "patched").await;
    assert_eq!(patched["fields"]["reason"], "rollout_started", "{patched}");
    assert_eq!(patched["span"]["name"], "admission", "{patched}");
    assert_eq!(patched["span"]["object"], "podinfo", "{patched}");
    assert_eq!(patched["span"]["namespace"], "shop", "{patched}");

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    // The very last line is written after the servers stopped, just before `run` returns.
    line_with(&mut lines, "stopped").await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
}
