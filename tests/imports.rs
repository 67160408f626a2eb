//! Imports: OpenAPI documents become operation definitions (decision D3),
//! stored with the import, updated on re-import, removed with it.

mod common;

use std::path::Path;
use std::process::Command;

use alkhub::imports::import_openapi;
use alkhub::peer::spec;
use alkhub::protocol::OperationType;
use alkhub::store::Store;
use common::{alkhub, hub, postgres, sqlite};
use serde_json::json;

const PETS: &str = r##"
openapi: 3.1.0
info: { title: Pets, version: "1" }
paths:
  /pets/{petId}:
    parameters:
      - { name: petId, in: path, schema: { type: integer } }
    get:
      operationId: getPet
      summary: One pet
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: { $ref: "#/components/schemas/Pet" }
    delete:
      operationId: deletePet
      responses:
        "204": { description: gone }
  /pets:
    post:
      operationId: addPet
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Pet" }
      responses:
        "201": { description: created }
components:
  schemas:
    Pet:
      type: object
      properties:
        name: { type: string }
"##;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn reimport_reports_changes(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "pets.yaml", PETS);
    let first = import_openapi(store, &file, "pets", None, None)
        .await
        .unwrap();
    assert_eq!(
        first.changes.added,
        // Paths in sorted order, methods in OpenAPI's order.
        ["pets.addPet", "pets.getPet", "pets.deletePet"]
    );
    assert!(first.base_url.is_none());

    let again = import_openapi(store, &file, "pets", None, None)
        .await
        .unwrap();
    assert_eq!(
        (again.changes.added.len(), again.changes.unchanged.len()),
        (0, 3)
    );

    // One operation gone, one described differently.
    let changed = PETS
        .replace("summary: One pet", "summary: One pet, by id")
        .replace(
            "    delete:\n      operationId: deletePet\n      responses:\n        \"204\": { description: gone }\n",
            "",
        );
    let file = write(dir.path(), "pets.yaml", &changed);
    let third = import_openapi(store, &file, "pets", Some("http://localhost:9/api/"), None)
        .await
        .unwrap();
    assert_eq!(third.changes.updated, ["pets.getPet"]);
    assert_eq!(third.changes.unchanged, ["pets.addPet"]);
    assert_eq!(third.changes.removed, ["pets.deletePet"]);
    assert_eq!(third.base_url.as_deref(), Some("http://localhost:9/api"));

    let get = store.get_operation("pets.getPet").await.unwrap().unwrap();
    assert_eq!(get.spec.description.as_deref(), Some("One pet, by id"));
    assert_eq!(get.spec.op_type, OperationType::Query);
    assert_eq!(get.spec.input_schema.unwrap()["required"], json!(["petId"]));
    assert!(store
        .get_operation("pets.deletePet")
        .await
        .unwrap()
        .is_none());

    let imports = store.list_imports().await.unwrap();
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].operations, ["pets.addPet", "pets.getPet"]);
    assert_eq!(imports[0].config["base_url"], "http://localhost:9/api");
    assert_eq!(
        imports[0].config["bindings"]["getPet"]["path"],
        "/pets/{petId}"
    );

    let removed = store.remove_import("pets").await.unwrap();
    assert_eq!(removed, ["pets.addPet", "pets.getPet"]);
    assert!(store.list_operations().await.unwrap().is_empty());
    assert!(store.list_imports().await.unwrap().is_empty());
    let err = store.remove_import("pets").await.unwrap_err();
    assert!(
        err.to_string().contains("import \"pets\" not found"),
        "{err}"
    );
}

#[tokio::test]
async fn reimporting_updates_definitions_and_reports_changes_sqlite() {
    reimport_reports_changes(&sqlite().await.store).await;
}

#[tokio::test]
async fn reimporting_updates_definitions_and_reports_changes_postgres() {
    reimport_reports_changes(&postgres().await.store).await;
}

