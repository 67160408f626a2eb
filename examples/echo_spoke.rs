//! A spoke that serves `demo.echo` (a query returning its input) and
//! `demo.ticks` (a subscription counting to `input.count`, one tick every
//! `input.everyMs` milliseconds).
//!
//! ```sh
//! ALKHUB_TOKEN=alk_spoke_... cargo run --example echo_spoke
//! ```
//! `ALKHUB_URL` overrides the default `ws://127.0.0.1:7700/v1/spokes/connect`.

use std::time::Duration;

use alkhub::peer::{spec, Backoff, PeerBuilder};
use alkhub::protocol::OperationType;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("ALKHUB_URL")
        .unwrap_or_else(|_| "ws://127.0.0.1:7700/v1/spokes/connect".to_owned());
    let token = std::env::var("ALKHUB_TOKEN")
        .map_err(|_| anyhow::anyhow!("set ALKHUB_TOKEN to a spoke token"))?;

    let mut echo = spec("demo", "echo", OperationType::Query);
    echo.description = Some("Returns its input.".to_owned());
    let mut ticks = spec("demo", "ticks", OperationType::Subscription);
    ticks.description = Some("Counts to input.count, one tick every input.everyMs ms.".to_owned());
    ticks.input_schema = Some(json!({
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": 1000},
            "everyMs": {"type": "integer", "minimum": 1}
        }
    }));

    // Connected until stopped: after a hub restart or a network failure it
    // connects again (with backoff) and declares its operations again.
    let spoke = PeerBuilder::new(&url, token)
        .name("echo example")
        .operation(echo, |req| async move { Ok(req.input) })
        .subscription(ticks, |req, emitter| async move {
            let count = req.input["count"].as_u64().unwrap_or(5);
            let every = Duration::from_millis(req.input["everyMs"].as_u64().unwrap_or(200));
            for i in 1..=count {
                emitter.emit(json!({"tick": i}));
                tokio::time::sleep(every).await;
            }
            Ok(())
        })
        .keep_connected(Backoff::default());
    let welcome = spoke.connected().await?.welcome();
    for r in &welcome.registrations {
        println!(
            "serving {} (declared as {})",
            r.operation_id, r.pre_remap_id
        );
    }
    for r in &welcome.rejected {
        println!("rejected {}: {} {}", r.operation_id, r.code, r.message);
    }
    tokio::select! {
        why = spoke.ended() => println!("stopped: {why}"),
        _ = tokio::signal::ctrl_c() => spoke.stop(),
    }
    Ok(())
}
