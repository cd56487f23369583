//! Pure builders of the notification bodies: Slack (Block Kit), Microsoft Teams (Adaptive Card
//! through a Workflows webhook) and the generic JSON webhook. No I/O here.
//!
//! The generic webhook body is a JSON object with these fields (all always present):
//!
//! | field        | type   | meaning                                                          |
//! |--------------|--------|------------------------------------------------------------------|
//! | `kind`       | string | `started`, `promoted`, `rolled-back`, `manual-action`, `waiting-for-approval`, `check-failed`, `cancelled`, `stuck` (or `info`) |
//! | `namespace`  | string | namespace of the Deployment                                      |
//! | `deployment` | string | name of the Deployment                                           |
//! | `reason`     | string | the Kubernetes Event reason (`CanaryStarted`, `RolledBack`, ...) |
//! | `message`    | string | the same text as the Event                                       |
//! | `phase`      | string | rollout phase after the event                                    |
//! | `weight`     | number | percent of traffic on the canary after the event                 |
//! | `timestamp`  | string | RFC 3339 time the notification was raised                        |

use serde_json::{json, Value};

use super::notify::Notification;

/// Slack's limit for a `section` text is 3,000 characters; a `header` takes 150.
const SLACK_SECTION_MAX: usize = 3000;
const SLACK_HEADER_MAX: usize = 150;
/// Teams cards are limited to about 28 KB in total; keep one message well below.
const TEAMS_TEXT_MAX: usize = 8000;

/// The category of a notification, from its Event reason: the generic body's `kind`.
pub fn kind(reason: &str) -> &'static str {
    match reason {
        "CanaryStarted" => "started",
        "Promoting" | "Succeeded" => "promoted",
        "RolledBack" => "rolled-back",
        "Cancelled" => "cancelled",
        "Paused" | "Resumed" | "ActionIgnored" | "Approved" => "manual-action",
        "WaitingForApproval" | "WaitingForConfirmation" => "waiting-for-approval",
        "HookFailed" | "CheckFailed" => "check-failed",
        "PromotionIncomplete" | "CheckInconclusive" => "stuck",
        _ => "info",
    }
}

fn title(reason: &str) -> &'static str {
    match kind(reason) {
        "started" => "canary started",
        "promoted" => "canary promoted",
        "rolled-back" => "canary rolled back",
        "manual-action" => "manual action",
        "waiting-for-approval" => "waiting for approval",
        "check-failed" => "check failed",
        "cancelled" => "cancelled",
        "stuck" => "rollout stuck",
        _ => "rollout update",
    }
}

fn slack_emoji(reason: &str) -> &'static str {
    match kind(reason) {
        "started" => ":rocket:",
        "promoted" => ":white_check_mark:",
        "rolled-back" => ":rotating_light:",
        "manual-action" => ":raised_hand:",
        "waiting-for-approval" => ":hourglass_flowing_sand:",
        "check-failed" | "cancelled" => ":x:",
        "stuck" => ":warning:",
        _ => ":information_source:",
    }
}

fn teams_color(reason: &str) -> &'static str {
    match kind(reason) {
        "promoted" => "Good",
        "rolled-back" | "check-failed" | "cancelled" => "Attention",
        "stuck" | "waiting-for-approval" => "Warning",
        _ => "Default",
    }
}

/// Cuts `s` to at most `max` characters (not bytes), marking the cut with an ellipsis.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack reads `&`, `<` and `>` as markup (`<!channel>` would ping everyone): escape them.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn subject(n: &Notification) -> String {
    format!("{}/{}", n.namespace, n.deployment)
}

/// Plain one-line text: Slack's `text` fallback (notifications, screen readers).
pub fn fallback_text(n: &Notification) -> String {
    format!("{}: {}: {}", subject(n), title(&n.reason), n.message)
}