#[tokio::test]
async fn a_definition_only_import_answers_no_provider_until_a_spoke_registers_it() {
    let mut hub = hub().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "pets.yaml", PETS);
    import_openapi(&hub.db.store, &file, "pets", None, None)
        .await
        .unwrap();
    hub.restart().await;
    let client = hub.client("app", &[]).await;
    let err = client
        .call("pets.getPet", json!({ "petId": 7 }))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "NO_PROVIDER", "{}", err.message);
    // The imported input schema applies before any provider exists.
    let err = client
        .call("pets.getPet", json!({ "petId": "seven" }))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "VALIDATION_ERROR", "{}", err.message);

    // A spoke granted the import's namespace, declaring the same id without
    // schemas, serves the imported contract.
    let petstore = hub.spoke("petstore").await;
    let grants = ["pets.*".to_owned()];
    hub.db
        .store
        .set_provides(
            alkhub::protocol::PrincipalKind::Spoke,
            "petstore",
            Some(&grants),
        )
        .await
        .unwrap();
    let _spoke = petstore
        .operation(
            spec("pets", "getPet", OperationType::Query),
            |input| async move { Ok(json!({ "name": format!("pet {}", input.input["petId"]) })) },
        )
        .connect()
        .await
        .unwrap();
    let out = client
        .call("pets.getPet", json!({ "petId": 7 }))
        .await
        .unwrap();
    assert_eq!(out["data"]["name"], "pet 7");

    // A spoke without a grant naming the import cannot serve it, whatever it
    // declares, and learns nothing about the imported contract.
    let mut other = spec("pets", "addPet", OperationType::Query);
    other.input_schema = Some(json!({ "type": "object" }));
    let peer = hub
        .spoke("impostor")
        .await
        .operation(other, |_| async { Ok(json!(null)) })
        .connect()
        .await;
    let rejected = match peer {
        Ok(p) => p.welcome().rejected.clone(),
        Err(e) => panic!("hello refused outright: {e}"),
    };
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].code.as_str(), "ACCESS_DENIED");
    assert_eq!(
        rejected[0].message,
        "spoke impostor is not granted to provide pets.addPet"
    );
}

#[tokio::test]
async fn an_import_never_replaces_a_spokes_definition() {
    let hub = hub().await;
    let _spoke = hub
        .spoke("petstore")
        .await
        .operation(spec("pets", "getPet", OperationType::Query), |_| async {
            Ok(json!(1))
        })
        .connect()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "pets.yaml", PETS);
    let err = import_openapi(&hub.db.store, &file, "pets", None, None)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("pets.getPet is already defined by a spoke source"),
        "{err:#}"
    );
    // Nothing of the import was saved.
    assert!(hub.db.store.list_imports().await.unwrap().is_empty());
    assert!(hub
        .db
        .store
        .get_operation("pets.addPet")
        .await
        .unwrap()
        .is_none());
}

#[test]
fn the_cli_imports_lists_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "pets.yaml", PETS);
    let (ok, out, err) = alkhub(
        dir.path(),
        &[
            "import",
            "openapi",
            "pets.yaml",
            "--namespace",
            "pets",
            "--auth",
            "bearer:PETS_TOKEN",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("import pets: 3 added, 0 updated, 0 unchanged, 0 removed"),
        "{out}"
    );
    assert!(out.contains("no base URL"), "{out}");
    let (_, out, _) = alkhub(dir.path(), &["import", "list"]);
    assert!(
        out.starts_with("pets\topenapi\tpets\toperations=3"),
        "{out}"
    );

    let (ok, _, err) = alkhub(
        dir.path(),
        &[
            "import",
            "openapi",
            "pets.yaml",
            "--namespace",
            "pets",
            "--auth",
            "token:X",
        ],
    );
    assert!(!ok);
    assert!(err.contains("bearer:ENV_VAR"), "{err}");
    let (ok, _, err) = alkhub(
        dir.path(),
        &["import", "openapi", "missing.yaml", "--namespace", "pets"],
    );
    assert!(!ok);
    assert!(err.contains("cannot read missing.yaml"), "{err}");
    write(dir.path(), "swagger.json", r#"{"swagger": "2.0"}"#);
    let (ok, _, err) = alkhub(
        dir.path(),
        &["import", "openapi", "swagger.json", "--namespace", "old"],
    );
    assert!(!ok);
    assert!(err.contains("`openapi` field is missing"), "{err}");

    // One operation that cannot be mapped is skipped, named, with its
    // reason; with --strict the import fails and saves nothing.
    write(
        dir.path(),
        "partly.json",
        r##"{"openapi": "3.1.0", "paths": {
            "/ok": {"get": {"operationId": "fine"}},
            "/bad": {"get": {"operationId": "broken", "parameters": [{"$ref": "#/components/parameters/gone"}]}}}}"##,
    );
    let strict = [
        "import",
        "openapi",
        "partly.json",
        "--namespace",
        "partly",
        "--strict",
    ];
    let (ok, _, err) = alkhub(dir.path(), &strict);
    assert!(!ok);
    assert!(
        err.contains("GET /bad") && err.contains("--strict"),
        "{err}"
    );
    let (_, out, _) = alkhub(dir.path(), &["import", "list"]);
    assert!(!out.contains("partly"), "{out}");
    let (ok, out, err) = alkhub(dir.path(), &strict[..5]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: skipped GET /bad") && err.contains("#/components/parameters/gone"),
        "{err}"
    );
    assert!(
        out.contains("1 added") && out.contains("1 operation(s) skipped"),
        "{out}"
    );
    let (ok, _, err) = alkhub(dir.path(), &["import", "remove", "partly"]);
    assert!(ok, "{err}");

    let (ok, out, err) = alkhub(dir.path(), &["import", "remove", "pets"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("removed import pets and its 3 operations"),
        "{out}"
    );
    let (_, out, _) = alkhub(dir.path(), &["import", "list"]);
    assert!(out.is_empty(), "{out}");
}

