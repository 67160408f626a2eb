//! The HTTP provider: the hub serves the operations of an OpenAPI import
//! with a base URL itself, executing each call as an HTTP request (through
//! the in-process provider seam of [`super::provider`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::openapi::{HttpBinding, ParamIn, Scheme};
use super::provider::{self, Answer, Call, Responder};
use super::serialize;
use super::{Auth, OpenapiConfig};
use crate::connection::now_ms;
use crate::server::Hub;
use crate::store::Import;

/// The provider id an import serves under.
pub fn provider_id(import: &str) -> String {
    format!("import-{}", import.replace('.', "-").to_lowercase())
}

/// Starts serving `import` when it has a base URL; returns once registered,
/// with what stops it (`None` for a definition-only import).
pub async fn start(hub: Hub, import: Import) -> anyhow::Result<Option<provider::Serving>> {
    let config: OpenapiConfig = serde_json::from_value(import.config.clone())?;
    let Some(base_url) = config.base_url.clone() else {
        return Ok(None);
    };
    let runner = Arc::new(Runner {
        client: super::tls::client(config.ca_cert.as_deref())?
            .redirect(same_origin_redirects())
            .build()?,
        base_url: base_url.clone(),
        auth: config.auth,
        credentials: config.credentials,
        schemes: config.schemes,
        tokens: tokio::sync::Mutex::default(),
        bindings: config.bindings,
    });
    let handler: provider::Handler = Arc::new(move |call, responder| {
        let runner = runner.clone();
        Box::pin(async move { runner.execute(call, responder).await })
    });
    let serving = provider::serve(
        &hub,
        &provider_id(&import.name),
        &import.operations,
        json!({ "import": import.name, "baseUrl": base_url }),
        handler,
    )
    .await?;
    tracing::info!(import = %import.name, base_url, "serving imported API");
    Ok(Some(serving))
}

/// Redirects are followed only within the origin they start from (at most
/// 10): the import's credentials (an API key in any header) must never
/// reach another host. A redirect elsewhere ends the request, and its 3xx
/// answer is the call's.
pub(crate) fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let leaves = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() != attempt.url().origin());
        if leaves {
            attempt.stop()
        } else if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

struct Runner {
    client: reqwest::Client,
    base_url: String,
    auth: Option<Auth>,
    /// Scheme name → the variable holding its credential.
    credentials: BTreeMap<String, String>,
    schemes: BTreeMap<String, Scheme>,
    /// OAuth2 tokens by scheme and scopes, until they expire.
    tokens: tokio::sync::Mutex<HashMap<String, (String, Instant)>>,
    bindings: BTreeMap<String, HttpBinding>,
}

/// A token is renewed this long before its `expires_in` says it ends.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// Reads the variable `env` holds a credential in.
fn read_env(env: &str) -> Result<String, String> {
    std::env::var(env).map_err(|_| {
        format!("the import authenticates with ${env}, which is not set in the hub's environment")
    })
}

impl Runner {
    async fn execute(&self, call: Call, out: Responder) {
        let name = crate::names::split_operation_id(&call.operation_id)
            .map(|(_, name)| name)
            .unwrap_or_default();
        let Some(binding) = self.bindings.get(name) else {
            out.send(Answer::Error(
                "EXECUTION_ERROR",
                format!("the import has no HTTP binding for {}", call.operation_id),
                None,
            ));
            return;
        };
        let request = match self.build(binding, &call).await {
            Ok(r) => r,
            Err(message) => {
                out.send(Answer::Error("EXECUTION_ERROR", message, None));
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
                out.send(Answer::Error(
                    code,
                    format!("{} {}: {e}", binding.method, binding.path),
                    None,
                ));
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
            out.send(Answer::Error(
                "EXECUTION_ERROR",
                format!("{} {} answered HTTP {status}", binding.method, binding.path),
                Some(json!({ "status": status, "body": parse_body(&body, &content_type) })),
            ));
            return;
        }
        if content_type.starts_with("text/event-stream") {
            self.stream(&out, response, &meta).await;
            return;
        }
        match response.text().await {
            Ok(body) => out.send(Answer::Output(
                json!({ "data": parse_body(&body, &content_type), "meta": meta(None) }),
            )),
            Err(e) => out.send(Answer::Error(
                "EXECUTION_ERROR",
                format!("cannot read the answer: {e}"),
                None,
            )),
        }
    }

    /// Streams `text/event-stream`: one envelope per event, `data` parsed as
    /// JSON when it is JSON, then `completed` when the server ends the stream.
    async fn stream(
        &self,
        out: &Responder,
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
                            out.send(Answer::Output(
                                json!({ "data": data, "meta": meta(event.as_deref()) }),
                            ));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    out.send(Answer::Error(
                        "EXECUTION_ERROR",
                        format!("the event stream broke: {e}"),
                        None,
                    ));
                    return;
                }
            }
        }
        if let Some((event, data)) = parser.line("") {
            let data = parse_body(&data, "application/json");
            out.send(Answer::Output(
                json!({ "data": data, "meta": meta(event.as_deref()) }),
            ));
        }
        out.send(Answer::Completed);
    }

    async fn build(
        &self,
        binding: &HttpBinding,
        call: &Call,
    ) -> Result<reqwest::RequestBuilder, String> {
        let input = call.input.as_object().cloned().unwrap_or_default();
        let mut path = binding.path.clone();
        let mut query: Vec<(String, String)> = Vec::new();
        let mut headers = Vec::new();
        let mut cookies = Vec::new();
        for param in &binding.params {
            // A null is an absent parameter, never the text `null`.
            let Some(value) = input.get(param.property()).filter(|v| !v.is_null()) else {
                if param.location == ParamIn::Path {
                    return Err(format!("the path parameter {} is missing", param.name));
                }
                continue;
            };
            match param.location {
                ParamIn::Path => {
                    let text = serialize::path(param, value);
                    // Encoded, a `/` cannot add a segment; but `.` and `..`
                    // are unreserved and would still climb out of the base URL.
                    if text == "." || text == ".." {
                        return Err(format!(
                            "the path parameter {} cannot be {text:?}: the request would leave the base URL",
                            param.name
                        ));
                    }
                    path = path.replace(&format!("{{{}}}", param.name), &text)
                }
                ParamIn::Query => query.extend(serialize::query(param, value)),
                ParamIn::Cookie => cookies.push(serialize::cookie(param, value)),
                ParamIn::Header => {
                    headers.push((param.name.clone(), serialize::header(param, value)))
                }
            }
        }
        let method = reqwest::Method::from_bytes(binding.method.as_bytes())
            .map_err(|e| format!("invalid method {}: {e}", binding.method))?;
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .query(&query);
        if let Some(accept) = &binding.accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if binding.body {
            if let Some(body) = input.get("body") {
                let (content_type, bytes) = serialize::body(binding.body_type.as_deref(), body)?;
                request = request
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes);
            }
        }
        if let Some(auth) = &self.auth {
            request = apply_auth(request, auth)?;
        }
        request = self.authenticate(binding, request, &mut cookies).await?;
        if !cookies.is_empty() {
            request = request.header(reqwest::header::COOKIE, cookies.join("; "));
        }
        if let Some(deadline) = call.deadline {
            let left = deadline.saturating_sub(now_ms()).max(1);
            request = request.timeout(Duration::from_millis(left));
        }
        Ok(request)
    }
}

