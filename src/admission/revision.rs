//! Pod template identity: a short, stable hash of the template so a rollout can tell "the
//! template changed" from "someone touched metadata", and name the version users see.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Number;

use super::pod::PodTemplate;

/// First 10 hex digits of SHA-256 over the template's canonical JSON (keys sorted, null
/// fields left out, strings and numbers re-encoded), so the same template hashes alike however
/// a client serialised it. Only the webhook computes revisions; the analyzer compares them.
/// JSON that does not parse (the apiserver never sends it) hashes its raw text.
pub fn template_revision(template: &RawValue) -> String {
    let text = template.get();
    let canonical = canonical_form(text).unwrap_or_else(|| text.as_bytes().to_vec());
    let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    digest.as_ref()[..5]
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

/// The canonical form of `text`, or None when it is not one JSON value.
///
/// Written in one pass, without a tree: each object's members are written as they are parsed
/// and, only if its keys were not already in strictly ascending order, moved into order
/// afterwards (a copy of the object's bytes). The apiserver writes struct fields in Go's
/// declaration order (`name` before `image`), so nearly every object of a real template
/// needs the move: an earlier fast path for sorted input never applied to a real review, and
/// fell back to building a tree after the failed try.
fn canonical_form(text: &str) -> Option<Vec<u8>> {
    let mut writer = Writer {
        out: Vec::with_capacity(text.len()),
        scratch: Vec::new(),
        members: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    Canonical(&mut writer).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(writer.out)
}

/// The output, and what objects being written share: `members` is a stack (an object's
/// members sit above its parent's until it is done), `scratch` holds an object's bytes while
/// they are put in order.
struct Writer<'de> {
    out: Vec<u8>,
    scratch: Vec<u8>,
    members: Vec<Member<'de>>,
}

/// One `"key":value` of the object being written, at `out[range]` (empty for a null value,
/// which is left out but still shadows an earlier member of the same key).
struct Member<'de> {
    key: Cow<'de, str>,
    range: std::ops::Range<usize>,
}

/// Writes the canonical form of the JSON it parses; its value says whether what it wrote was
/// a non-null value, so that an object can leave out null members.
struct Canonical<'w, 'de>(&'w mut Writer<'de>);

