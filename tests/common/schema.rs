//! A small structural validator for objects against a CRD's `openAPIV3Schema`, shared by every
//! test that checks an object against a real CRD (`tests/istio_schema.rs`, `tests/examples.rs`).
//!
//! Checked: `type` (object, array, string, integer, number, boolean), `nullable`, `required`,
//! `properties` with unknown fields rejected unless `additionalProperties` or
//! `x-kubernetes-preserve-unknown-fields` allow them, `items`, `enum`, integer `minimum` /
//! `maximum` and the `int32` range. Not checked: CEL rules (`x-kubernetes-validations`),
//! `oneOf`/`anyOf`, string formats and patterns, lengths and item counts. The apiserver checks
//! those; this catches wrong shapes, wrong types and typos in field names.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// The CustomResourceDefinition named `name` (e.g. `virtualservices.networking.istio.io`) from
/// a multi-document YAML file, as JSON.
pub fn crd(path: &Path, name: &str) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v =
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        if v["kind"] == "CustomResourceDefinition" && v["metadata"]["name"] == name {
            return v;
        }
    }
    panic!("{name} not found in {}", path.display());
}

/// The entry of `spec.versions` named `version`.
pub fn crd_version<'a>(crd: &'a Value, version: &str) -> &'a Value {
    crd["spec"]["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no spec.versions", crd["metadata"]["name"]))
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{}: no version {version}", crd["metadata"]["name"]))
}

/// `schema.openAPIV3Schema` of one version.
pub fn open_api_schema(crd: &Value, version: &str) -> Value {
    crd_version(crd, version)["schema"]["openAPIV3Schema"].clone()
}

/// Structural check of `v` against schema node `s`; every problem is pushed to `errs`.
pub fn validate(s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if v.is_null() && s["nullable"] == true {
        return;
    }
    let ok = match s["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(t) => {
            errs.push(format!("{path}: unsupported schema type {t}"));
            return;
        }
    };
    if !ok {
        errs.push(format!("{path}: expected {}, got {v}", s["type"]));
        return;
    }
    if let Some(allowed) = s["enum"].as_array() {
        if !allowed.contains(v) {
            errs.push(format!("{path}: {v} is not one of {}", s["enum"]));
        }
    }
    if let Some(n) = v.as_i64().or_else(|| v.as_u64().map(|u| u as i64)) {
        let (lo, hi) = if s["format"] == "int32" {
            (i64::from(i32::MIN), i64::from(i32::MAX))
        } else {
            (i64::MIN, i64::MAX)
        };
        let min = s["minimum"].as_i64().unwrap_or(lo).max(lo);
        let max = s["maximum"].as_i64().unwrap_or(hi).min(hi);
        if n < min || n > max || (v.is_u64() && v.as_i64().is_none() && s["format"] == "int32") {
            errs.push(format!("{path}: {n} outside [{min}, {max}]"));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{path}[{i}]"), errs);
            }
        }
    }
    let Some(obj) = v.as_object() else { return };
    for req in s["required"].as_array().into_iter().flatten() {
        let req = req.as_str().unwrap_or_default();
        if !obj.contains_key(req) {
            errs.push(format!("{path}: missing required field {req}"));
        }
    }
    let props = s["properties"].as_object();
    let additional = s.get("additionalProperties");
    let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
    for (k, child) in obj {
        let child_path = format!("{path}.{k}");
        match (props.and_then(|p| p.get(k)), additional) {
            (Some(ps), _) => validate(ps, child, &child_path, errs),
            (None, Some(Value::Object(a))) => {
                validate(&Value::Object(a.clone()), child, &child_path, errs)
            }
            (None, Some(Value::Bool(true))) => {}
            _ if preserve => {}
            _ => errs.push(format!("{child_path}: unknown field")),
        }
    }
}

/// Every problem of `value` against `schema`, paths starting at `root`.
pub fn errors(schema: &Value, value: &Value, root: &str) -> Vec<String> {
    let mut errs = Vec::new();
    validate(schema, value, root, &mut errs);
    errs
}

/// Every problem of a whole custom object: `apiVersion` and `kind` as given, `metadata.name`
/// a string, labels and annotations string maps, and `spec` strictly against `schema` (the
/// version's `openAPIV3Schema`).
pub fn object_errors(schema: &Value, obj: &Value, api_version: &str, kind: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if obj["apiVersion"] != api_version {
        errs.push(format!(
            "apiVersion {} is not {api_version}",
            obj["apiVersion"]
        ));
    }
    if obj["kind"] != kind {
        errs.push(format!("kind {} is not {kind}", obj["kind"]));
    }
    let meta = &obj["metadata"];
    if !meta["name"].is_string() {
        errs.push(format!("metadata.name is not a string: {meta}"));
    }
    for key in ["labels", "annotations"] {
        if let Some(m) = meta.get(key) {
            if !m
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
            {
                errs.push(format!("metadata.{key} is not a map of strings: {m}"));
            }
        }
    }
    validate(
        &schema["properties"]["spec"],
        &obj["spec"],
        "spec",
        &mut errs,
    );
    errs
}