impl Runner {
    /// Applies the credentials of the first alternative of the operation's
    /// security requirements that the import has every credential for. An
    /// empty alternative (`{}`) means authentication is optional; with no
    /// alternative it can meet and no import-wide `--auth`, the call fails
    /// naming what it needs.
    async fn authenticate(
        &self,
        binding: &HttpBinding,
        mut request: reqwest::RequestBuilder,
        cookies: &mut Vec<String>,
    ) -> Result<reqwest::RequestBuilder, String> {
        let Some(alternatives) = binding.security.as_ref().filter(|a| !a.is_empty()) else {
            return Ok(request);
        };
        let usable = alternatives
            .iter()
            .find(|alternative| alternative.keys().all(|s| self.credentials.contains_key(s)));
        let Some(alternative) = usable else {
            if self.auth.is_some() {
                return Ok(request);
            }
            let needs: Vec<String> = alternatives
                .iter()
                .map(|a| a.keys().cloned().collect::<Vec<_>>().join(" and "))
                .collect();
            return Err(format!(
                "{} {} needs credentials for {}: import it with --auth SCHEME=ENV_VAR",
                binding.method,
                binding.path,
                needs.join(", or ")
            ));
        };
        for (name, scopes) in alternative {
            let secret = read_env(&self.credentials[name])?;
            request = match self.schemes.get(name) {
                Some(Scheme::ApiKey {
                    location,
                    name: key,
                }) => match location.as_str() {
                    "query" => request.query(&[(key, &secret)]),
                    "cookie" => {
                        cookies.push(format!("{key}={secret}"));
                        request
                    }
                    _ => request.header(key.as_str(), secret),
                },
                Some(Scheme::Bearer) => request.bearer_auth(secret),
                Some(Scheme::Basic) => {
                    let (user, password) = secret.split_once(':').unwrap_or((&secret, ""));
                    request.basic_auth(user, Some(password))
                }
                Some(Scheme::ClientCredentials { token_url }) => {
                    let token = self.token(name, token_url, scopes, &secret).await?;
                    request.bearer_auth(token)
                }
                Some(Scheme::Unsupported { why }) => return Err(format!("scheme {name}: {why}")),
                None => return Err(format!("the document defines no security scheme {name}")),
            };
        }
        Ok(request)
    }

    /// An OAuth2 client-credentials token for `scheme` and `scopes`: the
    /// cached one while it is valid, else a new one from `token_url` (the
    /// client authenticating with HTTP Basic, RFC 6749 section 2.3.1).
    async fn token(
        &self,
        scheme: &str,
        token_url: &str,
        scopes: &[String],
        client: &str,
    ) -> Result<String, String> {
        let key = format!("{scheme} {}", scopes.join(" "));
        let mut tokens = self.tokens.lock().await;
        if let Some((token, until)) = tokens.get(&key) {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let url = if token_url.starts_with("http://") || token_url.starts_with("https://") {
            token_url.to_owned()
        } else {
            let scheme_end = self.base_url.find("://").map_or(0, |i| i + 3);
            let origin_end = self.base_url[scheme_end..]
                .find('/')
                .map_or(self.base_url.len(), |i| scheme_end + i);
            format!(
                "{}/{}",
                &self.base_url[..origin_end],
                token_url.trim_start_matches('/')
            )
        };
        let (id, secret) = client.split_once(':').unwrap_or((client, ""));
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .client
            .post(&url)
            .basic_auth(id, Some(secret))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot get a token from {url}: {e}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let Some(token) = answer["access_token"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            return Err(format!(
                "{url} gave no token (HTTP {status}): {}",
                answer["error"]
                    .as_str()
                    .unwrap_or("no access_token in the answer")
            ));
        };
        let lifetime = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(3600));
        let until = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        tokens.insert(key, (token.to_owned(), until));
        Ok(token.to_owned())
    }
}

fn apply_auth(
    request: reqwest::RequestBuilder,
    auth: &Auth,
) -> Result<reqwest::RequestBuilder, String> {
    let read = read_env;
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
}
