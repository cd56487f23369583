//! Decoding AdmissionReview bodies by hand and encoding answers, so that every request —
//! including a malformed one — gets a well-formed AdmissionReview back, never a panic.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use serde_json::Value;

pub type Request = AdmissionRequest<DynamicObject>;

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
    match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Ok(review) => {
            let uid = review
                .request
                .as_ref()
                .map(|r| r.uid.clone())
                .unwrap_or_default();
            // Answering in whatever type the caller named would not be an AdmissionReview.
            let (kind, version) = (
                review.types.kind.as_str(),
                review.types.api_version.as_str(),
            );
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
            review.try_into().map_err(|_| DecodeError::Malformed {
                uid,
                reason: "the review has no `request`".into(),
            })
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

/// The JSON of the request's object (or old object) — our decisions read raw fields.
pub fn object_json(obj: Option<&DynamicObject>) -> Option<Value> {
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
