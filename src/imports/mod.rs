//! Imports: operation definitions that come from an OpenAPI document (and,
//! later, an MCP server) instead of a connected spoke. Decision D3: an import
//! creates definitions with no registration until a provider for them
//! connects.
//!
//! `alkhub import openapi` reads the document, maps it ([`openapi`]) and
//! saves the import and its definitions in one transaction. The import
//! record keeps what is needed to serve the operations later without the
//! document: the base URL, the authentication (as environment variable
//! names, never values) and one HTTP binding per operation.

pub mod http_provider;
pub mod live;
pub mod mcp;
pub mod openapi;
pub mod provider;
pub mod serialize;
pub mod tls;

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::store::{ImportChanges, ImportKind, Store};

/// An error with its causes, `: `-separated (a TLS failure says why the
/// certificate was refused).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
}

/// How the hub authenticates to an imported API. Values are read from the
/// environment of the hub when it calls, so no secret is ever stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "lowercase")]
pub enum Auth {
    /// `Authorization: Bearer $ENV`.
    Bearer {
        /// The variable holding the token.
        env: String,
    },
    /// `NAME: $ENV`.
    Header {
        /// The header's name.
        name: String,
        /// The variable holding its value.
        env: String,
    },
    /// `Authorization: Basic base64($ENV)`, where the variable holds `user:password`.
    Basic {
        /// The variable holding `user:password`.
        env: String,
    },
}

/// Whether `name` can name an environment variable here: letters, digits
/// and `_`, not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl std::str::FromStr for Auth {
    type Err = String;

    /// `bearer:ENV_VAR`, `header:NAME:ENV_VAR` or `basic:ENV_VAR`.
    fn from_str(text: &str) -> Result<Self, String> {
        let env_name = |v: &str| -> Result<String, String> {
            if is_env_name(v) {
                Ok(v.to_owned())
            } else {
                Err(format!(
                    "invalid environment variable name {v:?} in --auth {text:?}: letters, digits and '_'"
                ))
            }
        };
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["bearer", env] => Ok(Auth::Bearer {
                env: env_name(env)?,
            }),
            ["basic", env] => Ok(Auth::Basic {
                env: env_name(env)?,
            }),
            ["header", name, env] if !name.is_empty() => Ok(Auth::Header {
                name: (*name).to_owned(),
                env: env_name(env)?,
            }),
            _ => Err(format!(
                "invalid --auth {text:?}: use bearer:ENV_VAR, header:NAME:ENV_VAR or basic:ENV_VAR \
                 (the variable holds the secret, the hub reads it when it calls)"
            )),
        }
    }
}

impl std::fmt::Display for Auth {
    /// The form [`Auth::from_str`](std::str::FromStr) reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer { env } => write!(f, "bearer:{env}"),
            Auth::Basic { env } => write!(f, "basic:{env}"),
            Auth::Header { name, env } => write!(f, "header:{name}:{env}"),
        }
    }
}

/// One `--auth`: a credential for every request of the import, or for one
/// security scheme of the document (`SCHEME=ENV_VAR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSpec {
    /// `bearer:ENV`, `header:NAME:ENV` or `basic:ENV`: every request.
    Import(Auth),
    /// `SCHEME=ENV`: the requests of operations that need scheme `SCHEME`
    /// (a key of the document's `components.securitySchemes`).
    Scheme {
        /// The scheme's name in the document.
        scheme: String,
        /// The variable holding its credential.
        env: String,
    },
}

impl std::str::FromStr for AuthSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            Some((scheme, env)) if !scheme.is_empty() && !scheme.contains(':') => {
                // The same variable-name rule as the import-wide forms.
                let Auth::Bearer { env } = format!("bearer:{env}")
                    .parse::<Auth>()
                    .map_err(|e| e.replace("bearer:", &format!("{scheme}=")))?
                else {
                    unreachable!("bearer: parses as Bearer")
                };
                Ok(AuthSpec::Scheme {
                    scheme: scheme.to_owned(),
                    env,
                })
            }
            _ => text.parse::<Auth>().map(AuthSpec::Import).map_err(|e| {
                format!("{e}, or SCHEME=ENV_VAR for a security scheme of the document")
            }),
        }
    }
}