// ---------------------------------------------------------------------------
// The HTTP provider against a FastAPI app nobody here wrote the framework of.

/// The FastAPI app of `tests/fixtures/petstore`, on a free loopback port.
struct Petstore {
    child: std::process::Child,
    url: String,
}

impl Drop for Petstore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn petstore() -> Petstore {
    fastapi_app("app:app").await
}

/// The FastAPI app `module:app` of `tests/fixtures/petstore`.
async fn fastapi_app(app: &str) -> Petstore {
    fastapi_app_with(app, &[], "http").await
}

/// [`fastapi_app`] with more uvicorn arguments, reached at `scheme://`.
async fn fastapi_app_with(app: &str, uvicorn_args: &[&str], scheme: &str) -> Petstore {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let python = fixtures.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test installs FastAPI there (python3 -m venv tests/fixtures/.venv && \
         tests/fixtures/.venv/bin/pip install -r tests/fixtures/requirements.txt)",
        python.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python)
        .args(["-m", "uvicorn", app, "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--log-level=warning")
        .args(uvicorn_args)
        .current_dir(fixtures.join("petstore"))
        .spawn()
        .unwrap();
    let store = Petstore {
        child,
        url: format!("{scheme}://127.0.0.1:{port}"),
    };
    common::eventually("the FastAPI app answers", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    store
}

#[tokio::test]
async fn an_imported_fastapi_app_is_served_by_the_hub() {
    let api = petstore().await;
    let mut hub = hub().await;
    // A variable name of this test only: tests run in parallel in one process.
    std::env::set_var("ALKHUB_TEST_PETSTORE_TOKEN", "sekret");
    let imported = import_openapi(
        &hub.db.store,
        &format!("{}/openapi.json", api.url),
        "pets",
        Some(&api.url),
        Some("bearer:ALKHUB_TEST_PETSTORE_TOKEN".parse().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(
        imported.changes.added,
        ["pets.getPet", "pets.putPet", "pets.ticks", "pets.whoami"]
    );
    hub.restart().await;
    let client = hub.client("app", &[]).await;

    // Path, header and body parameters reach the app.
    let out = client
        .call(
            "pets.putPet",
            json!({ "pet_id": 7, "x-trace": "t-1", "body": { "name": "Rex", "age": 3 } }),
        )
        .await
        .unwrap();
    assert_eq!(
        out["data"],
        json!({ "id": 7, "name": "Rex", "age": 3, "trace": "t-1" })
    );
    assert_eq!(out["meta"]["source"], "http");
    assert_eq!(out["meta"]["status"], 201);
    assert_eq!(out["meta"]["contentType"], "application/json");

    // A query parameter.
    let out = client
        .call("pets.getPet", json!({ "pet_id": 7, "verbose": true }))
        .await
        .unwrap();
    assert_eq!(out["data"], json!({ "id": 7, "name": "Rex", "age": 3 }));

    // An error status.
    let err = client
        .call("pets.getPet", json!({ "pet_id": 99 }))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "EXECUTION_ERROR", "{}", err.message);
    let details = err.details.clone().unwrap();
    assert_eq!(details["status"], 404);
    assert_eq!(details["body"]["detail"], "no pet 99");

    // The imported input schema is enforced before the request is made.
    let err = client
        .call("pets.getPet", json!({ "pet_id": "seven" }))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "VALIDATION_ERROR");

    // Authentication comes from the environment, never from the store.
    let out = client.call("pets.whoami", json!({})).await.unwrap();
    assert_eq!(out["data"]["authorization"], "Bearer sekret");
    let stored = hub.db.store.get_import("pets").await.unwrap().unwrap();
    assert!(!stored.config.to_string().contains("sekret"));

    // An event stream is a subscription: one envelope per event.
    let mut events = client.subscribe("pets.ticks", json!({ "count": 3 }), Default::default());
    let mut data = Vec::new();
    while let Some(event) = events.next().await {
        data.push(event.unwrap()["data"]["n"].clone());
    }
    assert_eq!(data, [json!(0), json!(1), json!(2)]);

    // The same call over HTTP.
    let token = hub
        .token(alkhub::protocol::PrincipalKind::Client, "curl", &[])
        .await;
    let r = hub
        .http(
            "POST",
            "/v1/operations/pets.getPet/call",
            Some(&token),
            Some(&json!({ "input": { "pet_id": 7 } }).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["name"], "Rex");

    // The registrations are the hub's, as a client provider.
    let regs = hub
        .db
        .store
        .registrations_of_operation("pets.getPet")
        .await
        .unwrap();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].provider_id, "import-pets");
    assert_eq!(
        regs[0].provider_type,
        alkhub::protocol::PrincipalKind::Client
    );
}

