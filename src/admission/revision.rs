//! Pod template identity: a short, stable hash of the template so a rollout can tell "the
//! template changed" from "someone touched metadata", and name the version users see.

use serde_json::Value;

/// First 10 hex digits of SHA-256 over the template's canonical JSON (keys sorted, null
/// fields left out), so the same template hashes alike however a client serialised it.
pub fn template_revision(template: &Value) -> String {
    let mut canonical = Vec::with_capacity(1024);
    write_canonical(template, &mut canonical);
    let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
    digest.as_ref()[..5]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Serialising a scalar cannot fail; an empty write would only weaken the hash.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// What a person calls the change: `6.0.0 → 6.0.1` from the first container whose image
/// changed, else the revisions.
pub fn describe_change(
    old_template: &Value,
    new_template: &Value,
    old_rev: &str,
    new_rev: &str,
) -> String {
    let images = |t: &Value| -> Vec<(String, String)> {
        t.pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let field = |f: &str| {
                            c.get(f)
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string()
                        };
                        (field("name"), field("image"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let old = images(old_template);
    for (name, image) in images(new_template) {
        if let Some((_, before)) = old.iter().find(|(n, _)| *n == name) {
            if *before != image {
                return format!("{} → {}", image_version(before), image_version(&image));
            }
        }
    }
    format!("revision {old_rev} → {new_rev}")
}

/// The tag (or short digest) of an image reference; the whole reference when it has neither.
pub fn image_version(image: &str) -> &str {
    if let Some((_, digest)) = image.split_once('@') {
        return digest.get(..19).unwrap_or(digest);
    }
    match image.rsplit_once(':') {
        // A colon before the last slash is a registry port, not a tag.
        Some((_, tag)) if !tag.contains('/') => tag,
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_revision() {
        let a = json!({"metadata": {"labels": {"app": "x", "tier": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"tier": "web", "app": "x"}}});
        assert_eq!(template_revision(&a), template_revision(&b));
        assert_eq!(template_revision(&a).len(), 10);
    }

    #[test]
    fn any_template_change_changes_the_revision() {
        let a = json!({"spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"name": "c", "image": "i:2"}]}});
        let c = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let revs = [
            template_revision(&a),
            template_revision(&b),
            template_revision(&c),
        ];
        assert_ne!(revs[0], revs[1]);
        assert_ne!(revs[0], revs[2]);
    }

    #[test]
    fn describes_image_changes_by_tag() {
        let a = json!({"spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.0"}]}});
        let b = json!({"spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.1"}]}});
        assert_eq!(describe_change(&a, &b, "r1", "r2"), "6.0.0 → 6.0.1");
        assert_eq!(describe_change(&a, &a, "r1", "r2"), "revision r1 → r2");
    }

    #[test]
    fn image_versions() {
        assert_eq!(image_version("nginx:1.27"), "1.27");
        assert_eq!(image_version("registry:5000/app"), "registry:5000/app");
        assert_eq!(image_version("registry:5000/app:v2"), "v2");
        assert_eq!(
            image_version("app@sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
    }
}
