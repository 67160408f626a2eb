//! `alkhub serve`, `alkhub migrate`, `alkhub config`: running the hub.

use std::time::Duration;

use clap::Subcommand;

use alkhub::config::Config;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the complete default configuration, with comments.
    Defaults,
    /// Print the effective configuration (file and flags applied).
    Show,
}

/// Makes the allocators give freed memory back to the system at once.
///
/// mimalloc (Rust's allocations) by default keeps freed pages for a while
/// and commits its arenas eagerly: under the fuzzer (hostile peers sending
/// frames of every size) the hub's RSS reached 330 MiB in a minute against
/// 100 MiB with glibc. Purging at once, decommitting, and committing arenas
/// on demand brings it to ~170 MiB, and the idle 10,000-spoke hub to within
/// 20% of glibc's figure (212 MiB against 228-255 MiB in the scale bench).
///
/// glibc (SQLite's allocations): by default it raises its mmap threshold
/// each time a large buffer is freed, after which buffers of up to a
/// megabyte come from heaps it keeps; fixed at 64 KiB, they go back.
pub fn tune_allocator() {
    // The option numbers of mimalloc 3's `mi_option_e` (mimalloc.h); the
    // crate exports names for only some of them. Check them against that
    // header when libmimalloc-sys is updated.
    const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    const PURGE_DECOMMITS: std::ffi::c_int = 5;
    const PURGE_DELAY: std::ffi::c_int = 15;
    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: mi_option_set and mallopt only change allocator settings;
    // both are called before the hub starts a thread or allocates much.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DECOMMITS, 1);
        mi_option_set(PURGE_DELAY, 0);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

pub async fn serve(
    config: Config,
    reload: impl Fn() -> anyhow::Result<Config>,
) -> anyhow::Result<()> {
    let server = config.server.clone();
    // SIGHUP reads the configuration again and applies what can change
    // without a restart (the `[plugins]` section). It is caught from the
    // start: one that arrives while the hub starts is applied once it runs.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = alkhub::server::start(config).await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            signalled = &mut shutdown => {
                signalled?;
                break;
            }
            _ = hangup.recv() => match reload() {
                Ok(config) => {
                    running.reload(&config);
                }
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "SIGHUP: the configuration is not valid; keeping the one in force"
                ),
            },
        }
    }
    tracing::info!("shutting down");
    // Shutdown keeps its own hard deadline; this one is the last resort, for
    // anything (a blocked database call) that keeps even that from returning.
    let hard = Duration::from_millis(server.shutdown_grace_ms + server.shutdown_hard_ms)
        + Duration::from_secs(2);
    match tokio::time::timeout(hard, running.shutdown()).await {
        Ok(done) => done,
        Err(_) => {
            tracing::error!("shutdown passed its hard deadline; exiting");
            std::process::exit(1);
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
