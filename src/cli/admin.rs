//! `alkhub admin`: a running hub's admin API, answers printed as JSON.

use clap::Subcommand;

use super::principals::RemoteArgs;
use super::remote;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// The live sessions.
    Sessions,
    /// Close a live session (code 1008); its peer may reconnect.
    CloseSession {
        /// The session id, as `sessions` shows it.
        session_id: u64,
    },
    /// Every operation, or one with its providers and registrations.
    Operations {
        /// One operation id.
        operation_id: Option<String>,
    },
    /// The plugins and their health.
    Plugins,
    /// Load every changed file of the plugins folder now.
    ReloadPlugins,
    /// End a plugin's quarantine now.
    LiftQuarantine {
        /// The plugin's name.
        name: String,
    },
    /// The configuration the hub runs with, secrets masked.
    Config,
    /// The audit log, newest first.
    Audit {
        /// Entries to show (1 to the hub's limits.max_list_page).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `alkhub admin …`: one request to the admin API, its answer printed.
pub async fn admin(command: AdminCommand, remote: RemoteArgs) -> anyhow::Result<()> {
    let (Some(hub), Some(token)) = (&remote.hub, &remote.token) else {
        anyhow::bail!("alkhub admin needs --hub URL and an admin token (--token or ALKHUB_TOKEN)");
    };
    let client = remote::AdminClient::new(hub, token)?;
    let (method, path) = match command {
        AdminCommand::Sessions => ("GET", "/v1/admin/sessions".to_owned()),
        AdminCommand::CloseSession { session_id } => {
            ("DELETE", format!("/v1/admin/sessions/{session_id}"))
        }
        AdminCommand::Operations { operation_id: None } => {
            ("GET", "/v1/admin/operations".to_owned())
        }
        AdminCommand::Operations {
            operation_id: Some(id),
        } => ("GET", format!("/v1/admin/operations/{id}")),
        AdminCommand::Plugins => ("GET", "/v1/admin/plugins".to_owned()),
        AdminCommand::ReloadPlugins => ("POST", "/v1/admin/plugins/reload".to_owned()),
        AdminCommand::LiftQuarantine { name } => {
            ("POST", format!("/v1/admin/plugins/{name}/lift-quarantine"))
        }
        AdminCommand::Config => ("GET", "/v1/admin/config".to_owned()),
        AdminCommand::Audit { limit } => ("GET", format!("/v1/admin/audit?limit={limit}")),
    };
    let answer = client.send(method, &path, None).await?;
    if answer.is_null() {
        println!("done");
    } else {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
}
