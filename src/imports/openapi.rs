//! OpenAPI 3.0 and 3.1 documents → operation definitions and the HTTP
//! bindings that execute them.
//!
//! Pure functions over `serde_json::Value`; no I/O. The mapping, and every
//! choice made where OpenAPI allows more than one reading, is documented in
//! `docs/imports.md`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::names;
use crate::protocol::{AccessLevel, OperationType};
use crate::store::{NewDefinition, Source};

/// The HTTP methods OpenAPI names in a path item, in its order.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Where a parameter goes in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamIn {
    /// Substituted into the path template.
    Path,
    /// Appended to the query string.
    Query,
    /// Sent as a request header.
    Header,
    /// Sent in the `Cookie` header.
    Cookie,
}

/// One parameter of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// Its name in the document, as it goes on the wire.
    pub name: String,
    /// Where it goes.
    #[serde(rename = "in")]
    pub location: ParamIn,
    /// The input property holding it, when not `name`: a parameter whose
    /// name another location's parameter (or the body) already uses is
    /// `{in}_{name}` in the input (see [`property_names`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// How an array or object value is written (OpenAPI `style`): `form`,
    /// `spaceDelimited`, `pipeDelimited` or `deepObject` in the query,
    /// `simple`, `label` or `matrix` in the path, `simple` in a header.
    /// `None` is the location's default (`form` in the query, else `simple`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// Whether each array item or object member is its own parameter
    /// (OpenAPI `explode`); `None` is the default (true for `form`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explode: Option<bool>,
}

impl Param {
    /// The input property holding this parameter.
    pub fn property(&self) -> &str {
        self.property.as_deref().unwrap_or(&self.name)
    }
}

impl ParamIn {
    fn as_str(self) -> &'static str {
        match self {
            ParamIn::Path => "path",
            ParamIn::Query => "query",
            ParamIn::Header => "header",
            ParamIn::Cookie => "cookie",
        }
    }
}

/// The collision rule: each parameter's input property. Names are unique
/// within a location (a later declaration of the same name and location
/// replaces the earlier), but a path, a query and a header parameter may
/// share one, and `body` is the JSON body's. The plain name goes to the
/// first claimant in the order path, query, header, cookie (the body always keeps
/// `body`); every other parameter of that name becomes `{in}_{name}`
/// (`query_id`, `header_body`). A renamed property that is still taken
/// makes the operation unmappable.
fn property_names(params: &mut [(Param, Value, bool)], body: bool) -> Result<(), String> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    if body {
        taken.insert("body".into());
    }
    params.sort_by_key(|(p, _, _)| p.location as u8);
    for (param, _, _) in params.iter_mut() {
        if taken.insert(param.name.clone()) {
            continue;
        }
        let renamed = format!("{}_{}", param.location.as_str(), param.name);
        if !taken.insert(renamed.clone()) {
            return Err(format!(
                "the {} parameter {} cannot be given an input property: both {} and {renamed} are taken",
                param.location.as_str(),
                param.name,
                param.name
            ));
        }
        param.property = Some(renamed);
    }
    Ok(())
}

/// Why a path key of the document cannot be called under a base URL:
/// it must start with `/` and hold no `.` or `..` segment (written plainly
/// or percent-encoded), so every request stays under the base URL.
fn check_path_key(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("the path {path:?} does not start with /"));
    }
    for segment in path.split('/') {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(format!(
                "the path {path:?} has a {segment:?} segment, which would leave the base URL"
            ));
        }
    }
    Ok(())
}

/// How to execute one imported operation as an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpBinding {
    /// Upper-case method.
    pub method: String,
    /// The path template, `/items/{id}`.
    pub path: String,
    /// Path, query and header parameters.
    pub params: Vec<Param>,
    /// Whether the input's `body` is sent as the request body.
    pub body: bool,
    /// The body's media type: `application/json` (also when absent, as
    /// imports before it was recorded), `application/x-www-form-urlencoded`
    /// or `multipart/form-data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_type: Option<String>,
    /// The `Accept` header, from the success response's media types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
    /// The operation's security requirements (its own `security`, else
    /// the document's): alternatives, each naming the schemes it needs
    /// together with their OAuth2 scopes. `None`: the document says nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Vec<BTreeMap<String, Vec<String>>>>,
}

/// A security scheme of the document (`components.securitySchemes`), as
/// the HTTP provider applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Scheme {
    /// `apiKey`: the credential is the key, sent in a header, the query or
    /// a cookie named `name`.
    ApiKey {
        /// `header`, `query` or `cookie`.
        #[serde(rename = "in")]
        location: String,
        /// The header, query parameter or cookie name.
        name: String,
    },
    /// `http` `bearer`: the credential is the token.
    Bearer,
    /// `http` `basic`: the credential is `user:password`.
    Basic,
    /// `oauth2` with a `clientCredentials` flow: the credential is
    /// `client_id:client_secret`, exchanged at `token_url` for a token the
    /// hub caches until it expires.
    ClientCredentials {
        /// Where tokens come from (absolute, or relative to the base URL).
        token_url: String,
    },
    /// A scheme the hub cannot apply (OpenID Connect, OAuth2 flows that need
    /// a user, mutual TLS, other `http` schemes): why.
    Unsupported {
        /// What it is.
        why: String,
    },
}