impl std::fmt::Display for AuthSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthSpec::Import(auth) => auth.fmt(f),
            AuthSpec::Scheme { scheme, env } => write!(f, "{scheme}={env}"),
        }
    }
}

/// What an OpenAPI import stores besides its definitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenapiConfig {
    /// The file or URL the document was read from.
    pub source: String,
    /// Where requests go; `None` for a definition-only import.
    pub base_url: Option<String>,
    /// How every request authenticates.
    pub auth: Option<Auth>,
    /// Per security scheme of the document, the variable holding its
    /// credential.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    /// The document's security schemes.
    #[serde(default)]
    pub schemes: BTreeMap<String, openapi::Scheme>,
    /// CA certificates (PEM text; public, not secret) trusted besides the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// One binding per operation name.
    pub bindings: BTreeMap<String, openapi::HttpBinding>,
}

/// The outcome of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The import's name.
    pub name: String,
    /// The base URL requests go to, if any.
    pub base_url: Option<String>,
    /// Where the base URL came from, or why there is none.
    pub base_url_from: &'static str,
    /// What changed.
    pub changes: ImportChanges,
    /// Operations of the document left out (`METHOD /path`, and why).
    pub skipped: Vec<(String, String)>,
    /// Operations imported with something left out (their id, and what).
    pub notes: Vec<(String, String)>,
}

/// The source recorded for a document sent as text: it cannot be read again.
pub const INLINE_SOURCE: &str = "(sent inline)";

/// What reading an import's source again saved.
pub enum Refreshed {
    /// An OpenAPI document's operations.
    Openapi(Imported),
    /// An MCP server's tools.
    Mcp(ImportChanges),
}

/// Reads the source of `import` again (its OpenAPI document's file or URL,
/// or its MCP server) and saves what it defines now, with the base URL and
/// authentication it was imported with.
pub async fn refresh(store: &Store, import: crate::store::Import) -> anyhow::Result<Refreshed> {
    let name = import.name;
    match import.kind {
        ImportKind::Openapi => {
            let config: OpenapiConfig =
                serde_json::from_value(import.config).with_context(|| {
                    format!("import {name:?} has a configuration this hub cannot read")
                })?;
            if config.source == INLINE_SOURCE {
                bail!(
                    "import {name:?} was sent as text, so its document cannot be read again: \
                     import it again"
                );
            }
            let text = read_source_trusting(&config.source, config.ca_cert.as_deref()).await?;
            // The base URL stays what it was, none included.
            let base_url = config
                .base_url
                .as_deref()
                .map_or(BaseUrl::None, BaseUrl::Given);
            let mut auth: Vec<AuthSpec> = config.auth.into_iter().map(AuthSpec::Import).collect();
            auth.extend(
                config
                    .credentials
                    .into_iter()
                    .map(|(scheme, env)| AuthSpec::Scheme { scheme, env }),
            );
            let options = Options {
                base_url,
                auth,
                strict: false,
                ca_cert: config.ca_cert,
            };
            let imported =
                import_openapi_text(store, &config.source, &text, &name, options).await?;
            Ok(Refreshed::Openapi(imported))
        }
        ImportKind::Mcp => {
            let config: mcp::McpConfig =
                serde_json::from_value(import.config).with_context(|| {
                    format!("import {name:?} has a configuration this hub cannot read")
                })?;
            Ok(Refreshed::Mcp(mcp::import_mcp(store, &name, config).await?))
        }
    }
}

/// Reads `source` (a file path or an http(s) URL).
pub async fn read_source(source: &str) -> anyhow::Result<String> {
    read_source_trusting(source, None).await
}

/// [`read_source`], an https URL's server also trusted when its chain ends
/// at a certificate of `ca_cert` (PEM text).
pub async fn read_source_trusting(source: &str, ca_cert: Option<&str>) -> anyhow::Result<String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let client = tls::client(ca_cert)?
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        let response = client
            .get(source)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot fetch {source}: {}", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            bail!("cannot fetch {source}: HTTP {status}");
        }
        return response
            .text()
            .await
            .with_context(|| format!("cannot read the body of {source}"));
    }
    tokio::fs::read_to_string(source)
        .await
        .with_context(|| format!("cannot read {source}"))
}

