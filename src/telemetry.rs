//! Logging setup with `tracing`: human-readable lines by default, one JSON
//! object per line on request. The level comes from `RUST_LOG` when it is set
//! and from the configuration otherwise.
//!
//! Secrets never reach this module: tokens are wrapped in
//! [`crate::crypto::Token`], whose `Debug` and `Display` print a redacted form,
//! and database URLs are logged through [`redact_url`].

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Calling it twice is harmless (the second
/// call does nothing), which keeps tests that start several hubs simple.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Replaces the password of a URL such as `postgres://user:secret@host/db`
/// with `***`, so a database URL can be logged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_masked_and_other_urls_kept() {
        assert_eq!(
            redact_url("postgres://app:hunter2@localhost:5432/db"),
            "postgres://app:***@localhost:5432/db"
        );
        assert_eq!(
            redact_url("postgres://app@localhost/db"),
            "postgres://app@localhost/db"
        );
        assert_eq!(redact_url("sqlite://alkhub.db"), "sqlite://alkhub.db");
    }
}
