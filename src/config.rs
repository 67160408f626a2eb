//! The hub's configuration: one `alkhub.toml`, every key optional with a
//! documented default, command-line flags layered on top.
//!
//! This module owns parsing and defaults only; it does not open sockets or
//! databases. [`DEFAULT_CONFIG`] is the commented file that
//! `alkhub config defaults` prints, and a test keeps it equal to
//! [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the hub listens and how it shuts down.
    pub server: ServerConfig,
    /// Where definitions, registrations, spokes and clients are stored.
    pub database: DatabaseConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Limits that protect the hub from its peers.
    pub limits: LimitsConfig,
    /// The namespace remap the hub applies to declared operations.
    pub remap: RemapConfig,
    /// Where WebAssembly plugins are loaded from.
    pub plugins: PluginsConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port of the HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Milliseconds the hub waits for open calls on shutdown before aborting them.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            shutdown_grace_ms: 10_000,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Largest number of pooled database connections.
    pub max_connections: u32,
    /// Seconds a spoke-sourced definition may go without an active
    /// registration before the cleanup task deletes it.
    pub definition_grace_secs: u64,
    /// Seconds between two runs of the cleanup task.
    pub cleanup_interval_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://alkhub.db".to_owned(),
            max_connections: 8,
            definition_grace_secs: 7 * 24 * 3600,
            cleanup_interval_secs: 3600,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `alkhub=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest WebSocket frame or HTTP body accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Milliseconds a new connection has to send `hello`.
    pub hello_timeout_ms: u64,
    /// Milliseconds between WebSocket pings; two missed answers drop the peer.
    pub heartbeat_ms: u64,
    /// Calls one connection may have open at once, as caller.
    pub max_open_calls_per_connection: usize,
    /// Timeout in milliseconds for HTTP calls that do not send `timeoutMs`.
    pub default_http_timeout_ms: u64,
    /// Operations one `hello` or `register` may declare.
    pub max_operations_per_register: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1024 * 1024,
            hello_timeout_ms: 5_000,
            heartbeat_ms: 15_000,
            max_open_calls_per_connection: 1024,
            default_http_timeout_ms: 30_000,
            max_operations_per_register: 1024,
        }
    }
}

/// `[remap]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemapConfig {
    /// Namespaces whose operations belong to one spoke each: the spoke id is
    /// inserted after the first segment (`dev.fs.read` from `devbox` becomes
    /// `dev.devbox.fs.read`).
    pub per_spoke_namespaces: Vec<String>,
}

/// `[plugins]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folder holding remap and routing components (`*.wasm`).
    pub dir: PathBuf,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("plugins"),
        }
    }
}

/// The commented default configuration printed by `alkhub config defaults`.
pub const DEFAULT_CONFIG: &str = r#"# alkhub.toml: every key is optional; the values below are the defaults.

[server]
# Address and port of the HTTP and WebSocket listener.
listen = "127.0.0.1:7700"
# Milliseconds the hub waits for open calls on shutdown before aborting them.
shutdown_grace_ms = 10000

[database]
# sqlite://PATH (created if missing) or postgres://USER@HOST:PORT/DB.
url = "sqlite://alkhub.db"
# Largest number of pooled database connections.
max_connections = 8
# Seconds a spoke-sourced definition may go without an active registration
# before the cleanup task deletes it (7 days).
definition_grace_secs = 604800
# Seconds between two runs of the cleanup task.
cleanup_interval_secs = 3600

[log]
# "text" (human-readable) or "json" (one object per line).
format = "text"
# A tracing filter such as "info" or "alkhub=debug"; RUST_LOG wins when set.
level = "info"

[limits]
# Largest WebSocket frame or HTTP body accepted, in bytes.
max_frame_bytes = 1048576
# Milliseconds a new connection has to send hello.
hello_timeout_ms = 5000
# Milliseconds between WebSocket pings; two missed answers drop the peer.
heartbeat_ms = 15000
# Calls one connection may have open at once, as caller.
max_open_calls_per_connection = 1024
# Timeout in milliseconds for HTTP calls that do not send timeoutMs.
default_http_timeout_ms = 30000
# Operations one hello or register may declare.
max_operations_per_register = 1024

[remap]
# Namespaces whose operations belong to one spoke each: the spoke id is
# inserted after the first segment ("dev.fs.read" from spoke "devbox"
# becomes "dev.devbox.fs.read").
per_spoke_namespaces = []

[plugins]
# Folder holding remap and routing components (*.wasm).
dir = "plugins"
"#;

/// A configuration file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: at key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// Parses configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid("(document)".to_owned(), e.to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(key, e.into_inner().to_string().trim_end().to_owned())
        })
    }

    /// Loads `path` if given. Without a path, `alkhub.toml` in the current
    /// directory is read when it exists, and the defaults are used otherwise.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from("alkhub.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_equal_the_built_in_defaults() {
        let parsed = Config::parse(DEFAULT_CONFIG, Path::new("defaults")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = Config::parse("[limits]\nmax_frame_byte = 3\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml"), "{err}");
        assert!(err.contains("max_frame_byte"), "{err}");
    }

    #[test]
    fn wrong_type_is_named_with_the_key_path() {
        let err = Config::parse("[server]\nlisten = 7700\n", Path::new("y.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("y.toml"), "{err}");
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::parse("[database]\nurl = \"sqlite://x.db\"\n", Path::new("z")).unwrap();
        assert_eq!(c.database.url, "sqlite://x.db");
        assert_eq!(c.server, ServerConfig::default());
    }
}
