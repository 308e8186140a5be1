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
    /// The file each of `docs` was read from.
    files: Vec<String>,
    docs: Vec<Value>,
    ops: Vec<Operation>,
    cache: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

impl OpenApiSpecs {
    /// Loads the specs, or prints one line saying the check did not run and returns None.
    pub fn load_or_skip(test: &str) -> Option<Self> {
        Self::load_files_or_skip(test, &SPEC_FILES)
    }

    /// Loads these spec files (under `spec-collection-2026/`), or prints one line saying the
    /// check did not run and returns None.
    pub fn load_files_or_skip(test: &str, files: &[&str]) -> Option<Self> {
        let dir = spec_dir().join("spec-collection-2026");
        match Self::load_from(&dir, files) {
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

    fn load_from(dir: &std::path::Path, files: &[&str]) -> Result<Self, String> {
        let mut docs = Vec::new();
        let mut ops = Vec::new();
        for file in files.iter().copied() {
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
            files: files.iter().map(|f| (*f).to_owned()).collect(),
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
            form_instance(body).map_err(|e| format!("{method} {path} request: {e}"))?
        } else {
            serde_json::from_slice(body)
                .map_err(|e| format!("{method} {path}: request body is not JSON ({e})"))?
        };
        self.check(op.doc, &media["schema"], &instance)
            .map_err(|e| format!("{method} {path} request: {e}\n  body: {instance}"))
    }

    /// Fields of a request body that its schema does not declare (JSON Schema allows them, but
    /// HubSpot ignores unknown fields silently, so a misspelt field would be a silent bug).
    /// Objects whose schema declares no `properties`, or allows `additionalProperties`, are
    /// open; `allOf`/`oneOf`/`anyOf` nodes are not inspected.
    pub fn undeclared_fields(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Vec<String> {
        let Some(op) = self.find(method, path) else {
            return Vec::new();
        };
        let Some(content) = op.op["requestBody"]["content"].as_object() else {
            return Vec::new();
        };
        let base = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_lowercase();
        let Some(media) = content.get(&base) else {
            return Vec::new();
        };
        let instance = if base == "application/x-www-form-urlencoded" {
            form_instance(body).unwrap_or(Value::Null)
        } else {
            serde_json::from_slice(body).unwrap_or(Value::Null)
        };
        let mut found = Vec::new();
        self.collect_undeclared(op.doc, &media["schema"], &instance, "", &mut found);
        found
            .into_iter()
            .map(|at| format!("{method} {path} request: '{at}' is not declared by the spec"))
            .collect()
    }

    fn collect_undeclared(
        &self,
        doc: usize,
        schema: &Value,
        instance: &Value,
        at: &str,
        found: &mut Vec<String>,
    ) {
        let schema = self.deref(doc, schema);
        if ["allOf", "oneOf", "anyOf"]
            .iter()
            .any(|k| schema.get(k).is_some())
        {
            return;
        }
        match instance {
            Value::Object(fields) => {
                let declared = schema["properties"].as_object();
                let extra = &schema["additionalProperties"];
                for (name, value) in fields {
                    let here = format!("{at}/{name}");
                    match declared.and_then(|d| d.get(name)) {
                        Some(sub) => self.collect_undeclared(doc, sub, value, &here, found),
                        None if extra.is_object() => {
                            self.collect_undeclared(doc, extra, value, &here, found);
                        }
                        None if declared.is_some() && !matches!(extra, Value::Bool(true)) => {
                            found.push(here);
                        }
                        None => {}
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.collect_undeclared(
                        doc,
                        &schema["items"],
                        item,
                        &format!("{at}/{i}"),
                        found,
                    );
                }
            }
            _ => {}
        }
    }

    /// Checks a request's path and query parameters against the operation's `parameters`:
    /// every query parameter is documented, required ones are present, a scalar is not
    /// repeated, and every value (read as OpenAPI's `form`/`simple` styles define) validates
    /// against the parameter's schema.
    pub fn validate_parameters(&self, method: &str, path: &str, query: &str) -> Vec<String> {
        let Some(op) = self.find(method, path) else {
            return vec![format!("{method} {path}: no such operation in the specs")];
        };
        let params = self.parameters(op);
        let mut errors = Vec::new();
        let mut fail = |what: String| errors.push(format!("{method} {path}?{query}: {what}"));

        let segments = path.trim_end_matches('/').split('/');
        for (template, raw) in op.template.split('/').zip(segments) {
            let Some(name) = template.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
                continue;
            };
            let Some(param) = params
                .iter()
                .find(|p| p["in"] == "path" && p["name"] == name)
            else {
                fail(format!("path parameter '{name}' is not documented"));
                continue;
            };
            let value = percent_decode(raw);
            let instance = self.parameter_instance(op.doc, param, &[value]);
            if let Err(e) = self.check(op.doc, &param["schema"], &instance) {
                fail(format!("path parameter '{name}': {e}"));
            }
        }

        let mut given: Vec<(String, Vec<String>)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()).into_owned() {
            match given.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => given.push((name, vec![value])),
            }
        }
        for (name, values) in &given {
            let Some(param) = params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == name.as_str())
            else {
                fail(format!("query parameter '{name}' is not documented"));
                continue;
            };
            let is_array = self.deref(op.doc, &param["schema"])["type"] == "array";
            if values.len() > 1 && !is_array {
                fail(format!(
                    "query parameter '{name}' is given {} times",
                    values.len()
                ));
                continue;
            }
            let instance = self.parameter_instance(op.doc, param, values);
            if let Err(e) = self.check(op.doc, &param["schema"], &instance) {
                fail(format!("query parameter '{name}': {e}"));
            }
        }
        for param in params
            .iter()
            .filter(|p| p["in"] == "query" && p["required"] == true)
        {
            let name = param["name"].as_str().unwrap_or("");
            if !given.iter().any(|(n, _)| n == name) {
                fail(format!("required query parameter '{name}' is missing"));
            }
        }
        errors
    }

