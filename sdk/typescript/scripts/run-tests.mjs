// Runs the tests with node --test: every file over the `ws` package, then
// the conformance scenarios again over the platform's global WebSocket (the
// one browsers have; Node 20 and 21 need --experimental-websocket for it).

import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";

const files = readdirSync("test")
  .filter((name) => name.endsWith(".test.mjs"))
  .map((name) => `test/${name}`);
const runner = ["--test", "--test-concurrency=1", "--test-timeout=300000"];

function run(args, env = {}) {
  const { status } = spawnSync(process.execPath, args, { stdio: "inherit", env: { ...process.env, ...env } });
  if (status !== 0) process.exit(status ?? 1);
}

run([...runner, ...files]);

const major = Number(process.versions.node.split(".")[0]);
const nodeOptions = [process.env.NODE_OPTIONS, major < 22 ? "--experimental-websocket" : ""]
  .filter(Boolean)
  .join(" ");
run([...runner, "test/conformance.test.mjs"], { ALKHUB_TEST_WEBSOCKET: "global", NODE_OPTIONS: nodeOptions });
