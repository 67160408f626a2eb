//! An in-process provider: the hub serving operations itself (an imported
//! HTTP API, an MCP server's tools) through the same seam as a spoke.
//!
//! [`serve`] creates a [`Connection`] of kind `client` whose outbound queue a
//! task reads instead of a WebSocket writer: `call.requested` frames become
//! calls of a [`Handler`], `call.aborted` frames abort them, and answers go
//! back through [`crate::dispatch::Dispatcher::provider_event`]. Routing,
//! deadlines, aborts and shutdown therefore treat it exactly as a spoke.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::AbortHandle;

use crate::catalog::{Provider, Publish};
use crate::connection::{Connection, Outbound};
use crate::protocol::{self, close, Identity, PrincipalKind};
use crate::registration::SessionRegistrations;
use crate::server::Hub;
use crate::sessions::Origin;
use crate::store::NewRegistration;

/// One call for the handler.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// The hub's request id.
    pub request_id: String,
    /// The operation id.
    #[serde(default)]
    pub operation_id: String,
    /// The input, validated against the definition's schema.
    #[serde(default)]
    pub input: Value,
    /// The caller's deadline, ms since the Unix epoch.
    #[serde(default)]
    pub deadline: Option<u64>,
}

/// One answer to a call.
pub enum Answer {
    /// An envelope `{"data", "meta"}`; a subscription may send several.
    Output(Value),
    /// A subscription ended.
    Completed,
    /// The call failed: code, message, details.
    Error(&'static str, String, Option<Value>),
}

/// Sends the answers of one call.
#[derive(Clone)]
pub struct Responder {
    hub: Hub,
    connection: Arc<Connection>,
    request_id: String,
}

impl Responder {
    /// Sends one answer; answers after the call ended are dropped by the hub.
    pub fn send(&self, answer: Answer) {
        let id = &self.request_id;
        let (kind, payload) = match answer {
            Answer::Output(output) => (
                "call.responded",
                json!({ "requestId": id, "output": output }),
            ),
            Answer::Completed => ("call.completed", json!({ "requestId": id })),
            Answer::Error(code, message, details) => {
                let mut p = json!({ "requestId": id, "code": code, "message": message });
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
}

/// What serves the calls: called once per call, in its own task.
pub type Handler =
    Arc<dyn Fn(Call, Responder) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A running in-process provider.
pub struct Serving {
    connection: Arc<Connection>,
    done: tokio::sync::watch::Receiver<bool>,
}

impl Serving {
    /// Stops serving: open calls end with `PROVIDER_GONE`, the providers
    /// leave the catalog and the registrations become inactive.
    pub async fn stop(mut self) {
        self.connection
            .close(close::GOING_AWAY, "the imported source went away");
        let _ = self.done.wait_for(|d| *d).await;
    }
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    payload: Call,
}

/// Registers `provider_id` as the provider of `operations` (those present in
/// the catalog) and serves their calls with `handler` until stopped or the
/// hub shuts down.
pub async fn serve(
    hub: &Hub,
    provider_id: &str,
    operations: &[String],
    metadata: Value,
    handler: Handler,
) -> anyhow::Result<Serving> {
    let identity = Identity {
        kind: PrincipalKind::Client,
        id: provider_id.to_owned(),
        scopes: Vec::new(),
    };
    let sessions = hub.sessions();
    let (connection, mut rx) = Connection::new(
        sessions.next_session_id(),
        identity,
        BTreeMap::new(),
        hub.config().limits.max_outbound_bytes,
        None,
    );
    sessions.attach(&connection, Origin::Internal)?;
    let mut served = SessionRegistrations::new();
    let mut batch = Vec::with_capacity(operations.len());
    // At start-up the stored definitions may still be loading.
    hub.dispatcher().catalog().wait_loaded().await;
    for operation_id in operations {
        let Some((namespace, name)) = crate::names::split_operation_id(operation_id) else {
            continue;
        };
        if hub.dispatcher().catalog().get(operation_id).is_none() {
            continue;
        }
        let registration = hub
            .store()
            .activate_registration(&NewRegistration {
                operation_id: operation_id.clone(),
                provider_type: PrincipalKind::Client,
                provider_id: provider_id.to_owned(),
                pre_remap_namespace: namespace.to_owned(),
                pre_remap_name: name.to_owned(),
                metadata: metadata.clone(),
                session_id: Some(hub.registrar().session_key(&connection)),
            })
            .await?;
        let registration_id: Arc<str> = registration.id.into();
        batch.push(Publish {
            operation_id: operation_id.clone(),
            definition: None,
            provider: Provider::new(
                registration_id.clone(),
                operation_id.as_str().into(),
                connection.clone(),
            ),
        });
        served.insert(
            operation_id.clone(),
            (operation_id.clone(), registration_id),
        );
    }
    // One batch: in a cluster it is announced to the other nodes, which
    // reach this import through this node.
    hub.dispatcher().catalog().publish(batch);

    let (done_tx, done) = tokio::sync::watch::channel(false);
    let hub = hub.clone();
    let conn = connection.clone();
    tokio::spawn(async move {
        let open: Arc<Mutex<HashMap<String, AbortHandle>>> = Arc::default();
        while let Some(out) = rx.recv().await {
            let frame = match out {
                Outbound::Text(frame) => frame,
                Outbound::Close(..) => break,
            };
            let Ok(frame) = serde_json::from_str::<Frame>(&frame) else {
                continue;
            };
            let id = frame.payload.request_id.clone();
            match frame.kind.as_str() {
                "call.requested" => {
                    let responder = Responder {
                        hub: hub.clone(),
                        connection: conn.clone(),
                        request_id: id.clone(),
                    };
                    let run = handler(frame.payload, responder);
                    let open_in_task = open.clone();
                    let key = id.clone();
                    // Inserted before the task can remove itself.
                    let mut guard = open.lock().unwrap();
                    let task = tokio::spawn(async move {
                        run.await;
                        open_in_task.lock().unwrap().remove(&key);
                    });
                    guard.insert(id, task.abort_handle());
                }
                "call.aborted" => {
                    if let Some(task) = open.lock().unwrap().remove(&id) {
                        task.abort();
                    }
                }
                _ => {}
            }
        }
        for (_, task) in open.lock().unwrap().drain() {
            task.abort();
        }
        hub.sessions().end(&conn, &served).await;
        let _ = done_tx.send(true);
    });
    Ok(Serving { connection, done })
}
