//! HubSpot's published OpenAPI specs as a test oracle: find the operation of a method and
//! path, and validate request and response bodies against its schemas.
//!
//! The specs are HubSpot's and are not part of this repository: they are read from
//! `../shared/hubspot/openapi/` next to the repository root, or from `HUBSPOT_OPENAPI_DIR`.

#![allow(dead_code)] // each test file uses a different part of this module

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Map, Value};

/// The spec files this project checks against (under `spec-collection-2026/`).
pub const SPEC_FILES: [&str; 7] = [
    "crm-contacts-v3.json",
    "crm-contacts-2026-03.json",
    "crm-properties-v3.json",
    "auth-oauth-v1.json",
    "auth-oauth-v3.json",
    "auth-oauth-2026-03.json",
    "account-info-v3.json",
];

/// Where the specs are looked for.
pub fn spec_dir() -> PathBuf {
    match std::env::var_os("HUBSPOT_OPENAPI_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/hubspot/openapi"),
    }
}

/// One operation of a spec.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Upper-case method.
    pub method: String,
    /// Path template, e.g. `/crm/v3/objects/contacts/{contactId}`.
    pub template: String,
    doc: usize,
    op: Value,
}

/// The loaded specs.
pub struct OpenApiSpecs {
    docs: Vec<Value>,
    ops: Vec<Operation>,
    cache: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

impl OpenApiSpecs {
    /// Loads the specs, or prints one line saying the check did not run and returns None.
    pub fn load_or_skip(test: &str) -> Option<Self> {
        let dir = spec_dir().join("spec-collection-2026");
        match Self::load_from(&dir) {
            Ok(specs) => Some(specs),
            Err(why) => {
                // Written to stderr directly so that the test harness does not swallow it.
                let _ = writeln!(
                    std::io::stderr(),
                    "{test}: DID NOT RUN — HubSpot's OpenAPI specs are not at {} ({why}); set HUBSPOT_OPENAPI_DIR",
                    dir.display()
                );
                None
            }
        }
    }

    fn load_from(dir: &std::path::Path) -> Result<Self, String> {
        let mut docs = Vec::new();
        let mut ops = Vec::new();
        for file in SPEC_FILES {
            let path = dir.join(file);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut doc: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            rewrite_nullable(&mut doc);
            let index = docs.len();
            if let Some(paths) = doc["paths"].as_object() {
                for (template, item) in paths {
                    for (method, op) in item.as_object().into_iter().flatten() {
                        if matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                            ops.push(Operation {
                                method: method.to_uppercase(),
                                template: template.clone(),
                                doc: index,
                                op: op.clone(),
                            });
                        }
                    }
                }
            }
            docs.push(doc);
        }
        Ok(Self {
            docs,
            ops,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Every operation of the loaded specs.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// The operation a request names; literal segments win over `{parameters}`.
    pub fn find(&self, method: &str, path: &str) -> Option<&Operation> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        self.ops
            .iter()
            .filter(|o| o.method.eq_ignore_ascii_case(method))
            .filter_map(|o| {
                let t: Vec<&str> = o.template.split('/').collect();
                if t.len() != segments.len() {
                    return None;
                }
                let mut literals = 0;
                for (a, b) in t.iter().zip(&segments) {
                    if a.starts_with('{') {
                        continue;
                    }
                    if a != b {
                        return None;
                    }
                    literals += 1;
                }
                Some((literals, o))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, o)| o)
    }

    /// Checks a response body against the schema the spec gives for its status.
    pub fn validate_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), String> {
        let op = self
            .find(method, path)
            .ok_or_else(|| format!("{method} {path}: no such operation in the specs"))?;
        let responses = &op.op["responses"];
        let key = status.to_string();
        let response = match responses.get(&key) {
            Some(r) => r,
            // An undocumented 2xx with an empty body (e.g. revoke) cannot be checked further.
            None if (200..300).contains(&status) && body.is_empty() => return Ok(()),
            None => responses
                .get("default")
                .ok_or_else(|| format!("{method} {path}: status {status} is not documented"))?,
        };
        let response = self.deref(op.doc, response);
        let schema = response["content"]
            .as_object()
            .and_then(|c| c.get("application/json").or_else(|| c.get("*/*")))
            .map(|m| &m["schema"]);
        match schema {
            None | Some(Value::Null) => {
                if body.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{method} {path} {status}: the spec documents no body, got {}",
                        String::from_utf8_lossy(body)
                    ))
                }
            }
            Some(schema) => {
                let instance: Value = serde_json::from_slice(body)
                    .map_err(|e| format!("{method} {path} {status}: body is not JSON ({e})"))?;
                self.check(op.doc, schema, &instance)
                    .map_err(|e| format!("{method} {path} {status}: {e}\n  body: {instance}"))
            }
        }
    }

    /// Checks a request body against the operation's request schema (JSON or form).
    pub fn validate_request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), String> {
        let op = self
            .find(method, path)
            .ok_or_else(|| format!("{method} {path}: no such operation in the specs"))?;
        let Some(content) = op.op["requestBody"]["content"].as_object() else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!("{method} {path}: the spec takes no body"))
            };
        };
        let base = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_lowercase();
        let media = content.get(&base).ok_or_else(|| {
            format!(
                "{method} {path}: content type '{base}' is not one of {:?}",
                content.keys().collect::<Vec<_>>()
            )
        })?;
        let instance = if base == "application/x-www-form-urlencoded" {
            let map: Map<String, Value> = url::form_urlencoded::parse(body)
                .into_owned()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            Value::Object(map)
        } else {
            serde_json::from_slice(body)
                .map_err(|e| format!("{method} {path}: request body is not JSON ({e})"))?
        };
        self.check(op.doc, &media["schema"], &instance)
            .map_err(|e| format!("{method} {path} request: {e}\n  body: {instance}"))
    }

    fn deref<'a>(&'a self, doc: usize, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix('#')
                .and_then(|p| self.docs[doc].pointer(p))
                .unwrap_or(value),
            None => value,
        }
    }

    fn check(&self, doc: usize, schema: &Value, instance: &Value) -> Result<(), String> {
        let key = format!("{doc}:{schema}");
        let validator = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let mut root = match schema {
                        Value::Object(m) => m.clone(),
                        _ => Map::new(),
                    };
                    root.insert("components".into(), self.docs[doc]["components"].clone());
                    let v = jsonschema::draft202012::options()
                        .should_validate_formats(true)
                        .build(&Value::Object(root))
                        .map_err(|e| format!("schema does not compile: {e}"))?;
                    let v = std::sync::Arc::new(v);
                    cache.insert(key, v.clone());
                    v
                }
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at '{}'", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// OpenAPI 3.0 `nullable: true` is JSON Schema's `type: [T, "null"]`.
fn rewrite_nullable(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert(
                        "type".into(),
                        Value::Array(vec![Value::String(t), Value::String("null".into())]),
                    );
                }
                if let Some(Value::Array(e)) = map.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            for child in map.values_mut() {
                rewrite_nullable(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_nullable),
        _ => {}
    }
}

/// A request as seen on the wire (the sandbox records these; so can any other server).
#[derive(Debug, Clone)]
pub struct WireRequest {
    /// Method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

/// Validates every request against the specs; returns one message per failure.
pub fn validate_requests(specs: &OpenApiSpecs, requests: &[WireRequest]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| !r.path.starts_with("/oauth/authorize") && !r.path.ends_with("/authorize"))
        .filter_map(|r| {
            specs
                .validate_request(&r.method, &r.path, r.content_type.as_deref(), &r.body)
                .err()
        })
        .collect()
}