/// The document's security schemes, by name.
fn security_schemes(resolver: &Resolver<'_>, doc: &Value) -> BTreeMap<String, Scheme> {
    let Some(Value::Object(schemes)) = doc.pointer("/components/securitySchemes") else {
        return BTreeMap::new();
    };
    schemes
        .iter()
        .map(|(name, raw)| {
            let scheme = match resolver.resolve(raw, &mut Vec::new()) {
                Ok(scheme) => scheme_of(scheme),
                Err(e) => Scheme::Unsupported { why: e },
            };
            (name.clone(), scheme)
        })
        .collect()
}

fn scheme_of(scheme: &Value) -> Scheme {
    let text = |key: &str| scheme.get(key).and_then(Value::as_str).unwrap_or_default();
    match text("type") {
        "apiKey"
            if matches!(text("in"), "header" | "query" | "cookie") && !text("name").is_empty() =>
        {
            Scheme::ApiKey {
                location: text("in").to_owned(),
                name: text("name").to_owned(),
            }
        }
        "http" if text("scheme").eq_ignore_ascii_case("bearer") => Scheme::Bearer,
        "http" if text("scheme").eq_ignore_ascii_case("basic") => Scheme::Basic,
        "oauth2" => match scheme
            .pointer("/flows/clientCredentials/tokenUrl")
            .and_then(Value::as_str)
        {
            Some(url) => Scheme::ClientCredentials {
                token_url: url.to_owned(),
            },
            None => Scheme::Unsupported {
                why: "an OAuth2 scheme without a clientCredentials flow needs a user to sign in"
                    .into(),
            },
        },
        other => Scheme::Unsupported {
            why: format!("a {other:?} scheme ({}) is not supported", text("scheme")),
        },
    }
}

/// Security requirements as stored: scheme name → scopes, per alternative.
fn requirements(value: &Value) -> Option<Vec<BTreeMap<String, Vec<String>>>> {
    let alternatives = value.as_array()?;
    Some(
        alternatives
            .iter()
            .filter_map(Value::as_object)
            .map(|alternative| {
                alternative
                    .iter()
                    .map(|(scheme, scopes)| {
                        let scopes = scopes
                            .as_array()
                            .map(|s| {
                                s.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (scheme.clone(), scopes)
                    })
                    .collect()
            })
            .collect(),
    )
}

/// The request body media types the hub can send, in order of preference.
const BODY_TYPES: [&str; 3] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

/// The media type of a request body the hub can send, and its schema:
/// JSON (`application/json` or any `+json`) first, then a form, then
/// multipart.
fn body_content(content: &Map<String, Value>) -> Option<(&'static str, &Value)> {
    let json = content
        .iter()
        .find(|(t, _)| *t == "application/json" || t.ends_with("+json"));
    if let Some((_, media)) = json {
        return Some((BODY_TYPES[0], media.get("schema").unwrap_or(&Value::Null)));
    }
    BODY_TYPES[1..].iter().find_map(|t| {
        content
            .get(*t)
            .map(|media| (*t, media.get("schema").unwrap_or(&Value::Null)))
    })
}

/// The `Accept` header for a success response's content: JSON preferred
/// when it is offered, else every type it lists.
fn accept_of(content: Option<&Map<String, Value>>) -> Option<String> {
    let content = content?;
    if content.contains_key("text/event-stream") {
        return Some("text/event-stream".into());
    }
    let types: Vec<&str> = content.keys().map(String::as_str).collect();
    match types
        .iter()
        .find(|t| **t == "application/json" || t.ends_with("+json"))
    {
        Some(json) => Some(format!("{json}, */*;q=0.1")),
        None if types.is_empty() => None,
        None => Some(types.join(", ")),
    }
}

/// One operation of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The definition to store.
    pub definition: NewDefinition,
    /// How the HTTP provider executes it.
    pub binding: HttpBinding,
    /// What was left out of it, if anything (its output schema).
    pub note: Option<String>,
}

/// The largest output schema an operation keeps, serialized.
pub const MAX_OUTPUT_SCHEMA_BYTES: usize = 256 * 1024;

/// What a document says besides its operations.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The operations, in path then method order.
    pub operations: Vec<Imported>,
    /// The operations that could not be mapped (`METHOD /path`, and why):
    /// each is left out and the rest import.
    pub skipped: Vec<(String, String)>,
    /// The first `servers[].url`, if any.
    pub server_url: Option<String>,
    /// `info.title`.
    pub title: Option<String>,
    /// `components.securitySchemes`, by name.
    pub schemes: BTreeMap<String, Scheme>,
}

