//! The TypeScript and Python SDKs (`sdk/`) against this build of the hub:
//! each SDK's own suite (the conformance scenarios of `sdk/conformance.md`,
//! against `alkhub serve` processes it starts from `ALKHUB_BIN`), its
//! package build, and a spoke written with one SDK serving a client written
//! with the other, both ways. `scripts/test` installs the SDKs' development
//! dependencies (`npm ci`, `sdk/python/.venv`) before the tests run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use alkhub::protocol::PrincipalKind;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The suites start hubs and time deadlines: one at a time, so that two
/// suites never compete for the machine's cores.
static ONE_SUITE: Mutex<()> = Mutex::new(());

fn sdk(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk").join(dir)
}

fn python() -> PathBuf {
    let python = sdk("python").join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test creates it (sdk/python/run-tests.sh --setup-only)",
        python.display()
    );
    python
}

/// Runs `program args` in `dir` with `ALKHUB_BIN` set to this build; fails
/// the test with its output unless it succeeds.
fn run(dir: &Path, program: &Path, args: &[&str]) {
    let _one = ONE_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("ALKHUB_BIN", env!("CARGO_BIN_EXE_alkhub"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} in {} failed:\n{}\n{}",
        program.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_typescript_sdk_passes_the_conformance_scenarios_and_packs() {
    let dir = sdk("typescript");
    run(&dir, Path::new("npm"), &["test"]);
    run(&dir, Path::new("npm"), &["run", "pack:check"]);
}

#[test]
fn the_python_sdk_passes_the_conformance_scenarios_and_builds_a_wheel() {
    // mypy --strict, then pytest (tests/test_packaging.py builds the wheel).
    run(&sdk("python"), Path::new("bash"), &["run-tests.sh", "-q"]);
}

/// A spoke process: its stdout says `ready` once the hub welcomed it.
async fn start_spoke(
    program: &Path,
    script: &Path,
    url: &str,
    token: &str,
) -> tokio::process::Child {
    let mut child = Command::new(program)
        .arg(script)
        .env("ALKHUB_URL", url)
        .env("ALKHUB_TOKEN", token)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim() == "ready" {
                return;
            }
        }
        panic!("{} ended before it was ready", script.display());
    })
    .await
    .unwrap_or_else(|_| panic!("{} was not ready within 30 s", script.display()));
    child
}

/// Runs a client example and returns the JSON lines it printed.
async fn run_client(program: &Path, script: &Path, url: &str, token: &str) -> Vec<Value> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(program)
            .arg(script)
            .env("ALKHUB_URL", url)
            .env("ALKHUB_TOKEN", token)
            .output(),
    )
    .await
    .expect("the client ends within 30 s")
    .unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn a_typescript_spoke_serves_a_python_client_and_the_reverse() {
    // The TypeScript suite rebuilds the package the examples import: not
    // while they run.
    let _one = ONE_SUITE.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(spokes_and_clients_across_sdks());
}

async fn spokes_and_clients_across_sdks() {
    let node = PathBuf::from("node");
    let python = python();
    let ts_examples = sdk("typescript").join("examples");
    let py_examples = sdk("python").join("examples");
    let pairs = [
        (
            "ts-spoke",
            &node,
            ts_examples.join("echo-spoke.mjs"),
            &python,
            py_examples.join("client.py"),
        ),
        (
            "py-spoke",
            &python,
            py_examples.join("echo_spoke.py"),
            &node,
            ts_examples.join("client.mjs"),
        ),
    ];
    for (name, spoke_program, spoke_script, client_program, client_script) in pairs {
        let hub = common::hub().await;
        let url = format!("http://{}", hub.addr);
        let spoke_token = hub.token(PrincipalKind::Spoke, name, &[]).await;
        let client_token = hub.token(PrincipalKind::Client, "caller", &[]).await;
        let _spoke = start_spoke(spoke_program, &spoke_script, &url, &spoke_token).await;
        let lines = run_client(client_program, &client_script, &url, &client_token).await;
        let data: Vec<Value> = lines
            .iter()
            .map(|l| l.get("data").cloned().unwrap_or_else(|| l.clone()))
            .collect();
        assert_eq!(
            data,
            vec![
                json!({"hello": "world"}),
                json!({"tick": 1}),
                json!({"tick": 2}),
                json!({"tick": 3})
            ],
            "{name}: {lines:?}"
        );
    }
}
