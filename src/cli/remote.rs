//! The admin API from the command line: `alkhub spoke … --hub URL` and
//! `alkhub client … --hub URL` do through a running hub's `/v1/admin` what
//! they otherwise do in the database, so an operator needs no database
//! access, and every change is audited.

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A running hub's admin API, reached with an admin token.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the hub at `base` (`http://localhost:7700`).
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(anyhow!(
                "--hub must be the hub's http:// base URL, e.g. http://localhost:7700 (got {base:?})"
            ));
        }
        Ok(AdminClient {
            base,
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()?,
        })
    }

    /// Sends `method` to `path` with an optional JSON body; the JSON answer
    /// (`null` for an empty one), or the hub's error as the message.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let answer: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = answer["message"].as_str().unwrap_or("no message");
            let code = answer["code"].as_str().unwrap_or("");
            return Err(anyhow!("{method} {path}: {status} {code}: {message}"));
        }
        Ok(answer)
    }

    /// [`AdminClient::send`] with the answer read as `T` (`()` for none).
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let answer = self.send(method, path, body).await?;
        serde_json::from_value(answer)
            .with_context(|| format!("{method} {path}: the hub's answer has an unexpected shape"))
    }
}