    /// The operation's parameters: the path item's, overridden by the operation's own.
    fn parameters(&self, op: &Operation) -> Vec<Value> {
        let shared = &self.docs[op.doc]["paths"][&op.template]["parameters"];
        let mut params: Vec<Value> = Vec::new();
        for p in [shared, &op.op["parameters"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
        {
            let p = self.deref(op.doc, p).clone();
            params.retain(|q| !(q["name"] == p["name"] && q["in"] == p["in"]));
            params.push(p);
        }
        params
    }

    /// A parameter's raw values as the JSON instance its schema describes: arrays from
    /// repeated (`explode`) or comma-separated values, numbers and booleans parsed (a value
    /// that does not parse stays a string, so the schema check reports it).
    fn parameter_instance(&self, doc: usize, param: &Value, values: &[String]) -> Value {
        let schema = self.deref(doc, &param["schema"]);
        if schema["type"] == "array" {
            // OpenAPI: `form` (the query default) explodes unless told otherwise; `simple`
            // (the path default) never does.
            let style = param["style"]
                .as_str()
                .unwrap_or(if param["in"] == "query" {
                    "form"
                } else {
                    "simple"
                });
            let explode = param["explode"].as_bool().unwrap_or(style == "form");
            let item_type = &self.deref(doc, &schema["items"])["type"];
            let items = values
                .iter()
                .flat_map(|v| {
                    if explode {
                        vec![v.as_str()]
                    } else {
                        v.split(',').collect()
                    }
                })
                .map(|v| typed_value(item_type, v))
                .collect();
            return Value::Array(items);
        }
        values
            .first()
            .map_or(Value::Null, |v| typed_value(&schema["type"], v))
    }

    /// Replaces the schema at `pointer` (JSON Pointer) of one spec file: for a documented
    /// defect of HubSpot's published specs, where HubSpot's own documentation and observed
    /// behaviour contradict the spec. Callers must say why, with evidence.
    pub fn correct_known_defect(
        &mut self,
        file: &str,
        pointer: &str,
        schema: Value,
    ) -> Result<(), String> {
        let doc = self
            .files
            .iter()
            .position(|f| f == file)
            .ok_or_else(|| format!("{file} is not one of the loaded specs"))?;
        let target = self.docs[doc]
            .pointer_mut(pointer)
            .ok_or_else(|| format!("{file}: nothing at {pointer}; has the spec changed?"))?;
        *target = schema;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
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

/// A form body as the JSON object its schema describes; a repeated field is an error (the
/// schemas of HubSpot's form endpoints are all single strings).
fn form_instance(body: &[u8]) -> Result<Value, String> {
    let mut map = Map::new();
    for (k, v) in url::form_urlencoded::parse(body).into_owned() {
        if map.insert(k.clone(), Value::String(v)).is_some() {
            return Err(format!("form field '{k}' is given more than once"));
        }
    }
    Ok(Value::Object(map))
}

/// A raw parameter value as JSON of the schema's `type`.
fn typed_value(schema_type: &Value, raw: &str) -> Value {
    let parsed = match schema_type.as_str() {
        Some("integer") => raw.parse::<i64>().ok().map(Value::from),
        Some("number") => raw.parse::<f64>().ok().map(Value::from),
        Some("boolean") => match raw {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// Decodes a percent-encoded path segment (lossily: the check is about the value's shape).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
