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
    let mut canonical = Vec::with_capacity(text.len());
    // The apiserver sends maps with their keys in order, so the canonical form can usually be
    // written while parsing, without building a tree: half the cost of the tree path, which is
    // kept for keys out of order (or repeated) and gives the same bytes.
    if !write_sorted(text, &mut canonical) {
        canonical.clear();
        match serde_json::from_str::<Node>(text) {
            Ok(node) => node.write_canonical(&mut canonical),
            Err(_) => canonical.extend_from_slice(text.as_bytes()),
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    digest.as_ref()[..5]
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

/// The canonical form of `text` into `out` without a tree; false (with `out` partly written)
/// when `text` is not one JSON value whose object keys are all in strictly ascending order.
fn write_sorted(text: &str, out: &mut Vec<u8>) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    Sorted(out).deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// Writes the canonical form of the JSON it parses into `.0`, and fails on the first object
/// key that is not greater than the one before it (out of order or repeated). Its value says
/// whether what it wrote was a non-null value, so that an object can leave out null members.
struct Sorted<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Sorted<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Sorted<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        self.0.extend_from_slice(b"null");
        Ok(false)
    }
    fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(true)
    }
    fn visit_u64<E>(self, v: u64) -> Result<bool, E> {
        write_json(&v, self.0);
        Ok(true)
    }
    fn visit_i64<E>(self, v: i64) -> Result<bool, E> {
        write_json(&v, self.0);
        Ok(true)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<bool, E> {
        // As in the tree path: a number JSON cannot hold is what serde_json makes of it, null.
        match Number::from_f64(v) {
            Some(n) => {
                write_json(&n, self.0);
                Ok(true)
            }
            None => self.visit_unit(),
        }
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        write_json(v, self.0);
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Sorted(&mut *self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(true)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        self.0.push(b'{');
        let mut previous: Option<Cow<'de, str>> = None;
        let mut first = true;
        while let Some(key) = map.next_key::<Node>()? {
            let Node::String(key) = key else {
                return Err(serde::de::Error::custom("object key is not a string"));
            };
            if previous.as_ref().is_some_and(|p| *p >= key) {
                return Err(serde::de::Error::custom("object keys out of order"));
            }
            let mark = self.0.len();
            if !first {
                self.0.push(b',');
            }
            write_json(&*key, self.0);
            self.0.push(b':');
            if map.next_value_seed(Sorted(&mut *self.0))? {
                first = false;
            } else {
                self.0.truncate(mark);
            }
            previous = Some(key);
        }
        self.0.push(b'}');
        Ok(true)
    }
}

/// A parsed JSON value that borrows its strings from the input where it can: a few small
/// allocations instead of `serde_json::Value`'s map nodes and owned strings.
#[derive(Debug)]
enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Node::Number(n) => write_json(n, out),
            Node::String(s) => write_json(s, out),
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out);
                }
                out.push(b']');
            }
            Node::Object(entries) => {
                let mut sorted: Vec<&(Cow<str>, Node)> = entries.iter().collect();
                // Stable, so that of duplicate keys the last one wins, as in serde_json.
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'{');
                let mut first = true;
                for (i, (key, value)) in sorted.iter().map(|e| (&e.0, &e.1)).enumerate() {
                    let shadowed = sorted.get(i + 1).is_some_and(|next| next.0 == *key);
                    if shadowed || matches!(value, Node::Null) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_json(key, out);
                    out.push(b':');
                    value.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }
}

fn write_json<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Serialising a string or number cannot fail; an empty write would only weaken the hash.
    let _ = serde_json::to_writer(&mut *out, v);
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Node::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                // JSON numbers are finite; `null` is what serde_json would make of anything else.
                Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Node::String(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Node::String(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                // JSON keys are strings, so a key parses as `Node::String` (borrowed when it
                // has no escapes).
                while let Some(key) = map.next_key::<Node>()? {
                    let Node::String(key) = key else {
                        return Err(serde::de::Error::custom("object key is not a string"));
                    };
                    entries.push((key, map.next_value()?));
                }
                Ok(Node::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
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

    /// The tree path's canonical form; where the streaming path accepts the text, it must
    /// write the same bytes.
    fn canonical(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        serde_json::from_str::<Node>(text)
            .expect("parses")
            .write_canonical(&mut out);
        let mut streamed = Vec::new();
        if write_sorted(text, &mut streamed) {
            assert_eq!(
                String::from_utf8_lossy(&streamed),
                String::from_utf8_lossy(&out),
                "streamed and tree canonical forms differ for {text}"
            );
        }
        out
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

    /// JSON text with every object's keys in descending order: what the streaming path
    /// refuses, so that the tree path is exercised too.
    fn reversed_text(v: &Value) -> String {
        match v {
            Value::Object(map) => {
                let members: Vec<String> = map
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), reversed_text(v)))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(reversed_text).collect();
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
                reversed_text(&v),
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
    fn duplicate_keys_keep_the_last_value_like_serde_json() {
        let text = r#"{"a":1,"b":{"x":null},"a":2,"c":3,"c":null}"#;
        let v: Value = serde_json::from_str(text).expect("json");
        let mut expected = Vec::new();
        reference_canonical(&v, &mut expected);
        assert_eq!(canonical(text), expected);
        assert_eq!(canonical(text), br#"{"a":2,"b":{}}"#);
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