/// Rewrites an OpenAPI 3.0 Schema Object (with everything it holds) as the
/// JSON Schema 2020-12 the hub validates with and serves, in place:
/// - `nullable: true` admits `null`: `type: T` becomes `type: [T, "null"]`
///   (and an `enum` gains `null`); a schema without `type` becomes
///   `anyOf: [it, {"type": "null"}]`;
/// - boolean `exclusiveMinimum`/`exclusiveMaximum` become the numbers
///   2020-12 expects (`minimum: 0, exclusiveMinimum: true` →
///   `exclusiveMinimum: 0`; `false` is dropped);
/// - `example` becomes `examples: [example]`;
/// - keywords beside a `$ref` are dropped (3.0 ignores them; 2020-12 would
///   apply them), `$defs` excepted (the hub's own bundle).
///
/// Values (`enum`, `default`, `examples`) are never rewritten, only
/// subschemas.
pub fn schema_from_3_0(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if map.contains_key("$ref") {
        map.retain(|k, _| k == "$ref" || k == "$defs");
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        match map.get(exclusive) {
            Some(Value::Bool(true)) => match map.remove(bound) {
                Some(limit) => {
                    map.insert(exclusive.into(), limit);
                }
                None => {
                    map.remove(exclusive);
                }
            },
            Some(Value::Bool(false)) => {
                map.remove(exclusive);
            }
            _ => {}
        }
    }
    if let Some(example) = map.remove("example") {
        map.entry("examples").or_insert_with(|| json!([example]));
    }
    for key in ["properties", "patternProperties", "$defs", "definitions"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            children.values_mut().for_each(schema_from_3_0);
        }
    }
    for key in [
        "items",
        "additionalProperties",
        "not",
        "contains",
        "propertyNames",
    ] {
        if let Some(child) = map.get_mut(key) {
            schema_from_3_0(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf", "prefixItems"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(schema_from_3_0);
        }
    }
    if map.remove("nullable") != Some(Value::Bool(true)) {
        return;
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        if !values.contains(&Value::Null) {
            values.push(Value::Null);
        }
    }
    match map.get("type").cloned() {
        Some(Value::String(t)) => {
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(_) => {}
        None => {
            let defs = map.remove("$defs");
            let inner = Value::Object(std::mem::take(map));
            map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            if let Some(defs) = defs {
                map.insert("$defs".into(), defs);
            }
        }
    }
}

/// Parses a document in JSON or YAML.
pub fn parse(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))
    }
}

