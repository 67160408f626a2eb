//! alkhub: a hub for operations.
//!
//! Spokes connect over WebSocket and offer operations; clients call them
//! through the hub by id. How the parts fit:
//!
//! - [`config`] reads `alkhub.toml`; [`telemetry`] sets up logging.
//! - [`crypto`] makes and checks tokens; [`names`] says which ids are valid.
//! - [`protocol`] is the wire format and nothing else.
//! - [`store`] keeps spokes, clients, definitions and registrations on SQLite
//!   or PostgreSQL; it is written on lifecycle events, never per call.
//! - [`catalog`] is the in-memory index the call path reads.
//! - [`session`] drives one WebSocket peer; [`connection`] is that peer as the
//!   rest of the hub sees it; [`sessions`] attaches, supersedes and ends
//!   every session; [`auth`] says who a token belongs to and revokes.
//! - [`limits`] counts what peers hold open against its caps.
//! - [`registration`] turns declared operations into definitions and
//!   registrations, through the remap of [`policy`].
//! - [`dispatch`] is a call's life: lookup, access, validation, routing
//!   (through [`policy`]), forwarding, correlation, timeouts.
//! - [`builtins`] are the `hub.*` operations the hub serves itself.
//! - [`http`] is the axum router; [`admin`] the operator's API and
//!   [`dashboard`] the page over it; [`server`] starts and stops it all.
//! - [`openapi`] is the OpenAPI document of every HTTP route, generated
//!   from the handlers' annotations.

pub mod admin;
pub mod auth;
pub mod builtins;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod crypto;
pub mod dashboard;
pub mod dispatch;
pub mod http;
pub mod imports;
pub mod limits;
pub mod mcp_server;
pub mod metrics;
pub mod names;
pub mod openapi;
pub mod peer;
pub mod plugins;
pub mod policy;
pub mod presence;
pub mod protocol;
pub mod registration;
pub mod scaffold;
pub mod server;
pub mod session;
pub mod sessions;
pub mod store;
pub mod telemetry;
