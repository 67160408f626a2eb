//! The command groups of `alkhub`, one module each; `main.rs` parses the
//! command line and hands each command to its module.

pub mod admin;
pub mod calls;
pub mod imports;
pub mod plugins;
pub mod principals;
pub mod remote;
pub mod serve;

use anyhow::Context;
use clap::ValueEnum;
use serde::Serialize;

use alkhub::config::Config;
use alkhub::store::Store;

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.database.url, config.database.max_connections)
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                alkhub::telemetry::redact_url(&config.database.url)
            )
        })
}

/// How a list command prints: a line per item, or JSON for scripts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tab-separated lines.
    #[default]
    Text,
    /// One JSON array.
    Json,
}

impl Output {
    /// Prints `items` as JSON, or each as `line` gives it.
    pub fn print<T: Serialize>(
        self,
        items: &[T],
        line: impl Fn(&T) -> String,
    ) -> anyhow::Result<()> {
        match self {
            Output::Json => println!("{}", serde_json::to_string_pretty(items)?),
            Output::Text => {
                for item in items {
                    println!("{}", line(item));
                }
            }
        }
        Ok(())
    }
}
