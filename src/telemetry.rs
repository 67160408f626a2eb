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
    // A log line that cannot be written is dropped. By default the
    // subscriber reports that with `eprintln!`, which panics when standard
    // error is a closed pipe (a log collector that stopped, `| head`): every
    // task that logged would die with it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Replaces every password in a URL with `***`, so a database URL can be
/// logged: the one of the user information (`postgres://user:secret@host/db`)
/// and any query parameter named `password` or ending in `password`
/// (`?password=secret`, `&sslpassword=secret`), however its name is
/// percent-encoded, since the database driver decodes it before reading it.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_query(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let tail = redact_query(&rest[authority_end..]);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// `text` with the value of every password query parameter masked.
fn redact_query(text: &str) -> String {
    let Some((before, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_password_key(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{before}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn is_password_key(key: &str) -> bool {
    percent_decode(key)
        .to_ascii_lowercase()
        .ends_with("password")
}

/// Decodes `%XX` escapes and `+`, as a URL's query string is read.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn password_query_parameters_are_masked() {
        assert_eq!(
            redact_url("postgres://app@db/alkhub?password=hunter2"),
            "postgres://app@db/alkhub?password=***"
        );
        assert_eq!(
            redact_url("postgres://db/alkhub?sslmode=require&password=hunter2&user=app"),
            "postgres://db/alkhub?sslmode=require&password=***&user=app"
        );
        assert_eq!(
            redact_url("postgres://db?PASSWORD=a&sslpassword=b"),
            "postgres://db?PASSWORD=***&sslpassword=***"
        );
        // The driver decodes the name, so an encoded name is a password too.
        assert_eq!(
            redact_url("postgres://db/x?pass%77ord=hunter2"),
            "postgres://db/x?pass%77ord=***"
        );
        assert_eq!(
            redact_url("postgres://app:one@db/x?password=two#frag"),
            "postgres://app:***@db/x?password=***#frag"
        );
        assert_eq!(
            redact_url("sqlite://alkhub.db?mode=rwc"),
            "sqlite://alkhub.db?mode=rwc"
        );
    }

    #[test]
    fn the_password_never_survives_redaction() {
        for url in [
            "postgres://u:hunter2@h/d?password=hunter2",
            "postgres://h?password=hunter2&password=hunter2",
            "postgres://h/d?a=1&%50assword=hunter2",
            "postgres://u:hunter2@h?x",
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains("hunter2"), "{url} -> {redacted}");
        }
    }
}