/// A loopback HTTP server answering every request with `response`; the
/// head of each request it receives goes to the returned channel.
async fn raw_server(response: String) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn credentials_never_follow_a_redirect_to_another_origin() {
    let (elsewhere, mut reached_elsewhere) = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
            .into(),
    )
    .await;
    let (api, mut reached_api) = raw_server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/stolen\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "away.json",
        r#"{"openapi": "3.1.0", "paths": {"/thing": {"get": {"operationId": "thing",
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {}}}}}}}}}"#,
    );
    let mut hub = hub().await;
    // A variable name of this test only: tests run in parallel in one process.
    std::env::set_var("ALKHUB_TEST_REDIRECT_KEY", "s3cret-key");
    import_openapi(
        &hub.db.store,
        &file,
        "away",
        Some(&api),
        Some("header:X-Api-Key:ALKHUB_TEST_REDIRECT_KEY".parse().unwrap()),
    )
    .await
    .unwrap();
    hub.restart().await;
    let client = hub.client("app", &[]).await;
    let answer = client.call("away.thing", json!({})).await;
    let head = common::recv_within(&mut reached_api).await;
    assert!(
        head.to_ascii_lowercase().contains("x-api-key: s3cret-key"),
        "{head}"
    );
    assert!(
        answer.is_err(),
        "the redirect's 3xx is the answer: {answer:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        reached_elsewhere.try_recv().is_err(),
        "the request (and its key) followed the redirect to another origin"
    );
}

