//! The HTTP provider: the hub serves the operations of an OpenAPI import
//! with a base URL itself, executing each call as an HTTP request.
//!
//! It is a provider like any spoke, seen through the same seam: a
//! [`Connection`] (kind `client`, id `import-<name>`) whose outbound queue
//! this task reads instead of a WebSocket writer. Calls arrive as
//! `call.requested` frames and answers go back through
//! [`crate::dispatch::Dispatcher::provider_event`], so routing, deadlines,
//! aborts and shutdown treat it exactly as a connected spoke.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::AbortHandle;

use super::openapi::{HttpBinding, ParamIn};
use super::{Auth, OpenapiConfig};
use crate::catalog::Provider;
use crate::connection::{now_ms, Connection, Outbound};
use crate::protocol::{self, Identity, PrincipalKind};
use crate::server::Hub;
use crate::store::{Import, NewRegistration};

/// The provider id an import serves under.
pub fn provider_id(import: &str) -> String {
    format!("import-{}", import.replace('.', "-").to_lowercase())
}

/// Starts serving `import` when it has a base URL; returns at once.
pub async fn start(hub: Hub, import: Import) -> anyhow::Result<()> {
    let config: OpenapiConfig = serde_json::from_value(import.config.clone())?;
    let Some(base_url) = config.base_url.clone() else {
        return Ok(());
    };
    let identity = Identity {
        kind: PrincipalKind::Client,
        id: provider_id(&import.name),
        scopes: Vec::new(),
    };
    let (connection, mut rx) = Connection::new(hub.next_session_id(), identity, BTreeMap::new());
    hub.attach(&connection).await;
    let mut served = Vec::new();
    for operation_id in &import.operations {
        let Some((namespace, name)) = crate::names::split_operation_id(operation_id) else {
            continue;
        };
        let registration = hub
            .store()
            .activate_registration(&NewRegistration {
                operation_id: operation_id.clone(),
                provider_type: PrincipalKind::Client,
                provider_id: connection.identity.id.clone(),
                pre_remap_namespace: namespace.to_owned(),
                pre_remap_name: name.to_owned(),
                metadata: json!({ "import": import.name, "baseUrl": base_url }),
            })
            .await?;
        let added = hub.dispatcher().catalog().add_provider(
            operation_id,
            Provider {
                registration_id: registration.id.clone().into(),
                pre_remap_id: operation_id.as_str().into(),
                connection: connection.clone(),
                in_flight: Arc::new(AtomicU32::new(0)),
            },
        );
        if added {
            served.push(registration.id);
        }
    }
    tracing::info!(import = %import.name, base_url, operations = served.len(), "serving imported API");

    let client = reqwest::Client::new();
    let runner = Arc::new(Runner {
        hub: hub.clone(),
        connection: connection.clone(),
        client,
        base_url,
        auth: config.auth,
        bindings: config.bindings,
        open: Mutex::default(),
    });
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outbound::Text(frame) => runner.clone().on_frame(&frame),
                Outbound::Close(..) => break,
            }
        }
        for (_, task) in runner.open.lock().unwrap().drain() {
            task.abort();
        }
        let dispatcher = hub.dispatcher();
        hub.detach(&connection);
        dispatcher
            .catalog()
            .remove_session(connection.session_id, None);
        dispatcher.connection_gone(&connection);
        if let Err(e) = hub
            .store()
            .deactivate_registrations(PrincipalKind::Client, &connection.identity.id, &served)
            .await
        {
            tracing::warn!(error = %e, "could not mark the import's registrations inactive");
        }
    });
    Ok(())
}

struct Runner {
    hub: Hub,
    connection: Arc<Connection>,
    client: reqwest::Client,
    base_url: String,
    auth: Option<Auth>,
    bindings: BTreeMap<String, HttpBinding>,
    open: Mutex<HashMap<String, AbortHandle>>,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    payload: Payload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    request_id: String,
    #[serde(default)]
    operation_id: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    deadline: Option<u64>,
}

