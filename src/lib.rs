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
//! - [`server`] wires the store to the HTTP listener ([`http`]) and runs the
//!   background tasks.

pub mod config;
pub mod crypto;
pub mod http;
pub mod names;
pub mod protocol;
pub mod server;
pub mod store;
pub mod telemetry;
