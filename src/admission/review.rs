//! Decoding AdmissionReview bodies by hand and encoding answers, so that every request —
//! including a malformed one — gets a well-formed AdmissionReview back, never a panic.
//!
//! The request type is lean on purpose: it keeps only what the decisions read and skips the
//! rest of each object without building it. A review is 10–20 KB, mostly `managedFields`,
//! `status` and kubectl's last-applied annotation; building all of it (kube's
//! `AdmissionReview<DynamicObject>`) cost 65–89 µs, building `spec` as a `serde_json::Value`
//! still 10 µs, while only scanning the body costs 7 µs (`examples/admission_cost.rs`). So:
//! annotations keep only `canary-gate.io/` keys, and of `spec` only `paused` and the pod
//! template's raw JSON are kept, parsed later only by the decisions that need them.

use std::collections::BTreeMap;
use std::fmt;

use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, TypeMeta};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::annotations::PREFIX;

/// The metadata the decisions read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Only the `canary-gate.io/` annotations; `Some` (possibly empty) when the object has an
    /// annotations map at all, which decides how a patch adds to it.
    #[serde(
        default,
        deserialize_with = "own_annotations",
        skip_serializing_if = "Option::is_none"
    )]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The part of `spec` the decisions read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Spec {
    /// Anything but a boolean reads as absent, like the apiserver's default.
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub paused: Option<bool>,
    /// The pod template exactly as sent: hashed and inspected only where a decision needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Box<RawValue>>,
}

/// An object under review: its metadata and the parts of `spec` above.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Object {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Spec>,
}

fn own_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Own;
    impl<'de> Visitor<'de> for Own {
        type Value = Option<BTreeMap<String, String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut own = BTreeMap::new();
            while let Some(key) = map.next_key::<OwnKey>()? {
                if let OwnKey(Some(key)) = key {
                    let value = map.next_value::<String>()?;
                    own.insert(key, value);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(own))
        }
    }
    d.deserialize_option(Own)
}

/// An annotation key, kept only if it is ours: the others are looked at in place and never
/// copied (kubectl's last-applied key is on almost every object).
struct OwnKey(Option<String>);

impl<'de> Deserialize<'de> for OwnKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = OwnKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an annotation key")
            }
            fn visit_str<E>(self, key: &str) -> Result<OwnKey, E> {
                Ok(OwnKey(key.starts_with(PREFIX).then(|| key.to_owned())))
            }
        }
        d.deserialize_str(Key)
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Value::deserialize(d)?.as_bool())
}

/// Who sent the request. Groups and extras are not read by any decision.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct User {
    #[serde(default)]
    pub username: Option<String>,
}

/// One admission request, as the decisions need it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// apiVersion and kind of the review, echoed in the answer.
    #[serde(skip)]
    pub types: TypeMeta,
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: User,
    #[serde(default)]
    pub object: Option<Object>,
    #[serde(default)]
    pub old_object: Option<Object>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<Request>,
}

/// Why a body could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all: the caller answers 400 (there is no uid to echo).
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// JSON, but not an AdmissionReview we can act on; `uid` is echoed when it was readable.
    #[error("malformed AdmissionReview: {reason}")]
    Malformed { uid: String, reason: String },
}

impl DecodeError {
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::NotJson(_) => "not_json",
            DecodeError::Malformed { .. } => "malformed",
        }
    }
}

pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
    // Fast path: one typed parse. Only on failure pay for a second, untyped parse to find
    // the uid and say what is wrong.
    match serde_json::from_slice::<Envelope>(body) {
        Ok(review) => {
            let uid = review
                .request
                .as_ref()
                .map(|r| r.uid.clone())
                .unwrap_or_default();
            // Answering in whatever type the caller named would not be an AdmissionReview.
            let (kind, version) = (review.kind.as_str(), review.api_version.as_str());
            if kind != "AdmissionReview"
                || !matches!(version, "admission.k8s.io/v1" | "admission.k8s.io/v1beta1")
            {
                return Err(DecodeError::Malformed {
                    uid,
                    reason: format!(
                        "expected kind AdmissionReview in admission.k8s.io/v1, got kind {kind:?} in {version:?}"
                    ),
                });
            }
            let mut request = review.request.ok_or_else(|| DecodeError::Malformed {
                uid,
                reason: "the review has no `request`".into(),
            })?;
            request.types = TypeMeta {
                api_version: review.api_version,
                kind: review.kind,
            };
            Ok(request)
        }
        Err(typed_err) => {
            let value: Value = serde_json::from_slice(body).map_err(DecodeError::NotJson)?;
            let uid = value
                .pointer("/request/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Err(DecodeError::Malformed {
                uid,
                reason: typed_err.to_string(),
            })
        }
    }
}

/// The `response` of an AdmissionReview, written by hand rather than with kube's
/// `AdmissionResponse`: that one sends a patch as a JSON array of numbers (4 bytes per byte of
/// patch), this one as base64, the apiserver's documented form, in a third of the bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// The review's apiVersion, echoed; not part of `response`.
    #[serde(skip)]
    pub api_version: String,
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<AnswerStatus>,
    /// A JSON patch (RFC 6902), base64-encoded on the wire.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "base64_bytes"
    )]
    pub patch: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Printed by kubectl.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The `metav1.Status` of a denial: its message is what the user sees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

fn base64_bytes<S: serde::Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    match bytes {
        Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        None => s.serialize_none(),
    }
}

const REVIEW_V1: &str = "admission.k8s.io/v1";