/// How a call ended, for the caller.
enum Answer {
    /// One envelope, then (for a stream) more of them, then `completed`.
    Output(Value),
    Completed,
    Error(&'static str, String, Option<Value>),
}

impl Runner {
    fn on_frame(self: Arc<Self>, frame: &str) {
        let Ok(frame) = serde_json::from_str::<Frame>(frame) else {
            return;
        };
        let request_id = frame.payload.request_id.clone();
        match frame.kind.as_str() {
            "call.requested" => {
                let me = self.clone();
                let id = request_id.clone();
                // Registered before it can finish, removed by itself when done.
                let mut open = self.open.lock().unwrap();
                let task = tokio::spawn(async move {
                    me.execute(frame.payload).await;
                    me.open.lock().unwrap().remove(&id);
                });
                open.insert(request_id, task.abort_handle());
            }
            "call.aborted" => {
                if let Some(task) = self.open.lock().unwrap().remove(&request_id) {
                    task.abort();
                }
            }
            _ => {}
        }
    }

    fn answer(&self, request_id: &str, answer: Answer) {
        let (kind, payload) = match answer {
            Answer::Output(output) => (
                "call.responded",
                json!({ "requestId": request_id, "output": output }),
            ),
            Answer::Completed => ("call.completed", json!({ "requestId": request_id })),
            Answer::Error(code, message, details) => {
                let mut p = json!({ "requestId": request_id, "code": code, "message": message });
                if let Some(d) = details {
                    p["details"] = d;
                }
                ("call.error", p)
            }
        };
        let text = payload.to_string();
        if let Ok(event) = serde_json::from_str::<protocol::CallEventIn<'_>>(&text) {
            let _ = self
                .hub
                .dispatcher()
                .provider_event(&self.connection, kind, event);
        }
    }

    async fn execute(&self, call: Payload) {
        let request_id = call.request_id.clone();
        let name = crate::names::split_operation_id(&call.operation_id)
            .map(|(_, name)| name)
            .unwrap_or_default();
        let Some(binding) = self.bindings.get(name) else {
            self.answer(
                &request_id,
                Answer::Error(
                    "EXECUTION_ERROR",
                    format!("the import has no HTTP binding for {}", call.operation_id),
                    None,
                ),
            );
            return;
        };
        let request = match self.build(binding, &call) {
            Ok(r) => r,
            Err(message) => {
                self.answer(&request_id, Answer::Error("EXECUTION_ERROR", message, None));
                return;
            }
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let code = if e.is_timeout() {
                    "TIMEOUT"
                } else {
                    "EXECUTION_ERROR"
                };
                self.answer(
                    &request_id,
                    Answer::Error(
                        code,
                        format!("{} {}: {e}", binding.method, binding.path),
                        None,
                    ),
                );
                return;
            }
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let meta = |extra: Option<&str>| {
            let mut meta = json!({
                "source": "http",
                "operationId": call.operation_id,
                "timestamp": now_ms(),
                "status": status,
                "contentType": content_type,
                "headers": headers,
            });
            if let Some(event) = extra {
                meta["event"] = json!(event);
            }
            meta
        };
        if !(200..300).contains(&status) {
            let body = response.text().await.unwrap_or_default();
            self.answer(
                &request_id,
                Answer::Error(
                    "EXECUTION_ERROR",
                    format!("{} {} answered HTTP {status}", binding.method, binding.path),
                    Some(json!({ "status": status, "body": parse_body(&body, &content_type) })),
                ),
            );
            return;
        }
        if content_type.starts_with("text/event-stream") {
            self.stream(&request_id, response, &meta).await;
            return;
        }
        match response.text().await {
            Ok(body) => self.answer(
                &request_id,
                Answer::Output(
                    json!({ "data": parse_body(&body, &content_type), "meta": meta(None) }),
                ),
            ),
            Err(e) => self.answer(
                &request_id,
                Answer::Error(
                    "EXECUTION_ERROR",
                    format!("cannot read the answer: {e}"),
                    None,
                ),
            ),
        }
    }