#[tokio::test]
async fn the_admin_api_adds_refreshes_and_removes_an_import_the_running_hub_serves() {
    let api = petstore().await;
    let hub = hub().await;
    let admin = hub
        .token(alkhub::protocol::PrincipalKind::Client, "ops", &["admin"])
        .await;
    let client = hub.client("app", &[]).await;
    let add = json!({
        "kind": "openapi",
        "name": "zoo",
        "source": format!("{}/openapi.json", api.url),
        "baseUrl": api.url,
    });
    let added = hub
        .http(
            "POST",
            "/v1/admin/imports",
            Some(&admin),
            Some(&add.to_string()),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(
        added.json()["added"],
        json!(["zoo.getPet", "zoo.putPet", "zoo.ticks", "zoo.whoami"])
    );
    // Served at once, without a restart.
    let out = client
        .call(
            "zoo.putPet",
            json!({ "pet_id": 3, "body": { "name": "Ada", "age": 2 } }),
        )
        .await
        .unwrap();
    assert_eq!(out["data"]["name"], "Ada");
    let listed = hub
        .http("GET", "/v1/admin/imports", Some(&admin), None)
        .await
        .json();
    assert_eq!(listed["imports"][0]["name"], "zoo");
    assert_eq!(listed["imports"][0]["serving"], true);
    assert_eq!(listed["imports"][0]["operations"], 4);

    // A refresh reads the source again and serves the same operations.
    let refreshed = hub
        .http("POST", "/v1/admin/imports/zoo/refresh", Some(&admin), None)
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(refreshed.json()["unchanged"].as_array().unwrap().len(), 4);
    let out = client
        .call("zoo.getPet", json!({ "pet_id": 3 }))
        .await
        .unwrap();
    assert_eq!(out["data"]["name"], "Ada");

    // A document sent inline is served too, but cannot be refreshed.
    let document = reqwest::get(format!("{}/openapi.json", api.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let inline =
        json!({"kind": "openapi", "name": "zoo2", "document": document, "baseUrl": api.url});
    let added = hub
        .http(
            "POST",
            "/v1/admin/imports",
            Some(&admin),
            Some(&inline.to_string()),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let out = client
        .call("zoo2.getPet", json!({ "pet_id": 3 }))
        .await
        .unwrap();
    assert_eq!(out["data"]["name"], "Ada");
    let refused = hub
        .http("POST", "/v1/admin/imports/zoo2/refresh", Some(&admin), None)
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("send the document again"),
        "{}",
        refused.body
    );

    // Bad requests name the problem; the hub reads no file for the admin API
    // and starts no command.
    for (body, says) in [
        (
            json!({"kind": "openapi", "name": "x", "source": "/etc/passwd"}),
            "not an http(s) URL",
        ),
        (
            json!({"kind": "mcp", "name": "x", "url": "file:///bin/sh"}),
            "streamable HTTP endpoint",
        ),
        (json!({"kind": "soap", "name": "x"}), "no import kind"),
        (
            json!({"kind": "openapi", "name": "x", "document": "{}", "baseUrl": "ftp://h"}),
            "not an OpenAPI 3 document",
        ),
        (
            json!({"kind": "mcp", "name": "x", "command": "sh"}),
            "unknown field",
        ),
    ] {
        let r = hub
            .http(
                "POST",
                "/v1/admin/imports",
                Some(&admin),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    let missing = hub
        .http("POST", "/v1/admin/imports/nope/refresh", Some(&admin), None)
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);

    // Removing it stops serving it and deletes its operations.
    let removed = hub
        .http("DELETE", "/v1/admin/imports/zoo", Some(&admin), None)
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    let err = client
        .call("zoo.getPet", json!({ "pet_id": 3 }))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "OPERATION_NOT_FOUND", "{}", err.message);
    assert!(hub.db.store.get_import("zoo").await.unwrap().is_none());

    // Every change is audited, by whom.
    let audit = hub
        .http("GET", "/v1/admin/audit", Some(&admin), None)
        .await
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actorId"] == "ops")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["import.add", "import.refresh", "import.remove"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_hub_serves_what_the_cli_imports_refreshes_and_removes_without_a_restart() {
    let api = petstore().await;
    let hub = common::hub_with(|c| c.imports.poll_ms = 100).await;
    let client = hub.client("app", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("{}/openapi.json", api.url);
    let db = hub.db.url.clone();
    let cli = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            alkhub(&dir, &args)
        })
    };
    let args = |words: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        all.extend(["--database-url".to_owned(), db.clone()]);
        all
    };
    let (ok, out, err) = cli(args(&[
        "import",
        "openapi",
        &spec,
        "--namespace",
        "farm",
        "--base-url",
        &api.url,
    ]))
    .await
    .unwrap();
    assert!(ok && out.contains("added farm.getPet"), "{out}{err}");
    common::eventually("the running hub serves the import", || async {
        client
            .call(
                "farm.putPet",
                json!({ "pet_id": 5, "body": { "name": "Io", "age": 1 } }),
            )
            .await
            .is_ok()
    })
    .await;

    // A refresh that changes nothing changes nothing: the import keeps its
    // provider and session.
    let provider_session = || {
        hub.handle()
            .sessions()
            .live()
            .iter()
            .find(|c| c.identity.id == "import-farm")
            .map(|c| c.session_id)
    };
    let session = provider_session();
    let (ok, out, err) = cli(args(&["import", "refresh", "farm"])).await.unwrap();
    assert!(
        ok && out.contains("0 added, 0 updated, 4 unchanged"),
        "{out}{err}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(session.is_some());
    assert_eq!(
        session,
        provider_session(),
        "an unchanged import is not served anew"
    );

    let (ok, out, err) = cli(args(&["import", "remove", "farm"])).await.unwrap();
    assert!(ok, "{out}{err}");
    common::eventually("the running hub stops serving it", || async {
        client
            .call("farm.getPet", json!({ "pet_id": 5 }))
            .await
            .is_err_and(|e| e.code.as_str() == "OPERATION_NOT_FOUND")
    })
    .await;
    assert_eq!(provider_session(), None);
}

#[tokio::test]
async fn parameters_sharing_a_name_reach_their_places_and_a_path_parameter_stays_one_segment() {
    let (api, mut requests) = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
            .into(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "items.json",
        r#"{"openapi": "3.1.0", "paths": {"/items/{id}": {"get": {"operationId": "item",
            "parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "id", "in": "query", "schema": {"type": "string"}},
                {"name": "id", "in": "header", "schema": {"type": "string"}},
                {"name": "tag", "in": "query", "schema": {"type": ["string", "null"]}}],
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {}}}}}}}}}"#,
    );
    let mut hub = hub().await;
    import_openapi(&hub.db.store, &file, "inv", Some(&api), None)
        .await
        .unwrap();
    hub.restart().await;
    let client = hub.client("app", &[]).await;
    client
        .call(
            "inv.item",
            json!({"id": "a/b c", "query_id": "q", "header_id": "h", "tag": null}),
        )
        .await
        .unwrap();
    let head = common::recv_within(&mut requests).await;
    let first_line = head.lines().next().unwrap();
    // The path parameter is one encoded segment, the query one keeps its
    // name on the wire, and a null is no parameter at all.
    assert_eq!(first_line, "GET /items/a%2Fb%20c?id=q HTTP/1.1", "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nid: h\r\n"),
        "{head}"
    );

    // `..` would climb out of the base URL even encoded: refused, unsent.
    let err = client
        .call("inv.item", json!({"id": ".."}))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("would leave the base URL"),
        "{}",
        err.message
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(requests.try_recv().is_err(), "nothing was sent");
}