/// Maps a document to definitions under `namespace`.
pub fn import(doc: &Value, namespace: &str) -> Result<Document, String> {
    names::check_namespace(namespace)?;
    let version = doc
        .get("openapi")
        .and_then(Value::as_str)
        .ok_or("not an OpenAPI 3 document: the `openapi` field is missing")?;
    if !(version.starts_with("3.0") || version.starts_with("3.1")) {
        return Err(format!(
            "OpenAPI {version} is not supported: import 3.0 or 3.1 documents"
        ));
    }
    let paths = match doc.get("paths") {
        Some(Value::Object(paths)) => paths.clone(),
        None => Map::new(),
        Some(_) => return Err("`paths` is not an object".into()),
    };
    let resolver = Resolver { doc };
    let mut operations = Vec::new();
    let mut skipped = Vec::new();
    let mut taken = BTreeSet::new();
    for (path, item) in &paths {
        if let Err(e) = check_path_key(path) {
            skipped.push((path.clone(), e));
            continue;
        }
        let item = match resolver.resolve(item, &mut Vec::new()) {
            Ok(item) => item,
            Err(e) => {
                skipped.push((path.clone(), e));
                continue;
            }
        };
        let shared = item
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let label = format!("{} {path}", method.to_uppercase());
            let imported = match operation(&resolver, namespace, path, method, op, &shared) {
                Ok(imported) => imported,
                Err(e) => {
                    skipped.push((label, e));
                    continue;
                }
            };
            let mut imported = imported;
            // An operation's own `security` (even `[]`) replaces the document's.
            imported.binding.security = op
                .get("security")
                .or(doc.get("security"))
                .and_then(requirements);
            if version.starts_with("3.0") {
                let definition = &mut imported.definition;
                for schema in [&mut definition.input_schema, &mut definition.output_schema]
                    .into_iter()
                    .flatten()
                {
                    schema_from_3_0(schema);
                }
            }
            if !taken.insert(imported.definition.name.clone()) {
                skipped.push((
                    label,
                    format!(
                        "the operation name {} is already taken by another operation; give one of them another operationId",
                        imported.definition.name
                    ),
                ));
                continue;
            }
            operations.push(imported);
        }
    }
    Ok(Document {
        schemes: security_schemes(&resolver, doc),
        operations,
        skipped,
        server_url: doc
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .map(str::to_owned),
        title: doc
            .pointer("/info/title")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn operation(
    resolver: &Resolver<'_>,
    namespace: &str,
    path: &str,
    method: &str,
    op: &Value,
    shared: &[Value],
) -> Result<Imported, String> {
    let name = match op.get("operationId").and_then(Value::as_str) {
        Some(id) => sanitize(id),
        None => sanitize(&format!("{method}_{path}")),
    };
    names::check_name(&name)?;

    // Schemas keep their references: each component reached is bundled
    // once into the input's `$defs`.
    let mut bundle = Bundle::new(resolver);
    // Operation-level parameters override path-level ones of the same name and location.
    let mut params: Vec<(Param, Value, bool)> = Vec::new();
    let own = op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for raw in shared.iter().chain(own.iter()) {
        let p = resolver.resolve(raw, &mut Vec::new())?;
        let pname = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a parameter has no name")?;
        let location = match p.get("in").and_then(Value::as_str) {
            Some("path") => ParamIn::Path,
            Some("query") => ParamIn::Query,
            Some("header") => ParamIn::Header,
            // The caller gives the value, as for any parameter: the hub
            // keeps no cookies of its own.
            Some("cookie") => ParamIn::Cookie,
            other => {
                return Err(format!(
                    "parameter {pname} has an unknown location {other:?}"
                ))
            }
        };
        let schema = match p.get("schema") {
            Some(s) => bundle.rewrite(s)?,
            None => json!({ "type": "string" }),
        };
        let schema = with_description(schema, p.get("description"));
        let required = location == ParamIn::Path
            || p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let param = Param {
            name: pname.to_owned(),
            location,
            property: None,
            style: p.get("style").and_then(Value::as_str).map(str::to_owned),
            explode: p.get("explode").and_then(Value::as_bool),
        };
        params.retain(|(q, _, _)| q != &param);
        params.push((param, schema, required));
    }

    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut body = false;
    let mut body_type = None;
    let mut body_required = false;
    if let Some(rb) = op.get("requestBody") {
        let rb = resolver.resolve(rb, &mut Vec::new())?;
        let content = rb.get("content").and_then(Value::as_object);
        if let Some((media, schema)) = content.and_then(body_content) {
            let schema = if schema.is_null() {
                json!({})
            } else {
                bundle.rewrite(schema)?
            };
            properties.insert("body".into(), schema);
            body_required = rb.get("required").and_then(Value::as_bool).unwrap_or(false);
            body = true;
            body_type = (media != BODY_TYPES[0]).then(|| media.to_owned());
        }
    }
    property_names(&mut params, body)?;
    for (param, schema, is_required) in &params {
        properties.insert(param.property().to_owned(), schema.clone());
        if *is_required {
            required.push(Value::String(param.property().to_owned()));
        }
    }
    if body_required {
        required.push(Value::String("body".into()));
    }
    let mut input =
        json!({ "type": "object", "properties": properties, "additionalProperties": false });
    if !required.is_empty() {
        input["required"] = Value::Array(required);
    }
    let input = bundle.finish(input)?;

    let (stream, mut output, accept) = success_response(resolver, op)?;
    // An output schema is documentation, never checked: one that bundles
    // more than MAX_OUTPUT_SCHEMA_BYTES of components is left out rather
    // than stored with every operation (Stripe's reach most of its
    // components, 400 KB each).
    let mut note = None;
    if let Some(schema) = &output {
        let size = serde_json::to_vec(schema).map_or(0, |v| v.len());
        if size > MAX_OUTPUT_SCHEMA_BYTES {
            note = Some(format!(
                "its output schema is left out: bundled with the components it reaches it is {} KiB, over {} KiB",
                size / 1024,
                MAX_OUTPUT_SCHEMA_BYTES / 1024
            ));
            output = None;
        }
    }
    let op_type = if stream {
        OperationType::Subscription
    } else if method == "get" {
        OperationType::Query
    } else {
        OperationType::Mutation
    };
    let description = op
        .get("summary")
        .or_else(|| op.get("description"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Imported {
        definition: NewDefinition {
            namespace: namespace.to_owned(),
            name,
            op_type,
            input_schema: Some(input),
            output_schema: output,
            access_level: AccessLevel::Authenticated,
            required_scopes: Vec::new(),
            description,
            source: Source::Openapi,
        },
        binding: HttpBinding {
            method: method.to_uppercase(),
            path: path.to_owned(),
            params: params.into_iter().map(|(p, _, _)| p).collect(),
            body,
            body_type,
            accept,
            security: None,
        },
        note,
    })
}

/// Whether the first 2xx response streams (`text/event-stream`), and the
/// schema of its JSON content, and the `Accept` header that asks for it.
type Success = (bool, Option<Value>, Option<String>);

fn success_response(resolver: &Resolver<'_>, op: &Value) -> Result<Success, String> {
    let Some(Value::Object(responses)) = op.get("responses") else {
        return Ok((false, None, None));
    };
    // "200" < "201" < ... < "2XX" in byte order, so the first match is the
    // lowest explicit code, and the range only when no code is given.
    let Some((_, response)) = responses
        .iter()
        .filter(|(code, _)| code.starts_with('2'))
        .min_by(|a, b| a.0.cmp(b.0))
    else {
        return Ok((false, None, None));
    };
    let response = resolver.resolve(response, &mut Vec::new())?;
    let content = response.get("content").and_then(Value::as_object);
    let stream = content.is_some_and(|c| c.contains_key("text/event-stream"));
    let output = match response.pointer("/content/application~1json/schema") {
        Some(schema) if !stream => {
            let mut bundle = Bundle::new(resolver);
            let root = bundle.rewrite(schema)?;
            Some(bundle.finish(root)?)
        }
        _ => None,
    };
    Ok((stream, output, accept_of(content)))
}

fn with_description(mut schema: Value, description: Option<&Value>) -> Value {
    if let (Some(d), Value::Object(map)) = (description, &mut schema) {
        map.entry("description").or_insert_with(|| d.clone());
    }
    schema
}

/// Turns any text into one valid name segment: `[A-Za-z][A-Za-z0-9_-]*`.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    match trimmed.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => trimmed.to_owned(),
        _ => format!("op_{trimmed}"),
    }
}

/// Resolves local `$ref`s (`#/...`) against the document.
struct Resolver<'a> {
    doc: &'a Value,
}