impl Answer {
    /// Lets the request through unchanged; the decisions add to it.
    pub fn allow(req: &Request) -> Self {
        Self {
            api_version: req.types.api_version.clone(),
            uid: req.uid.clone(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    /// For a request that could not be decoded: denied, with the uid when known.
    pub fn malformed(uid: &str, reason: &str) -> Self {
        Self {
            api_version: REVIEW_V1.into(),
            uid: uid.into(),
            allowed: false,
            status: Some(AnswerStatus {
                status: Some("Failure"),
                message: reason.into(),
                reason: Some("InvalidRequest"),
            }),
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    #[must_use]
    pub fn deny(mut self, message: impl Into<String>) -> Self {
        self.allowed = false;
        self.status = Some(AnswerStatus {
            status: None,
            message: message.into(),
            reason: None,
        });
        self
    }

    pub fn with_patch(
        mut self,
        patch: &json_patch::Patch,
        warnings: Vec<String>,
    ) -> Result<Self, serde_json::Error> {
        self.patch = Some(serde_json::to_vec(patch)?);
        self.patch_type = Some("JSONPatch");
        self.warnings = warnings;
        Ok(self)
    }

    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Review<'a> {
            api_version: &'a str,
            kind: &'static str,
            response: &'a Answer,
        }
        let review = Review {
            api_version: &self.api_version,
            kind: "AdmissionReview",
            response: self,
        };
        // Serialising strings and bools cannot fail short of a bug; answer with a minimal,
        // hand-built denial rather than panic in the apiserver's write path.
        serde_json::to_vec(&review).unwrap_or_else(|_| {
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":false,"status":{"message":"internal error encoding the answer"}}}"#.to_vec()
        })
    }
}

/// The JSON of the request's object (or old object) as the decisions see it.
pub fn object_json(obj: Option<&Object>) -> Option<Value> {
    obj.and_then(|o| serde_json::to_value(o).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_json_is_its_own_error() {
        assert!(matches!(
            decode(b"\x00garbage"),
            Err(DecodeError::NotJson(_))
        ));
    }

    #[test]
    fn malformed_review_keeps_the_uid() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":42}}"#;
        match decode(body) {
            Err(DecodeError::Malformed { uid, .. }) => assert_eq!(uid, "u-1"),
            other => panic!("unexpected {other:?}"),
        }
        let response = Answer::malformed("u-1", "bad");
        assert_eq!(response.uid, "u-1");
        assert!(!response.allowed);
    }

    fn review_with(object: &str) -> String {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"apps","version":"v1","kind":"Deployment"}},"operation":"UPDATE","userInfo":{{"username":"ana","groups":["dev"],"extra":{{"k":["v"]}}}},"object":{object}}}}}"#
        )
    }

    #[test]
    fn keeps_only_our_annotations_however_their_keys_are_escaped() {
        let body = review_with(
            r#"{"metadata":{"annotations":{"canary-gate.io\/max-weight":"30","\u0063anary-gate.io/action":"abort","kubectl.kubernetes.io/last-applied-configuration":"{\"a\":1}","other":"x"}}}"#,
        );
        let req = decode(body.as_bytes()).expect("decodes");
        assert_eq!(req.user_info.username.as_deref(), Some("ana"));
        let kept = req.object.and_then(|o| o.metadata.annotations);
        assert_eq!(
            kept,
            Some(BTreeMap::from([
                ("canary-gate.io/action".to_string(), "abort".to_string()),
                ("canary-gate.io/max-weight".to_string(), "30".to_string()),
            ]))
        );
    }

    #[test]
    fn an_annotations_map_without_ours_is_empty_not_absent() {
        let some = decode(review_with(r#"{"metadata":{"annotations":{"a":"b"}}}"#).as_bytes());
        let none = decode(review_with(r#"{"metadata":{"annotations":null}}"#).as_bytes());
        let annotations = |r: Result<Request, DecodeError>| {
            r.expect("decodes")
                .object
                .and_then(|o| o.metadata.annotations)
        };
        assert_eq!(annotations(some), Some(BTreeMap::new()));
        assert_eq!(annotations(none), None);
        // Our keys must hold strings, like every annotation.
        let bad = decode(
            review_with(r#"{"metadata":{"annotations":{"canary-gate.io/x":1}}}"#).as_bytes(),
        );
        assert!(matches!(bad, Err(DecodeError::Malformed { .. })), "{bad:?}");
    }

    #[test]
    fn review_without_request_is_malformed() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(decode(body), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn encodes_a_review_with_a_response() {
        let bytes = Answer::malformed("u-2", "nope").encode();
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["response"]["uid"], "u-2");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["message"], "nope");
    }

    #[test]
    fn answers_echo_the_review_version_and_send_patches_as_base64() {
        use base64::Engine as _;
        let body = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u-3","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"UPDATE","userInfo":{}}}"#;
        let req = decode(body).expect("decodes");
        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"add","path":"/spec/paused","value":true}]"#)
                .expect("patch");
        let answer = Answer::allow(&req)
            .with_patch(&patch, vec!["held".into()])
            .expect("serialises");
        let v: Value = serde_json::from_slice(&answer.encode()).expect("json");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
        let r = &v["response"];
        assert_eq!(
            (r["uid"].as_str(), r["allowed"].as_bool()),
            (Some("u-3"), Some(true))
        );
        assert_eq!(r["patchType"], "JSONPatch");
        assert_eq!(r["warnings"][0], "held");
        assert!(r.get("status").is_none(), "{r}");
        let sent = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().expect("base64 string"))
            .expect("base64");
        assert_eq!(
            serde_json::from_slice::<json_patch::Patch>(&sent).expect("patch"),
            patch
        );
        let denied: Value =
            serde_json::from_slice(&Answer::allow(&req).deny("no").encode()).expect("json");
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["message"], "no");
    }
}