impl<'de> DeserializeSeed<'de> for Canonical<'_, 'de> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_, 'de> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        self.0.out.extend_from_slice(b"null");
        Ok(false)
    }
    fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
        self.0
            .out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(true)
    }
    fn visit_u64<E>(self, v: u64) -> Result<bool, E> {
        write_json(&v, &mut self.0.out);
        Ok(true)
    }
    fn visit_i64<E>(self, v: i64) -> Result<bool, E> {
        write_json(&v, &mut self.0.out);
        Ok(true)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<bool, E> {
        // A number JSON cannot hold is what serde_json makes of it: null.
        match Number::from_f64(v) {
            Some(n) => {
                write_json(&n, &mut self.0.out);
                Ok(true)
            }
            None => self.visit_unit(),
        }
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<bool, E> {
        write_str(v, true, &mut self.0.out);
        Ok(true)
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        write_str(v, false, &mut self.0.out);
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let w = self.0;
        w.out.push(b'[');
        let mut first = true;
        loop {
            let mark = w.out.len();
            if !first {
                w.out.push(b',');
            }
            if seq.next_element_seed(Canonical(&mut *w))?.is_none() {
                w.out.truncate(mark);
                break;
            }
            first = false;
        }
        w.out.push(b']');
        Ok(true)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let w = self.0;
        w.out.push(b'{');
        let body = w.out.len();
        let base = w.members.len();
        let mut in_order = true;
        let mut written_any = false;
        while let Some(Key(key)) = map.next_key()? {
            in_order &= w.members[base..].last().is_none_or(|m| m.key < key);
            let mark = w.out.len();
            // In order, the separator is written now; out of order, the move writes them.
            if in_order && written_any {
                w.out.push(b',');
            }
            let start = w.out.len();
            write_str(&key, matches!(key, Cow::Borrowed(_)), &mut w.out);
            w.out.push(b':');
            let written = map.next_value_seed(Canonical(&mut *w))?;
            let range = if written {
                written_any = true;
                start..w.out.len()
            } else {
                w.out.truncate(mark);
                mark..mark
            };
            w.members.push(Member { key, range });
        }
        if !in_order {
            w.scratch.clear();
            w.scratch.extend_from_slice(&w.out[body..]);
            w.out.truncate(body);
            let members = &mut w.members[base..];
            // Stable, so that of duplicate keys the last one wins, as in serde_json.
            members.sort_by(|a, b| a.key.cmp(&b.key));
            let mut first = true;
            for (i, m) in members.iter().enumerate() {
                let shadowed = members.get(i + 1).is_some_and(|next| next.key == m.key);
                if shadowed || m.range.is_empty() {
                    continue;
                }
                if !first {
                    w.out.push(b',');
                }
                first = false;
                w.out
                    .extend_from_slice(&w.scratch[m.range.start - body..m.range.end - body]);
            }
        }
        w.members.truncate(base);
        w.out.push(b'}');
        Ok(true)
    }
}

/// An object key, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON string as serde_json writes it. One borrowed from the input had no escapes there,
/// so it holds nothing serde_json would escape (`"`, `\\`, control characters cannot appear
/// unescaped in JSON) and is copied as it is.
fn write_str(s: &str, borrowed: bool, out: &mut Vec<u8>) {
    if borrowed {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        write_json(s, out);
    }
}

fn write_json<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Serialising a string or number cannot fail; an empty write would only weaken the hash.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// What a person calls the change: `6.0.0 → 6.0.1` from the first container whose image
/// changed, else the revisions.
pub fn describe_change(
    old: &PodTemplate,
    new: &PodTemplate,
    old_rev: &str,
    new_rev: &str,
) -> String {
    for c in &new.spec.containers {
        if let Some(before) = old.spec.containers.iter().find(|o| o.name == c.name) {
            if before.image != c.image {
                return format!(
                    "{} → {}",
                    image_version(&before.image),
                    image_version(&c.image)
                );
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
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn raw(v: &Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(v).expect("raw")
    }

    fn rev(v: &Value) -> String {
        template_revision(&raw(v))
    }

    fn pod(v: &Value) -> PodTemplate {
        PodTemplate::parse(&raw(v)).expect("pod template")
    }

    #[test]
    fn key_order_does_not_change_the_revision() {
        let a = json!({"metadata": {"labels": {"app": "x", "tier": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"tier": "web", "app": "x"}}});
        assert_eq!(rev(&a), rev(&b));
        assert_eq!(rev(&a).len(), 10);
    }

    #[test]
    fn nulls_escapes_and_whitespace_do_not_change_the_revision() {
        let plain = RawValue::from_string(
            r#"{"metadata":{"labels":{"app":"a<b"}},"spec":{"containers":[{"name":"c","image":"i:1"}]}}"#.into(),
        )
        .expect("raw");
        // How Go's encoder writes the same template: `<` escaped, a null field, spaces.
        let go = RawValue::from_string(
            r#"{ "metadata": {"creationTimestamp": null, "labels": {"app": "a\u003cb"}},
                 "spec": {"containers": [{"image": "i:1", "name": "c"}]} }"#
                .into(),
        )
        .expect("raw");
        assert_eq!(template_revision(&plain), template_revision(&go));
    }

    #[test]
    fn any_template_change_changes_the_revision() {
        let a = json!({"spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"name": "c", "image": "i:2"}]}});
        let c = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let revs = [rev(&a), rev(&b), rev(&c)];
        assert_ne!(revs[0], revs[1]);
        assert_ne!(revs[0], revs[2]);
    }

    /// The canonical form as first defined, over `serde_json::Value`: revisions recorded on
    /// clusters by earlier versions must keep matching.
    fn reference_canonical(v: &Value, out: &mut Vec<u8>) {
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
                    serde_json::to_writer(&mut *out, k).expect("key");
                    out.push(b':');
                    reference_canonical(&map[k], out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    reference_canonical(item, out);
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar).expect("scalar"),
        }
    }

    fn canonical(text: &str) -> Vec<u8> {
        canonical_form(text).expect("parses")
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z<>&\\\"\u{e9}\u{1F600}\n ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-c~/.\"\\\\]{0,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON text with every object's members in another order: descending, or rotated so that
    /// a run in order is followed by a break (Go's field order looks like that). Objects are
    /// then put in order after writing, not only written in order.
    fn reordered_text(v: &Value, rotate: bool) -> String {
        match v {
            Value::Object(map) => {
                let mut members: Vec<String> = map
                    .iter()
                    .map(|(k, v)| {
                        format!("{}:{}", Value::from(k.as_str()), reordered_text(v, rotate))
                    })
                    .collect();
                if rotate {
                    let half = members.len() / 2;
                    members.rotate_left(half);
                } else {
                    members.reverse();
                }
                format!("{{{}}}", members.join(","))
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(|i| reordered_text(i, rotate)).collect();
                format!("[{}]", items.join(","))
            }
            scalar => scalar.to_string(),
        }
    }

    proptest! {
        #[test]
        fn canonical_form_matches_the_value_based_definition(v in json_value()) {
            let texts = [
                v.to_string(),
                serde_json::to_string_pretty(&v).expect("pretty"),
                reordered_text(&v, false),
                reordered_text(&v, true),
            ];
            for text in texts {
                // What the Value-based webhook made of the same bytes.
                let parsed: Value = serde_json::from_str(&text).expect("json");
                let mut expected = Vec::new();
                reference_canonical(&parsed, &mut expected);
                prop_assert_eq!(&canonical(&text), &expected);
                let digest = ring::digest::digest(&ring::digest::SHA256, &expected);
                let hex: String = digest.as_ref()[..5].iter().map(|b| format!("{b:02x}")).collect();
                let raw = RawValue::from_string(text).expect("raw");
                prop_assert_eq!(template_revision(&raw), hex);
            }
        }
    }

    #[test]
    fn keys_out_of_order_give_the_revision_of_the_sorted_template() {
        let sorted = r#"{"metadata":{"labels":{"app":"x","tier":"web"}},"spec":{"containers":[{"image":"i:1","name":"c"}]}}"#;
        let unsorted = r#"{"spec":{"containers":[{"name":"c","image":"i:1"}]},"metadata":{"labels":{"tier":"web","app":"x"}}}"#;
        let raw = |t: &str| RawValue::from_string(t.into()).expect("raw");
        assert_eq!(
            template_revision(&raw(sorted)),
            template_revision(&raw(unsorted))
        );
    }

    #[test]
    fn a_template_as_the_apiserver_writes_it_hashes_like_its_sorted_form() {
        // Go writes struct fields in declaration order: `name` before `image`, `metadata`'s
        // `creationTimestamp: null` first.
        let body = include_str!(
            "../../tests/fixtures/admission/21-managed-update-image-kubectl-apply.mutate.json"
        );
        let request = crate::admission::review::decode(body.as_bytes()).expect("review");
        let text = request
            .object
            .and_then(|o| o.spec)
            .and_then(|s| s.template)
            .expect("template")
            .get()
            .to_owned();
        let mut expected = Vec::new();
        reference_canonical(&serde_json::from_str(&text).expect("json"), &mut expected);
        assert!(
            text.find("\"name\"") < text.find("\"image\""),
            "fixture order: {text}"
        );
        assert_eq!(canonical(&text), expected);
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_like_serde_json() {
        let text = r#"{"a":1,"b":{"x":null},"a":2,"c":3,"c":null}"#;
        let v: Value = serde_json::from_str(text).expect("json");
        let mut expected = Vec::new();
        reference_canonical(&v, &mut expected);
        assert_eq!(canonical(text), expected);
        assert_eq!(canonical(text), br#"{"a":2,"b":{}}"#);
        // In order up to a repeated key, whose null value shadows the earlier one.
        assert_eq!(
            canonical(r#"{"a":1,"b":2,"b":null,"c":[null]}"#),
            br#"{"a":1,"c":[null]}"#
        );
    }

    #[test]
    fn describes_image_changes_by_tag() {
        let a = pod(
            &json!({"spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.0"}]}}),
        );
        let b = pod(
            &json!({"spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.1"}]}}),
        );
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
