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