#[tokio::test]
async fn arrays_forms_and_multipart_bodies_reach_fastapi_as_it_expects() {
    let api = fastapi_app("forms:app").await;
    let mut hub = hub().await;
    let imported = import_openapi(
        &hub.db.store,
        &format!("{}/openapi.json", api.url),
        "forms",
        Some(&api.url),
        None,
    )
    .await
    .unwrap();
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    hub.restart().await;
    let client = hub.client("app", &[]).await;

    // An array query parameter, exploded as `form` says; a null is absent;
    // the Accept header asks for the JSON the document promises.
    let out = client
        .call(
            "forms.search",
            json!({"kind": "a b", "tags": ["x", "y z"], "limit": null, "session_id": "s 1;x"}),
        )
        .await
        .unwrap();
    assert_eq!(
        out["data"],
        json!({"kind": "a b", "tags": ["x", "y z"], "limit": null, "accept": "application/json, */*;q=0.1", "session": "s%201%3Bx"})
    );

    // A form body.
    let out = client
        .call(
            "forms.login",
            json!({"body": {"username": "ada & co", "remember": true}}),
        )
        .await
        .unwrap();
    assert_eq!(
        out["data"],
        json!({"username": "ada & co", "remember": true})
    );

    // A multipart body, an array field as repeated parts.
    let out = client
        .call(
            "forms.addNote",
            json!({"body": {"title": "groceries", "tags": ["home", "food"]}}),
        )
        .await
        .unwrap();
    assert_eq!(
        out["data"],
        json!({"title": "groceries", "tags": ["home", "food"], "attached": false})
    );
}

