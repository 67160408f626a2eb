//! Host bindings generated from `wit/` for the two plugin worlds, and the
//! `host` interface every plugin may import.
//!
//! Each world gets its own module: the shared interfaces are generated twice,
//! which costs a few lines of conversion and keeps each world's types whole.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The routing world.
pub mod routing {
    wasmtime::component::bindgen!({
        world: "routing-plugin",
        path: "wit",
        // Arguments borrow the hub's strings instead of copying them for
        // every decision.
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// The remap world.
pub mod remap {
    wasmtime::component::bindgen!({
        world: "remap-plugin",
        path: "wit",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// What one plugin instance's store holds.
pub struct PluginState {
    /// The plugin's name, for log lines.
    pub name: Arc<str>,
    /// Its settings as JSON, for the `config` import.
    pub settings: Arc<str>,
    /// Its memory limit.
    pub limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl PluginState {
    /// A state granting nothing: WASI is linked for guests whose toolchains
    /// import it, but there are no preopened directories, no environment,
    /// no arguments, no network and no standard input.
    pub fn new(name: Arc<str>, settings: Arc<str>, limits: StoreLimits) -> Self {
        PluginState {
            name,
            settings,
            limits,
            wasi: WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
        }
    }

    fn log(&self, level: tracing::Level, message: &str) {
        let plugin = &*self.name;
        match level {
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

macro_rules! impl_host {
    ($world:ident) => {
        impl $world::alkdev::hub::host::Host for PluginState {
            fn log(&mut self, level: $world::alkdev::hub::host::Level, message: String) {
                use $world::alkdev::hub::host::Level as L;
                let level = match level {
                    L::Trace => tracing::Level::TRACE,
                    L::Debug => tracing::Level::DEBUG,
                    L::Info => tracing::Level::INFO,
                    L::Warn => tracing::Level::WARN,
                    L::Error => tracing::Level::ERROR,
                };
                PluginState::log(self, level, &message);
            }

            fn config(&mut self) -> String {
                self.settings.to_string()
            }

            fn now_ms(&mut self) -> u64 {
                crate::connection::now_ms()
            }
        }
        impl $world::alkdev::hub::types::Host for PluginState {}
    };
}

impl_host!(routing);
impl_host!(remap);