    /// Streams `text/event-stream`: one envelope per event, `data` parsed as
    /// JSON when it is JSON, then `completed` when the server ends the stream.
    async fn stream(
        &self,
        request_id: &str,
        mut response: reqwest::Response,
        meta: &(dyn Fn(Option<&str>) -> Value + Sync),
    ) {
        let mut buffer = String::new();
        let mut parser = SseParser::default();
        loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    buffer.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(end) = buffer.find('\n') {
                        let line: String = buffer.drain(..=end).collect();
                        if let Some((event, data)) =
                            parser.line(line.trim_end_matches(['\n', '\r']))
                        {
                            let data = parse_body(&data, "application/json");
                            self.answer(
                                request_id,
                                Answer::Output(
                                    json!({ "data": data, "meta": meta(event.as_deref()) }),
                                ),
                            );
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.answer(
                        request_id,
                        Answer::Error(
                            "EXECUTION_ERROR",
                            format!("the event stream broke: {e}"),
                            None,
                        ),
                    );
                    return;
                }
            }
        }
        if let Some((event, data)) = parser.line("") {
            let data = parse_body(&data, "application/json");
            self.answer(
                request_id,
                Answer::Output(json!({ "data": data, "meta": meta(event.as_deref()) })),
            );
        }
        self.answer(request_id, Answer::Completed);
    }

    fn build(
        &self,
        binding: &HttpBinding,
        call: &Payload,
    ) -> Result<reqwest::RequestBuilder, String> {
        let input = call.input.as_object().cloned().unwrap_or_default();
        let mut path = binding.path.clone();
        let mut query = Vec::new();
        let mut headers = Vec::new();
        for param in &binding.params {
            let Some(value) = input.get(&param.name) else {
                if param.location == ParamIn::Path {
                    return Err(format!("the path parameter {} is missing", param.name));
                }
                continue;
            };
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match param.location {
                ParamIn::Path => {
                    path = path.replace(&format!("{{{}}}", param.name), &encode_segment(&text))
                }
                ParamIn::Query => query.push((param.name.clone(), text)),
                ParamIn::Header => headers.push((param.name.clone(), text)),
            }
        }
        let method = reqwest::Method::from_bytes(binding.method.as_bytes())
            .map_err(|e| format!("invalid method {}: {e}", binding.method))?;
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .query(&query);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if binding.body {
            if let Some(body) = input.get("body") {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
        }
        if let Some(auth) = &self.auth {
            request = apply_auth(request, auth)?;
        }
        if let Some(deadline) = call.deadline {
            let left = deadline.saturating_sub(now_ms()).max(1);
            request = request.timeout(Duration::from_millis(left));
        }
        Ok(request)
    }
}

fn apply_auth(
    request: reqwest::RequestBuilder,
    auth: &Auth,
) -> Result<reqwest::RequestBuilder, String> {
    let read = |env: &str| {
        std::env::var(env).map_err(|_| {
            format!(
                "the import authenticates with ${env}, which is not set in the hub's environment"
            )
        })
    };
    Ok(match auth {
        Auth::Bearer { env } => request.bearer_auth(read(env)?),
        Auth::Header { name, env } => request.header(name.as_str(), read(env)?),
        Auth::Basic { env } => {
            let value = read(env)?;
            let (user, password) = value.split_once(':').unwrap_or((&value, ""));
            request.basic_auth(user, Some(password))
        }
    })
}

/// JSON when it parses as JSON, else the text.
fn parse_body(body: &str, content_type: &str) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    if content_type.contains("json") || content_type.is_empty() {
        if let Ok(v) = serde_json::from_str(body) {
            return v;
        }
    }
    Value::String(body.to_owned())
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved characters).
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text/event-stream format: `event:` and `data:` lines, an empty line
/// ends an event; `data` lines join with newlines; comments start with `:`.
#[derive(Default)]
struct SseParser {
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds one line; returns an event when the line ends one.
    fn line(&mut self, line: &str) -> Option<(Option<String>, String)> {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event = None;
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some((self.event.take(), data));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_lines_make_events() {
        let mut p = SseParser::default();
        let mut events = Vec::new();
        for line in [
            ": hi",
            "event: tick",
            "data: {\"n\":1}",
            "",
            "data: a",
            "data: b",
            "",
            "",
        ] {
            events.extend(p.line(line));
        }
        assert_eq!(
            events,
            [
                (Some("tick".to_owned()), "{\"n\":1}".to_owned()),
                (None, "a\nb".to_owned())
            ]
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(encode_segment("Ünï"), "%C3%9Cn%C3%AF");
    }
}