impl Resolver<'_> {
    /// Follows `value`'s `$ref` chain, if any.
    fn resolve<'v>(&'v self, value: &'v Value, seen: &mut Vec<String>) -> Result<&'v Value, String>
    where
        Self: 'v,
    {
        let mut current = value;
        while let Some(reference) = current.get("$ref").and_then(Value::as_str) {
            if seen.iter().any(|s| s == reference) {
                return Err(format!("$ref {reference} refers to itself"));
            }
            seen.push(reference.to_owned());
            current = self.target(reference)?;
        }
        Ok(current)
    }

    fn target(&self, reference: &str) -> Result<&Value, String> {
        let pointer = pointer_of(reference)?;
        self.doc
            .pointer(&pointer)
            .ok_or_else(|| format!("$ref {reference} points to nothing"))
    }
}

/// The JSON pointer of a local reference: the URI fragment after `#`,
/// percent-decoded (RFC 6901 §6) before serde_json reads its `~1` and `~0`.
fn pointer_of(reference: &str) -> Result<String, String> {
    let fragment = reference.strip_prefix('#').ok_or_else(|| {
        format!("$ref {reference} points outside the document; only local references (#/...) are resolved")
    })?;
    percent_encoding::percent_decode_str(fragment)
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| format!("$ref {reference} is not UTF-8 once percent-decoded"))
}

/// The schemas of one operation, their references kept: every component a
/// schema reaches is copied once into `$defs` at the root and referenced as
/// `#/$defs/<key>`, so a document whose schemas reach each other many times
/// over (Stripe's, Kubernetes's) costs each component once per operation,
/// not once per path to it, and recursive schemas stay recursive.
struct Bundle<'r, 'd> {
    resolver: &'r Resolver<'d>,
    defs: Map<String, Value>,
    /// Reference → its key in `$defs`.
    keys: std::collections::HashMap<String, String>,
    /// The keys taken.
    used: BTreeSet<String>,
    /// Components referenced but not yet copied.
    pending: Vec<(String, String)>,
}

impl<'r, 'd> Bundle<'r, 'd> {
    fn new(resolver: &'r Resolver<'d>) -> Self {
        Bundle {
            resolver,
            defs: Map::new(),
            keys: Default::default(),
            used: BTreeSet::new(),
            pending: Vec::new(),
        }
    }