#[tokio::test]
async fn each_security_scheme_gets_its_own_credential() {
    let api = fastapi_app("secure:app").await;
    let mut hub = hub().await;
    // Variable names of this test only: tests run in parallel in one process.
    for (var, value) in [
        ("ALKHUB_TEST_SEC_HEADER", "h-key"),
        ("ALKHUB_TEST_SEC_QUERY", "q key"),
        ("ALKHUB_TEST_SEC_COOKIE", "c-key"),
        ("ALKHUB_TEST_SEC_BEARER", "b-token"),
        ("ALKHUB_TEST_SEC_OAUTH", "app:s3cret"),
    ] {
        std::env::set_var(var, value);
    }
    let source = format!("{}/openapi.json", api.url);
    let auth = |specs: &[&str]| -> Vec<alkhub::imports::AuthSpec> {
        specs.iter().map(|s| s.parse().unwrap()).collect()
    };
    let err = alkhub::imports::import_openapi_checked(
        &hub.db.store,
        &source,
        "sec",
        Some(&api.url),
        auth(&["nope=ALKHUB_TEST_SEC_HEADER"]),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("no security scheme \"nope\" (it has: basic, bearer, cookieKey, headerKey, oauth, queryKey)"),
        "{err:#}"
    );
    alkhub::imports::import_openapi_checked(
        &hub.db.store,
        &source,
        "sec",
        Some(&api.url),
        auth(&[
            "headerKey=ALKHUB_TEST_SEC_HEADER",
            "queryKey=ALKHUB_TEST_SEC_QUERY",
            "cookieKey=ALKHUB_TEST_SEC_COOKIE",
            "bearer=ALKHUB_TEST_SEC_BEARER",
            "oauth=ALKHUB_TEST_SEC_OAUTH",
        ]),
        false,
    )
    .await
    .unwrap();
    let stored = hub.db.store.get_import("sec").await.unwrap().unwrap();
    assert!(
        !stored.config.to_string().contains("s3cret"),
        "no secret is stored"
    );
    hub.restart().await;
    let client = hub.client("app", &[]).await;
    let call = |op: &'static str| {
        let client = client.clone();
        async move { client.call(op, json!({})).await }
    };
    assert_eq!(call("sec.byHeader").await.unwrap()["data"]["key"], "h-key");
    assert_eq!(call("sec.byQuery").await.unwrap()["data"]["key"], "q key");
    assert_eq!(call("sec.byCookie").await.unwrap()["data"]["key"], "c-key");
    assert_eq!(
        call("sec.byBearer").await.unwrap()["data"]["token"],
        "b-token"
    );
    // One token from the token endpoint, cached for the second call.
    let first = call("sec.byOauth").await.unwrap();
    let second = call("sec.byOauth").await.unwrap();
    assert_eq!(first["data"]["token"], second["data"]["token"]);
    assert_eq!(second["data"]["issued"], 1);
    // No credential was given for `basic`: the call says what it needs.
    let err = call("sec.byBasic").await.unwrap_err();
    assert!(
        err.message.contains("needs credentials for basic"),
        "{}",
        err.message
    );
}

/// A CA of the test's own and a certificate it signed for 127.0.0.1, made
/// with the openssl command: `(dir, ca.pem, server.pem, server.key)`.
fn test_ca() -> (tempfile::TempDir, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(
        path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let steps: [Vec<String>; 3] = [
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=alkhub test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-keyout".into(),
            path("ca.key"),
            "-out".into(),
            path("ca.pem"),
        ])
        .collect(),
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-keyout".into(),
            path("server.key"),
            "-out".into(),
            path("server.csr"),
        ])
        .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                "-in".into(),
                path("server.csr"),
                "-CA".into(),
                path("ca.pem"),
                "-CAkey".into(),
                path("ca.key"),
                "-out".into(),
                path("server.pem"),
                "-extfile".into(),
                path("ext.cnf"),
            ])
            .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("the openssl command");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (ca, cert, key) = (path("ca.pem"), path("server.pem"), path("server.key"));
    (dir, ca, cert, key)
}

#[tokio::test]
async fn an_https_api_with_its_own_ca_is_imported_and_called_through_ca_cert() {
    let (_dir, ca, cert, key) = test_ca();
    let api = fastapi_app_with(
        "forms:app",
        &["--ssl-certfile", &cert, "--ssl-keyfile", &key],
        "https",
    )
    .await;
    let source = format!("{}/openapi.json", api.url);

    // Without the CA the server is not trusted, and the error says why.
    let err = alkhub::imports::read_source(&source).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("certificate"), "{message}");

    let mut hub = hub().await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let (dir, db, source, api_url, ca) = (
            dir.path().to_owned(),
            hub.db.url.clone(),
            source.clone(),
            api.url.clone(),
            ca.clone(),
        );
        move || {
            alkhub(
                &dir,
                &[
                    "import",
                    "openapi",
                    &source,
                    "--namespace",
                    "tls",
                    "--base-url",
                    &api_url,
                    "--ca-cert",
                    &ca,
                    "--database-url",
                    &db,
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok && out.contains("added tls.search"), "{out}{err}");
    hub.restart().await;
    let client = hub.client("app", &[]).await;
    let out = client
        .call("tls.search", json!({"kind": "secure", "tags": ["a"]}))
        .await
        .unwrap();
    assert_eq!(out["data"]["kind"], "secure");
    assert_eq!(out["data"]["tags"], json!(["a"]));
}