/// Imports the OpenAPI document at `source` under `namespace` (which also
/// names the import). The base URL is `base_url`, else the document's first
/// server when it is absolute (or relative to an http `source`), else none.
pub async fn import_openapi(
    store: &Store,
    source: &str,
    namespace: &str,
    base_url: Option<&str>,
    auth: Option<Auth>,
) -> anyhow::Result<Imported> {
    let auth: Vec<AuthSpec> = auth.into_iter().map(AuthSpec::Import).collect();
    import_openapi_checked(store, source, namespace, base_url, auth, false).await
}

/// [`import_openapi`]; when `strict`, an operation that cannot be mapped
/// fails the whole import (nothing is saved) instead of being skipped.
pub async fn import_openapi_checked(
    store: &Store,
    source: &str,
    namespace: &str,
    base_url: Option<&str>,
    auth: Vec<AuthSpec>,
    strict: bool,
) -> anyhow::Result<Imported> {
    let text = read_source(source).await?;
    let options = Options {
        base_url: base_url.map_or(BaseUrl::FromDocument, BaseUrl::Given),
        auth,
        strict,
        ca_cert: None,
    };
    import_openapi_text(store, source, &text, namespace, options).await
}

/// How an OpenAPI document is imported, besides where it is read from.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// Where its requests go.
    pub base_url: BaseUrl<'a>,
    /// `--auth`, each.
    pub auth: Vec<AuthSpec>,
    /// Fail, saving nothing, when an operation cannot be mapped.
    pub strict: bool,
    /// CA certificates (PEM text) trusted besides the system's roots
    /// (`--ca-cert`), for its HTTPS requests.
    pub ca_cert: Option<String>,
}

/// Where an OpenAPI import's requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseUrl<'a> {
    /// This URL (`--base-url`).
    Given(&'a str),
    /// The document's first server, when it is absolute or relative to an
    /// http source.
    FromDocument,
    /// Nowhere: the operations are definitions only (`--no-base-url`).
    None,
}

/// [`import_openapi_checked`] of a document already read: `source` names
/// where it came from (a relative server URL resolves against it when it
/// is an http URL).
pub async fn import_openapi_text(
    store: &Store,
    source: &str,
    text: &str,
    namespace: &str,
    options: Options<'_>,
) -> anyhow::Result<Imported> {
    let Options {
        base_url,
        auth,
        strict,
        ca_cert,
    } = options;
    let doc = openapi::parse(text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("cannot parse {source}"))?;
    let mapped = openapi::import(&doc, namespace)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("cannot import {source}"))?;
    if strict && !mapped.skipped.is_empty() {
        let reasons: Vec<String> = mapped
            .skipped
            .iter()
            .map(|(op, why)| format!("{op}: {why}"))
            .collect();
        bail!(
            "cannot import {source}: {} operation(s) cannot be mapped (--strict):\n{}",
            reasons.len(),
            reasons.join("\n")
        );
    }
    let (base_url, base_url_from) = match base_url {
        BaseUrl::Given(url) => (Some(check_base_url(url)?), "--base-url"),
        BaseUrl::None => (None, "--no-base-url"),
        BaseUrl::FromDocument => match mapped.server_url.as_deref() {
            Some(server) => match resolve_server(source, server) {
                Some(url) if server.starts_with('/') => {
                    (Some(url), "the document's servers[0], relative to its URL")
                }
                Some(url) => (Some(url), "the document's servers[0]"),
                None => (None, "the document's servers[0] is relative, and the document was not fetched by URL"),
            },
            None => (None, "the document names no server"),
        },
    };
    let mut import_auth = None;
    let mut credentials = BTreeMap::new();
    for spec in auth {
        match spec {
            AuthSpec::Import(auth) if import_auth.is_none() => import_auth = Some(auth),
            AuthSpec::Import(_) => bail!(
                "only one --auth of the form bearer:, header: or basic: applies to every request; \
                 give the others per security scheme (SCHEME=ENV_VAR)"
            ),
            AuthSpec::Scheme { scheme, env } => {
                match mapped.schemes.get(&scheme) {
                    None => {
                        let known: Vec<&str> = mapped.schemes.keys().map(String::as_str).collect();
                        bail!(
                            "--auth {scheme}={env}: the document has no security scheme {scheme:?} \
                             (it has: {})",
                            if known.is_empty() { "none".into() } else { known.join(", ") }
                        );
                    }
                    Some(openapi::Scheme::Unsupported { why }) => {
                        bail!("--auth {scheme}={env}: {why}")
                    }
                    Some(_) => {}
                }
                credentials.insert(scheme, env);
            }
        }
    }
    let config = OpenapiConfig {
        source: source.to_owned(),
        ca_cert,
        base_url: base_url.clone(),
        auth: import_auth,
        credentials,
        schemes: mapped.schemes.clone(),
        bindings: mapped
            .operations
            .iter()
            .map(|o| (o.definition.name.clone(), o.binding.clone()))
            .collect(),
    };
    let notes: Vec<(String, String)> = mapped
        .operations
        .iter()
        .filter_map(|o| Some((o.definition.id(), o.note.clone()?)))
        .collect();
    let definitions: Vec<_> = mapped
        .operations
        .into_iter()
        .map(|o| o.definition)
        .collect();
    let changes = store
        .save_import(
            namespace,
            ImportKind::Openapi,
            namespace,
            &serde_json::to_value(&config)?,
            &definitions,
        )
        .await?;
    Ok(Imported {
        name: namespace.to_owned(),
        base_url,
        base_url_from,
        changes,
        skipped: mapped.skipped,
        notes,
    })
}

