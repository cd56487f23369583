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

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionResponse, Operation};
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
            while let Some(key) = map.next_key::<String>()? {
                if key.starts_with(PREFIX) {
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

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Value::deserialize(d)?.as_bool())
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
    pub user_info: UserInfo,
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

/// The answer that lets a request through unchanged; the decisions add to it.
pub fn allow(req: &Request) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.types = req.types.clone();
    response.uid = req.uid.clone();
    response.allowed = true;
    response.result = Default::default();
    response
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

/// An answer for a request that could not be decoded: denied, with the uid when known.
pub fn malformed_response(uid: &str, reason: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid(reason);
    response.uid = uid.to_string();
    response
}

pub fn encode(response: AdmissionResponse) -> Vec<u8> {
    let review = response.into_review();
    // Serialising our own typed review cannot fail short of a bug; answer with a minimal,
    // hand-built denial rather than panic in the apiserver's write path.
    serde_json::to_vec(&review).unwrap_or_else(|_| {
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":false,"status":{"message":"internal error encoding the answer"}}}"#.to_vec()
    })
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
        let response = malformed_response("u-1", "bad");
        assert_eq!(response.uid, "u-1");
        assert!(!response.allowed);
    }

    #[test]
    fn review_without_request_is_malformed() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(decode(body), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn encodes_a_review_with_a_response() {
        let bytes = encode(malformed_response("u-2", "nope"));
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["response"]["uid"], "u-2");
        assert_eq!(v["response"]["allowed"], false);
    }
}
