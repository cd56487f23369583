//! Notifications and the outbound client against real HTTP servers on loopback that record the
//! requests and answer 2xx, 4xx, 5xx, slowly or never.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use canary_gate::metrics::{Metrics, NotificationLabels, OutboundLabels};
use canary_gate::outbound::notify::{
    parse_channels, Channels, Notification, Notifier, NotifyConfig, SecretUrl,
};
use canary_gate::outbound::{Outbound, OutboundError};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    Slow(Duration, u16),
    Never,
    Redirect,
}

#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    content_type: Option<String>,
    body: Value,
}

struct Target {
    seen: Mutex<Vec<Recorded>>,
    count: AtomicUsize,
    /// The answer to the n-th request (counting from 0).
    answer: Box<dyn Fn(usize) -> Answer + Send + Sync>,
}

async fn record(
    State(t): State<Arc<Target>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = t.count.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    t.seen.lock().expect("lock").push(Recorded {
        path: uri.path().to_string(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    });
    let status = |s: u16| StatusCode::from_u16(s).expect("status");
    match (t.answer)(n) {
        Answer::Status(s) => (status(s), "ok").into_response(),
        Answer::Slow(d, s) => {
            tokio::time::sleep(d).await;
            (status(s), "slow").into_response()
        }
        Answer::Never => std::future::pending::<Response>().await,
        Answer::Redirect => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:9/elsewhere")],
            "",
        )
            .into_response(),
    }
}

struct Server {
    base: String,
    target: Arc<Target>,
}