/// Slack incoming webhook body: `text` fallback plus Block Kit `blocks` (header, a mrkdwn
/// section with the Event message, a context line with reason, phase and weight).
pub fn slack(n: &Notification) -> Value {
    let header = truncate(
        &format!("{}: {}", subject(n), title(&n.reason)),
        SLACK_HEADER_MAX,
    );
    let body = format!("{} {}", slack_emoji(&n.reason), slack_escape(&n.message));
    let context = format!(
        "*Reason:* {}  ·  *Phase:* {}  ·  *Weight:* {} %",
        slack_escape(&n.reason),
        slack_escape(&n.phase),
        n.weight
    );
    json!({
        "text": truncate(&slack_escape(&fallback_text(n)), SLACK_SECTION_MAX),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&body, SLACK_SECTION_MAX)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&context, SLACK_SECTION_MAX)}]},
        ],
    })
}

/// Teams Workflows webhook body: a `message` with one Adaptive Card (version 1.4) attachment.
pub fn teams(n: &Notification) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": [
                    {
                        "type": "TextBlock",
                        "size": "Medium",
                        "weight": "Bolder",
                        "color": teams_color(&n.reason),
                        "text": format!("{}: {}", subject(n), title(&n.reason)),
                        "wrap": true,
                    },
                    {"type": "TextBlock", "text": truncate(&n.message, TEAMS_TEXT_MAX), "wrap": true},
                    {"type": "FactSet", "facts": [
                        {"title": "Reason", "value": n.reason},
                        {"title": "Phase", "value": n.phase},
                        {"title": "Weight", "value": format!("{} %", n.weight)},
                    ]},
                ],
            },
        }],
    })
}

/// The generic JSON webhook body (fields documented at the top of this module).
pub fn webhook(n: &Notification, timestamp: &str) -> Value {
    json!({
        "kind": kind(&n.reason),
        "namespace": n.namespace,
        "deployment": n.deployment,
        "reason": n.reason,
        "message": n.message,
        "phase": n.phase,
        "weight": n.weight,
        "timestamp": timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::notify::Channels;

    fn n(reason: &str, message: &str) -> Notification {
        Notification {
            namespace: "shop".into(),
            deployment: "cart".into(),
            reason: reason.into(),
            message: message.into(),
            phase: "Failed".into(),
            weight: 0,
            channels: Channels::ALL,
        }
    }

    #[test]
    fn slack_has_fallback_text_and_mrkdwn_section() {
        let v = slack(&n("RolledBack", "rolled back: success rate 91 % < 99 %"));
        assert!(v["text"].as_str().unwrap().contains("shop/cart"));
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["type"], "section");
        assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
        assert!(blocks[1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("success rate 91 %"));
        assert_eq!(blocks[2]["type"], "context");
    }

    #[test]
    fn slack_escapes_markup_and_respects_limits() {
        let long = format!("<!channel> & {}", "x".repeat(5000));
        let v = slack(&n("RolledBack", &long));
        let text = v["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(text.contains("&lt;!channel&gt; &amp;"));
        assert!(text.chars().count() <= SLACK_SECTION_MAX);
        assert!(v["text"].as_str().unwrap().chars().count() <= SLACK_SECTION_MAX);
        let header = v["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(header.chars().count() <= SLACK_HEADER_MAX);
    }

    #[test]
    fn teams_is_an_adaptive_card_message() {
        let v = teams(&n(
            "Promoting",
            "promoted by hand (canary-gate.io/action=promote)",
        ));
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["version"], "1.4");
        let body = a["content"]["body"].as_array().unwrap();
        assert_eq!(body[0]["type"], "TextBlock");
        assert_eq!(body[0]["color"], "Good");
        assert!(body[1]["text"].as_str().unwrap().contains("by hand"));
        assert_eq!(body[2]["type"], "FactSet");
    }

    #[test]
    fn webhook_has_the_documented_fields() {
        let v = webhook(
            &n("CanaryStarted", "canary abc started"),
            "2026-01-01T00:00:00Z",
        );
        let o = v.as_object().unwrap();
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
        assert_eq!(v["kind"], "started");
        assert_eq!(v["weight"], 0);
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("ééé", 3), "ééé");
        assert_eq!(truncate("éééé", 3), "éé…");
    }
}