fn check_base_url(url: &str) -> anyhow::Result<String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("invalid --base-url {url:?}: use an http:// or https:// URL");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The document's server URL made absolute: as is when it is, joined to
/// the origin of an http `source` when it starts with `/`, else none.
fn resolve_server(source: &str, server: &str) -> Option<String> {
    if server.starts_with("http://") || server.starts_with("https://") {
        return Some(server.trim_end_matches('/').to_owned());
    }
    if !server.starts_with('/') {
        return None;
    }
    let scheme_end = source.find("://")? + 3;
    let origin_end = source[scheme_end..]
        .find('/')
        .map_or(source.len(), |i| scheme_end + i);
    Some(format!(
        "{}{}",
        &source[..origin_end],
        server.trim_end_matches('/')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_specs_parse_or_say_what_is_wrong() {
        assert_eq!(
            "bearer:API_TOKEN".parse::<Auth>(),
            Ok(Auth::Bearer {
                env: "API_TOKEN".into()
            })
        );
        assert_eq!(
            "header:X-Api-Key:KEY".parse::<Auth>(),
            Ok(Auth::Header {
                name: "X-Api-Key".into(),
                env: "KEY".into()
            })
        );
        assert!("basic:CREDS".parse::<Auth>().is_ok());
        for spec in ["bearer:T", "basic:C", "header:X-Key:K"] {
            assert_eq!(spec.parse::<Auth>().unwrap().to_string(), spec);
        }
        assert_eq!(
            "api_key=KEY".parse::<AuthSpec>(),
            Ok(AuthSpec::Scheme {
                scheme: "api_key".into(),
                env: "KEY".into()
            })
        );
        assert_eq!(
            "oauth=C".parse::<AuthSpec>().unwrap().to_string(),
            "oauth=C"
        );
        let err = "oauth=not-a-var".parse::<AuthSpec>().unwrap_err();
        assert!(err.contains("oauth=not-a-var"), "{err}");
        let err = "nonsense".parse::<AuthSpec>().unwrap_err();
        assert!(err.contains("SCHEME=ENV_VAR"), "{err}");
        let err = "bearer:abc-def".parse::<Auth>().unwrap_err();
        assert!(err.contains("invalid environment variable name"), "{err}");
        let err = "token:X".parse::<Auth>().unwrap_err();
        assert!(err.contains("bearer:ENV_VAR"), "{err}");
    }

    #[test]
    fn relative_servers_resolve_against_the_documents_origin() {
        assert_eq!(
            resolve_server("http://localhost:8000/openapi.json", "/api/"),
            Some("http://localhost:8000/api".into())
        );
        assert_eq!(
            resolve_server("spec.yaml", "http://localhost:9000/v1"),
            Some("http://localhost:9000/v1".into())
        );
        assert_eq!(resolve_server("spec.yaml", "/api"), None);
        assert_eq!(resolve_server("spec.yaml", "{scheme}://x"), None);
    }
}