    /// A copy of `schema` whose local references point into `$defs`.
    fn rewrite(&mut self, schema: &Value) -> Result<Value, String> {
        match schema {
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(reference)) => {
                            Value::String(format!("#/$defs/{}", self.key_for(reference)?))
                        }
                        _ => self.rewrite(v)?,
                    };
                    out.insert(k.clone(), v);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => items
                .iter()
                .map(|v| self.rewrite(v))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }

    /// The `$defs` key of `reference`, claimed on first sight: the
    /// component's own name (the pointer's last segment) made safe for a
    /// pointer, with a number added when another component had it.
    fn key_for(&mut self, reference: &str) -> Result<String, String> {
        if let Some(key) = self.keys.get(reference) {
            return Ok(key.clone());
        }
        self.resolver.target(reference)?;
        let pointer = pointer_of(reference)?;
        let last = pointer
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .replace("~1", "/")
            .replace("~0", "~");
        let mut base: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if base.is_empty() {
            base = "def".into();
        }
        let mut key = base.clone();
        let mut n = 1;
        while self.used.contains(&key) {
            n += 1;
            key = format!("{base}_{n}");
        }
        self.used.insert(key.clone());
        self.keys.insert(reference.to_owned(), key.clone());
        self.pending.push((reference.to_owned(), key.clone()));
        Ok(key)
    }

    /// `root` with the components it reaches as `$defs`.
    fn finish(mut self, mut root: Value) -> Result<Value, String> {
        while let Some((reference, key)) = self.pending.pop() {
            let target = self.resolver.target(&reference)?;
            let copied = self.rewrite(target)?;
            self.defs.insert(key, copied);
        }
        if !self.defs.is_empty() {
            if let Value::Object(map) = &mut root {
                map.insert("$defs".into(), Value::Object(self.defs));
            }
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETS: &str = r##"
openapi: 3.0.3
info: { title: Pets, version: "1" }
servers: [{ url: "http://localhost:8080/api" }]
paths:
  /pets/{petId}:
    parameters:
      - { name: petId, in: path, schema: { type: integer } }
    get:
      operationId: getPet
      summary: One pet
      parameters:
        - { name: verbose, in: query, schema: { type: boolean } }
        - { name: X-Trace, in: header, required: true, schema: { type: string } }
      responses:
        "404": { description: missing }
        "200":
          description: ok
          content:
            application/json:
              schema: { $ref: "#/components/schemas/Pet" }
    put:
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Pet" }
      responses:
        "204": { description: done }
  /events:
    get:
      operationId: watch.events
      responses:
        "200":
          description: stream
          content:
            text/event-stream: { schema: { type: string } }
components:
  schemas:
    Pet:
      type: object
      properties:
        name: { type: string }
        parent: { $ref: "#/components/schemas/Pet" }
"##;

    fn pets() -> Document {
        import(&parse(PETS).unwrap(), "pets").unwrap()
    }

    #[test]
    fn names_types_and_order_follow_the_document() {
        let doc = pets();
        let summary: Vec<_> = doc
            .operations
            .iter()
            .map(|o| {
                (
                    o.definition.id(),
                    o.definition.op_type,
                    o.binding.method.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "pets.watch_events".to_owned(),
                    OperationType::Subscription,
                    "GET"
                ),
                ("pets.getPet".to_owned(), OperationType::Query, "GET"),
                (
                    "pets.put_pets_petId".to_owned(),
                    OperationType::Mutation,
                    "PUT"
                ),
            ]
        );
        assert_eq!(doc.server_url.as_deref(), Some("http://localhost:8080/api"));
        assert_eq!(doc.title.as_deref(), Some("Pets"));
    }

    #[test]
    fn the_input_holds_path_level_parameters_and_the_body() {
        let doc = pets();
        let get = &doc.operations[1];
        let input = get.definition.input_schema.as_ref().unwrap();
        assert_eq!(input["properties"]["petId"]["type"], "integer");
        assert_eq!(input["properties"]["verbose"]["type"], "boolean");
        assert_eq!(input["required"], json!(["petId", "X-Trace"]));
        assert_eq!(
            get.binding.params,
            [
                Param {
                    name: "petId".into(),
                    location: ParamIn::Path,
                    property: None,
                    style: None,
                    explode: None,
                },
                Param {
                    name: "verbose".into(),
                    location: ParamIn::Query,
                    property: None,
                    style: None,
                    explode: None,
                },
                Param {
                    name: "X-Trace".into(),
                    location: ParamIn::Header,
                    property: None,
                    style: None,
                    explode: None,
                },
            ]
        );
        let put = &doc.operations[2];
        assert!(put.binding.body);
        let input = put.definition.input_schema.as_ref().unwrap();
        assert_eq!(input["required"], json!(["petId", "body"]));
        assert_eq!(input["properties"]["body"]["$ref"], "#/$defs/Pet");
        assert_eq!(
            input["$defs"]["Pet"]["properties"]["name"]["type"],
            "string"
        );
    }

    #[test]
    fn refs_are_bundled_once_and_recursion_stays_recursive() {
        let doc = pets();
        let output = doc.operations[1].definition.output_schema.as_ref().unwrap();
        assert_eq!(output["$ref"], "#/$defs/Pet");
        let pet = &output["$defs"]["Pet"];
        assert_eq!(pet["properties"]["name"]["type"], "string");
        assert_eq!(pet["properties"]["parent"]["$ref"], "#/$defs/Pet");
        // A validator follows the references, recursion included.
        let validator = crate::catalog::compile_schema(output).unwrap();
        assert!(validator.is_valid(&json!({"name": "a", "parent": {"name": "b"}})));
        assert!(!validator.is_valid(&json!({"name": "a", "parent": {"name": 7}})));
        assert_eq!(
            doc.operations[1].definition.description.as_deref(),
            Some("One pet")
        );
        // The output schema comes from the 2xx response, not from the 404.
        assert!(doc.operations[2].definition.output_schema.is_none());
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        let err = import(&json!({"swagger": "2.0"}), "x").unwrap_err();
        assert!(err.contains("`openapi` field is missing"), "{err}");
        let err = import(&json!({"openapi": "2.0"}), "x").unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        let err = import(&json!({"openapi": "3.1.0"}), "bad namespace").unwrap_err();
        assert!(err.contains("invalid namespace"), "{err}");
    }

    #[test]
    fn an_operation_that_cannot_be_mapped_is_skipped_with_its_reason() {
        let doc = json!({"openapi": "3.1.0", "paths": {
            "/a": {"get": {"parameters": [{"$ref": "#/nowhere"}]}},
            "/b": {"get": {"operationId": "same"}},
            "/c": {"get": {"operationId": "same"}},
            "/d": {"get": {"operationId": "fine"}}}});
        let doc = import(&doc, "x").unwrap();
        let ids: Vec<_> = doc.operations.iter().map(|o| o.definition.id()).collect();
        assert_eq!(ids, ["x.same", "x.fine"]);
        assert_eq!(doc.skipped.len(), 2, "{:?}", doc.skipped);
        assert_eq!(doc.skipped[0].0, "GET /a");
        assert!(doc.skipped[0].1.contains("#/nowhere"), "{:?}", doc.skipped);
        assert_eq!(doc.skipped[1].0, "GET /c");
        assert!(
            doc.skipped[1].1.contains("already taken"),
            "{:?}",
            doc.skipped
        );
    }

    #[test]
    fn parameters_sharing_a_name_get_properties_by_the_collision_rule() {
        let doc = json!({"openapi": "3.1.0", "paths": {
            "/items/{id}": {"post": {"operationId": "put",
                "parameters": [
                    {"name": "id", "in": "header", "required": true},
                    {"name": "id", "in": "query"},
                    {"name": "id", "in": "path", "required": true},
                    {"name": "body", "in": "query"}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}}},
            "/clash/{x}": {"get": {"operationId": "clash",
                "parameters": [
                    {"name": "x", "in": "path", "required": true},
                    {"name": "x", "in": "query"},
                    {"name": "query_x", "in": "header"}]}}}});
        let doc = import(&doc, "x").unwrap();
        let named = |name: &str| {
            let op = doc.operations.iter().find(|o| o.definition.name == name);
            op.unwrap_or_else(|| panic!("{name}: {:?}", doc.skipped))
        };
        let properties_of = |name: &str| -> Vec<(String, String)> {
            named(name)
                .binding
                .params
                .iter()
                .map(|p| (p.name.clone(), p.property().to_owned()))
                .collect()
        };
        let put = named("put");
        let properties = properties_of("put");
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            properties,
            pairs(&[
                ("id", "id"),
                ("id", "query_id"),
                ("body", "query_body"),
                ("id", "header_id")
            ])
        );
        let input = put.definition.input_schema.as_ref().unwrap();
        assert_eq!(input["required"], json!(["id", "header_id"]));
        assert!(input["properties"]["body"].is_object());
        // The query parameter takes `query_x` first; the header parameter
        // of that name is renamed in turn.
        assert_eq!(
            properties_of("clash"),
            pairs(&[("x", "x"), ("x", "query_x"), ("query_x", "header_query_x")])
        );
    }

    #[test]
    fn paths_that_could_leave_the_base_url_are_skipped() {
        let doc = json!({"openapi": "3.1.0", "paths": {
            "items": {"get": {"operationId": "a"}},
            "/x/../admin": {"get": {"operationId": "b"}},
            "/x/%2E%2e/admin": {"get": {"operationId": "c"}},
            "/ok/{id}": {"get": {"operationId": "d"}}}});
        let doc = import(&doc, "x").unwrap();
        let ids: Vec<_> = doc.operations.iter().map(|o| o.definition.id()).collect();
        assert_eq!(ids, ["x.d"]);
        let reasons: Vec<&str> = doc.skipped.iter().map(|(_, why)| why.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons.iter().any(|r| r.contains("does not start with /")),
            "{reasons:?}"
        );
        assert_eq!(
            reasons
                .iter()
                .filter(|r| r.contains("would leave the base URL"))
                .count(),
            2,
            "{reasons:?}"
        );
    }

    #[test]
    fn openapi_3_0_schemas_become_json_schema_2020_12() {
        let doc = json!({"openapi": "3.0.3", "paths": {"/a": {"post": {"operationId": "a",
            "parameters": [{"name": "n", "in": "query",
                "schema": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "example": 5}}],
            "requestBody": {"content": {"application/json": {"schema": {
                "type": "object",
                "properties": {
                    "owner": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/User"}]},
                    "state": {"type": "string", "enum": ["open", "closed"], "nullable": true},
                    "user": {"$ref": "#/components/schemas/User", "description": "ignored in 3.0"},
                    "enumOfNullable": {"type": "string", "enum": ["nullable"]}}}}}},
            "responses": {"200": {"description": "ok"}}}}},
            "components": {"schemas": {"User": {"type": "object", "nullable": true,
                "properties": {"login": {"type": "string"}},
                "additionalProperties": {"type": "number", "maximum": 9, "exclusiveMaximum": false}}}}});
        let doc = import(&doc, "x").unwrap();
        let input = doc.operations[0].definition.input_schema.clone().unwrap();
        assert_eq!(
            input["properties"]["n"],
            json!({"type": "integer", "exclusiveMinimum": 0, "examples": [5]})
        );
        let body = &input["properties"]["body"]["properties"];
        assert_eq!(body["owner"]["anyOf"][1], json!({"type": "null"}));
        assert_eq!(body["state"]["type"], json!(["string", "null"]));
        assert_eq!(body["state"]["enum"], json!(["open", "closed", null]));
        assert_eq!(body["user"], json!({"$ref": "#/$defs/User"}));
        assert_eq!(
            body["enumOfNullable"]["enum"],
            json!(["nullable"]),
            "values are not schemas"
        );
        let user = &input["$defs"]["User"];
        assert_eq!(user["type"], json!(["object", "null"]));
        assert_eq!(
            user["additionalProperties"],
            json!({"type": "number", "maximum": 9})
        );
        // The hub validates with the result as 3.0 meant it.
        let validator = crate::catalog::compile_schema(&input).unwrap();
        let ok = json!({"n": 1, "body": {"owner": null, "state": null, "user": {"login": "a"}}});
        assert!(validator.is_valid(&ok), "{input}");
        assert!(!validator.is_valid(&json!({"n": 0})), "exclusive minimum");
        assert!(!validator.is_valid(&json!({"body": {"state": "merged"}})));
    }

    #[test]
    fn an_output_schema_over_the_cap_is_left_out_with_a_note() {
        let big: Map<String, Value> = (0..6000)
            .map(|i| {
                (
                    format!("field_with_a_long_name_{i}"),
                    json!({"type": "string", "description": "some words about it"}),
                )
            })
            .collect();
        let doc = json!({"openapi": "3.1.0", "paths": {
            "/big": {"get": {"operationId": "big", "responses": {"200": {"description": "ok",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Big"}}}}}}},
            "/small": {"get": {"operationId": "small", "responses": {"200": {"description": "ok",
                "content": {"application/json": {"schema": {"type": "integer"}}}}}}}},
            "components": {"schemas": {"Big": {"type": "object", "properties": big}}}});
        let doc = import(&doc, "x").unwrap();
        let big = doc
            .operations
            .iter()
            .find(|o| o.definition.name == "big")
            .unwrap();
        assert!(big.definition.output_schema.is_none());
        assert!(
            big.note
                .as_deref()
                .unwrap()
                .contains("output schema is left out"),
            "{:?}",
            big.note
        );
        let small = doc
            .operations
            .iter()
            .find(|o| o.definition.name == "small")
            .unwrap();
        assert!(small.definition.output_schema.is_some() && small.note.is_none());
    }

    #[test]
    fn references_are_percent_decoded_before_their_escapes() {
        // RFC 6901 §6: `#/components/schemas/a%20b~1c` names the component `a b/c`.
        let doc = json!({"openapi": "3.1.0",
            "paths": {"/a": {"get": {"operationId": "a", "responses": {"200": {
                "description": "ok",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/a%20b~1c"}}}}}}}},
            "components": {"schemas": {"a b/c": {"type": "integer"}}}});
        let doc = import(&doc, "x").unwrap();
        assert!(doc.skipped.is_empty(), "{:?}", doc.skipped);
        let output = doc.operations[0].definition.output_schema.as_ref().unwrap();
        assert_eq!(output["$ref"], "#/$defs/a_b_c");
        assert_eq!(output["$defs"]["a_b_c"]["type"], "integer");
    }

    #[test]
    fn schemas_that_reach_each_other_many_times_over_are_copied_once() {
        // S0 → S1 → … → S40, each reaching the next twice: 2^40 paths,
        // which inlining would never finish. Bundled, S1…S40 are 40 `$defs`.
        let mut schemas = Map::new();
        for i in 0..40 {
            let next = format!("#/components/schemas/S{}", i + 1);
            schemas.insert(
                format!("S{i}"),
                json!({"type": "object", "properties": {"a": {"$ref": next}, "b": {"$ref": next}}}),
            );
        }
        schemas.insert("S40".into(), json!({"type": "string"}));
        let doc = json!({"openapi": "3.1.0",
            "paths": {"/a": {"post": {"operationId": "a",
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}}}}},
            "components": {"schemas": schemas}});
        let doc = import(&doc, "x").unwrap();
        let input = doc.operations[0].definition.input_schema.as_ref().unwrap();
        assert_eq!(input["$defs"].as_object().unwrap().len(), 41);
        assert!(input.to_string().len() < 10_000);
        let validator = crate::catalog::compile_schema(input).unwrap();
        assert!(validator.is_valid(&json!({"body": {"a": {"b": {}}}})));
    }

    #[test]
    fn names_are_sanitized_into_one_segment() {
        assert_eq!(sanitize("get_/items/{id}"), "get_items_id");
        assert_eq!(sanitize("list-items.v2"), "list-items_v2");
        assert_eq!(sanitize("123"), "op_123");
    }
}