impl Server {
    async fn start(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Server {
        let target = Arc::new(Target {
            seen: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            answer: Box::new(answer),
        });
        let app = Router::new().fallback(record).with_state(target.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            base: format!("http://{addr}"),
            target,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Recorded> {
        self.target.seen.lock().expect("lock").clone()
    }

    fn count(&self) -> usize {
        self.target.count.load(Ordering::SeqCst)
    }
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn outbound() -> (Outbound, Arc<Metrics>) {
    install_crypto();
    let metrics = Metrics::new();
    (Outbound::new(metrics.clone()).expect("client"), metrics)
}

fn notification(reason: &str, message: &str, channels: Channels) -> Notification {
    Notification {
        namespace: "shop".into(),
        deployment: "cart".into(),
        reason: reason.into(),
        message: message.into(),
        phase: "Failed".into(),
        weight: 0,
        channels,
    }
}

fn config(server: &Server) -> NotifyConfig {
    NotifyConfig {
        slack: Some(SecretUrl::new(server.url("/slack"))),
        teams: Some(SecretUrl::new(server.url("/teams"))),
        webhook: Some(SecretUrl::new(server.url("/webhook"))),
        timeout: Duration::from_millis(500),
        attempts: 3,
        backoff: Duration::from_millis(20),
        ..NotifyConfig::default()
    }
}

fn sent(m: &Metrics, provider: &'static str, outcome: &'static str) -> u64 {
    m.notifications
        .get_or_create(&NotificationLabels { provider, outcome })
        .get()
}

fn calls(m: &Metrics, kind: &'static str, outcome: &'static str) -> u64 {
    m.outbound_calls
        .get_or_create(&OutboundLabels { kind, outcome })
        .get()
}

async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn payloads_have_the_shapes_slack_teams_and_the_webhook_accept() {
    let server = Server::start(|_| Answer::Status(200)).await;
    let (out, metrics) = outbound();
    let (notifier, worker) = Notifier::new(out, config(&server));
    tokio::spawn(worker);
    let text = "rolled back: success rate 91.2 % < 99 % (gate success-rate) <!channel> & co";
    notifier.notify(notification("RolledBack", text, Channels::ALL));
    eventually("three deliveries", Duration::from_secs(5), || {
        sent(&metrics, "slack", "sent")
            + sent(&metrics, "teams", "sent")
            + sent(&metrics, "webhook", "sent")
            == 3
    })
    .await;
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let by = |p: &str| seen.iter().find(|r| r.path == p).expect(p).clone();
    for r in &seen {
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/json"),
            "{}",
            r.path
        );
    }

    // Slack incoming webhook: `text` fallback plus Block Kit blocks; sections carry mrkdwn.
    let slack = by("/slack").body;
    assert!(slack["text"].as_str().expect("text").contains("shop/cart"));
    let blocks = slack["blocks"].as_array().expect("blocks");
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    for b in blocks {
        let ty = b["type"].as_str().expect("block type");
        assert!(["header", "section", "context"].contains(&ty), "{ty}");
    }
    let section = blocks
        .iter()
        .find(|b| b["type"] == "section")
        .expect("section");
    assert_eq!(section["text"]["type"], "mrkdwn");
    let st = section["text"]["text"].as_str().expect("section text");
    assert!(st.contains("success rate 91.2 %"));
    assert!(
        st.contains("&lt;!channel&gt; &amp; co"),
        "markup escaped: {st}"
    );
    assert!(st.chars().count() <= 3000);
    let header = blocks
        .iter()
        .find(|b| b["type"] == "header")
        .expect("header");
    assert_eq!(header["text"]["type"], "plain_text");

    // Teams Workflows webhook: a message with one Adaptive Card attachment.
    let teams = by("/teams").body;
    assert_eq!(teams["type"], "message");
    let attachments = teams["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachments[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    let body = card["body"].as_array().expect("card body");
    assert!(body.iter().all(|e| e["type"].is_string()));
    assert!(body
        .iter()
        .any(|e| e["type"] == "TextBlock" && e["text"].as_str() == Some(text)));

    // Generic webhook: exactly the documented fields.
    let hook = by("/webhook").body;
    let o = hook.as_object().expect("object");
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "deployment",
            "kind",
            "message",
            "namespace",
            "phase",
            "reason",
            "timestamp",
            "weight"
        ]
    );
    assert_eq!(hook["kind"], "rolled-back");
    assert_eq!(hook["namespace"], "shop");
    assert_eq!(hook["deployment"], "cart");
    assert_eq!(hook["reason"], "RolledBack");
    assert_eq!(hook["message"], text);
    assert_eq!(hook["phase"], "Failed");
    assert_eq!(hook["weight"], 0);
    let ts: jiff::Timestamp = hook["timestamp"]
        .as_str()
        .expect("timestamp")
        .parse()
        .expect("RFC 3339");
    assert!((jiff::Timestamp::now() - ts).get_seconds().abs() < 60);
    assert_eq!(calls(&metrics, "slack", "success"), 1);
    assert_eq!(calls(&metrics, "teams", "success"), 1);
    assert_eq!(calls(&metrics, "webhook", "success"), 1);
}

#[tokio::test]
async fn a_5xx_is_retried_with_backoff_until_it_succeeds() {
    let server = Server::start(|n| {
        if n < 2 {
            Answer::Status(503)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    let (out, metrics) = outbound();
    let cfg = NotifyConfig {
        slack: None,
        teams: None,
        ..config(&server)
    };
    let (notifier, worker) = Notifier::new(out, cfg);
    tokio::spawn(worker);
    let started = Instant::now();
    notifier.notify(notification(
        "CanaryStarted",
        "canary abc started",
        Channels::ALL,
    ));
    eventually("sent", Duration::from_secs(5), || {
        sent(&metrics, "webhook", "sent") == 1
    })
    .await;
    // Backoff 20 ms then 40 ms.
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(server.count(), 3);
    assert_eq!(sent(&metrics, "webhook", "failed"), 0);
    assert_eq!(calls(&metrics, "webhook", "failure"), 2);
    assert_eq!(calls(&metrics, "webhook", "success"), 1);
}

#[tokio::test]
async fn a_5xx_that_never_ends_fails_after_the_bounded_attempts() {
    let server = Server::start(|_| Answer::Status(500)).await;
    let (out, metrics) = outbound();
    let cfg = NotifyConfig {
        teams: None,
        webhook: None,
        ..config(&server)
    };
    let (notifier, worker) = Notifier::new(out, cfg);
    tokio::spawn(worker);
    notifier.notify(notification("RolledBack", "rolled back", Channels::ALL));
    eventually("failed", Duration::from_secs(5), || {
        sent(&metrics, "slack", "failed") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.count(), 3);
    assert_eq!(sent(&metrics, "slack", "sent"), 0);
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let server = Server::start(|_| Answer::Status(400)).await;
    let (out, metrics) = outbound();
    let cfg = NotifyConfig {
        slack: None,
        webhook: None,
        ..config(&server)
    };
    let (notifier, worker) = Notifier::new(out, cfg);
    tokio::spawn(worker);
    notifier.notify(notification(
        "HookFailed",
        "hook smoke failed: 500",
        Channels::ALL,
    ));
    eventually("failed", Duration::from_secs(5), || {
        sent(&metrics, "teams", "failed") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(server.count(), 1);
    assert_eq!(calls(&metrics, "teams", "failure"), 1);
}

#[tokio::test]
async fn a_hanging_endpoint_costs_one_timeout_per_attempt_and_notify_returns_at_once() {
    let server = Server::start(|_| Answer::Never).await;
    let (out, metrics) = outbound();
    let cfg = NotifyConfig {
        slack: None,
        teams: None,
        timeout: Duration::from_millis(300),
        attempts: 2,
        backoff: Duration::from_millis(50),
        ..config(&server)
    };
    let (notifier, worker) = Notifier::new(out, cfg);
    tokio::spawn(worker);
    let started = Instant::now();
    notifier.notify(notification(
        "Paused",
        "paused by hand at 20 %",
        Channels::ALL,
    ));
    assert!(
        started.elapsed() < Duration::from_millis(20),
        "notify() waited"
    );
    eventually("failed", Duration::from_secs(5), || {
        sent(&metrics, "webhook", "failed") == 1
    })
    .await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(650), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(server.count(), 2);
    assert_eq!(calls(&metrics, "webhook", "timeout"), 2);
}

#[tokio::test]
async fn a_thousand_notifications_to_a_dead_endpoint_never_block_and_overflow_is_dropped() {
    let server = Server::start(|_| Answer::Never).await;
    let (out, metrics) = outbound();
    let cfg = NotifyConfig {
        slack: None,
        teams: None,
        timeout: Duration::from_secs(30),
        attempts: 1,
        queue: 16,
        ..config(&server)
    };
    let (notifier, worker) = Notifier::new(out, cfg);
    tokio::spawn(worker);
    let started = Instant::now();
    for i in 0..1000 {
        notifier.notify(notification(
            "RolledBack",
            &format!("rolled back {i}"),
            Channels::ALL,
        ));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(50),
        "1,000 notify() took {took:?}"
    );
    let dropped = sent(&metrics, "webhook", "dropped");
    // 16 fit in the queue, at most one more is already with the worker.
    assert!((983..=984).contains(&dropped), "dropped {dropped}");
    notifier.notify(notification("RolledBack", "one more", Channels::ALL));
    assert_eq!(sent(&metrics, "webhook", "dropped"), dropped + 1);
}

#[tokio::test]
async fn off_and_unwanted_reasons_send_nothing() {
    let server = Server::start(|_| Answer::Status(200)).await;
    let (out, metrics) = outbound();
    let (notifier, worker) = Notifier::new(out, config(&server));
    let handle = tokio::spawn(worker);
    let off = parse_channels(Some("off")).expect("off");
    notifier.notify(notification("RolledBack", "rolled back", off));
    notifier.notify(notification(
        "WeightIncreased",
        "weight 20 %",
        Channels::ALL,
    ));
    notifier.notify(notification(
        "Succeeded",
        "revision abc promoted",
        Channels::ALL,
    ));
    // Dropping the last Notifier ends the worker once the queue is drained.
    drop(notifier);
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("worker ends")
        .expect("worker ran");
    assert_eq!(server.count(), 0);
    for p in ["slack", "teams", "webhook"] {
        for o in ["sent", "failed", "dropped"] {
            assert_eq!(sent(&metrics, p, o), 0, "{p} {o}");
        }
    }
}

#[tokio::test]
async fn the_annotation_selects_the_channels() {
    let server = Server::start(|_| Answer::Status(200)).await;
    let (out, metrics) = outbound();
    let (notifier, worker) = Notifier::new(out, config(&server));
    let handle = tokio::spawn(worker);
    let teams = parse_channels(Some("teams")).expect("teams");
    notifier.notify(notification(
        "WaitingForApproval",
        "waiting for approval",
        teams,
    ));
    let two = parse_channels(Some("slack, webhook")).expect("two");
    notifier.notify(notification("CanaryStarted", "canary started", two));
    drop(notifier);
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("worker ends")
        .expect("worker ran");
    let mut paths: Vec<String> = server.seen().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(paths, ["/slack", "/teams", "/webhook"]);
    let teams_body = server
        .seen()
        .into_iter()
        .find(|r| r.path == "/teams")
        .expect("teams")
        .body;
    assert_eq!(
        teams_body["attachments"][0]["content"]["body"][1]["text"],
        "waiting for approval"
    );
    assert_eq!(sent(&metrics, "teams", "sent"), 1);
    assert_eq!(sent(&metrics, "slack", "sent"), 1);
    assert_eq!(sent(&metrics, "webhook", "sent"), 1);
}

#[tokio::test]
async fn only_configured_providers_are_used_and_none_is_a_no_op() {
    let (out, _) = outbound();
    let (notifier, worker) = Notifier::new(out, NotifyConfig::default());
    assert!(!notifier.is_enabled());
    tokio::time::timeout(Duration::from_millis(100), worker)
        .await
        .expect("a worker with nothing to do ends at once");
    notifier.notify(notification("RolledBack", "rolled back", Channels::ALL));

    let server = Server::start(|_| Answer::Status(200)).await;
    let (out, metrics) = outbound();
    let cfg = NotifyConfig {
        teams: None,
        webhook: None,
        ..config(&server)
    };
    let (notifier, worker) = Notifier::new(out, cfg);
    let handle = tokio::spawn(worker);
    // Wants only teams, which is not configured: nothing, not even a drop.
    notifier.notify(notification(
        "RolledBack",
        "rolled back",
        parse_channels(Some("teams")).expect("teams"),
    ));
    notifier.notify(notification("RolledBack", "rolled back", Channels::ALL));
    drop(notifier);
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("worker ends")
        .expect("worker ran");
    let paths: Vec<String> = server.seen().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/slack"]);
    assert_eq!(sent(&metrics, "slack", "sent"), 1);
}

#[tokio::test]
async fn outbound_counts_success_failure_and_timeout() {
    let server = Server::start(|n| match n {
        0 => Answer::Status(204),
        1 => Answer::Status(500),
        2 => Answer::Slow(Duration::from_millis(50), 200),
        3 => Answer::Redirect,
        _ => Answer::Never,
    })
    .await;
    let (out, metrics) = outbound();
    let body = json!({"deployment": "cart"});
    let t = Duration::from_millis(500);
    assert_eq!(
        out.post_json("hook", &server.url("/a"), &body, t).await,
        Ok(204)
    );
    assert_eq!(
        out.post_json("hook", &server.url("/b"), &body, t).await,
        Ok(500)
    );
    assert_eq!(
        out.post_json("hook", &server.url("/c"), &body, t).await,
        Ok(200)
    );
    // Redirects are answers, never followed.
    assert_eq!(
        out.post_json("hook", &server.url("/d"), &body, t).await,
        Ok(302)
    );
    let started = Instant::now();
    let short = Duration::from_millis(200);
    assert_eq!(
        out.post_json("hook", &server.url("/e"), &body, short).await,
        Err(OutboundError::Timeout(short))
    );
    let took = started.elapsed();
    assert!(
        took >= short && took < Duration::from_millis(700),
        "{took:?}"
    );
    assert_eq!(server.count(), 5);
    assert_eq!(server.seen()[0].body, body);

    // Nothing listens there: a connect error, counted as a failure.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let err = out
        .post_json("webhook", &format!("http://{dead}/x"), &body, t)
        .await
        .expect_err("refused");
    assert!(matches!(err, OutboundError::Connect(_)), "{err:?}");
    let err = out
        .post_json("webhook", "file:///etc/passwd", &body, t)
        .await
        .expect_err("invalid");
    assert!(matches!(err, OutboundError::InvalidUrl(_)), "{err:?}");

    assert_eq!(calls(&metrics, "hook", "success"), 2);
    assert_eq!(calls(&metrics, "hook", "failure"), 2);
    assert_eq!(calls(&metrics, "hook", "timeout"), 1);
    assert_eq!(calls(&metrics, "webhook", "failure"), 2);
    let text = metrics.encode();
    assert!(
        text.contains(r#"canary_gate_outbound_calls_total{kind="hook",outcome="timeout"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn errors_and_debug_never_show_the_url() {
    let (out, _) = outbound();
    let secret = "http://127.0.0.1:9/services/T000/B000/SECRETTOKEN";
    let err = out
        .post_json("slack", secret, &json!({}), Duration::from_millis(500))
        .await
        .expect_err("nothing listens on port 9");
    assert!(!err.to_string().contains("SECRETTOKEN"), "{err}");
    let cfg = NotifyConfig {
        slack: Some(SecretUrl::new(secret)),
        ..NotifyConfig::default()
    };
    assert!(!format!("{cfg:?}").contains("SECRETTOKEN"));
    let (notifier, _worker) = Notifier::new(out, cfg);
    assert!(!format!("{notifier:?}").contains("SECRETTOKEN"));
}

#[test]
fn urls_stay_out_of_help_and_debug() {
    use canary_gate::cli::{Args, Command};
    use clap::{CommandFactory, Parser};
    std::env::set_var(
        "CANARY_GATE_NOTIFY_TEAMS_URL",
        "https://example.invalid/ENVSECRET",
    );
    let args = Args::try_parse_from([
        "canary-gate",
        "serve",
        "--notify-slack-url",
        "https://hooks.slack.com/services/T/B/ARGSECRET",
    ])
    .expect("parses");
    let Command::Serve(serve) = &args.command else {
        panic!("serve");
    };
    assert!(!format!("{args:?}").contains("SECRET"));
    let config = serve.notify.config().expect("valid");
    assert!(config.configured().slack && config.configured().teams);
    assert_eq!(config.attempts, 3);
    assert_eq!(config.timeout, Duration::from_secs(5));
    let mut cmd = Args::command();
    let serve_help = cmd
        .find_subcommand_mut("serve")
        .expect("serve")
        .render_long_help()
        .to_string();
    assert!(serve_help.contains("--notify-slack-url"));
    assert!(serve_help.contains("CANARY_GATE_NOTIFY_TEAMS_URL"));
    assert!(!serve_help.contains("ENVSECRET"), "{serve_help}");

    let bad = Args::try_parse_from([
        "canary-gate",
        "serve",
        "--notify-webhook-url",
        "not-a-url/SECRET",
    ])
    .expect("parsing never rejects (nor echoes) a URL");
    let Command::Serve(serve) = &bad.command else {
        panic!("serve");
    };
    let e = serve.notify.config().expect_err("invalid URL");
    assert!(e.contains("webhook") && !e.contains("SECRET"), "{e}");
}
