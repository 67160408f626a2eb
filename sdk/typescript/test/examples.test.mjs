// The example programs against a real hub.

import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { Client, HubError } from "../dist/index.js";
import { hubFor } from "./support/hub.mjs";
import { lines, runNode } from "./support/processes.mjs";
import { waitFor, within } from "./support/wait.mjs";

const examples = resolve(dirname(fileURLToPath(import.meta.url)), "..", "examples");

async function ready(run, what) {
  await waitFor(
    () => {
      if (run.child.exitCode !== null) throw new Error(`${what} exited early:\n${run.stderr}`);
      return lines(run.stdout).includes("ready");
    },
    `${what} to print ready`,
    { timeoutMs: 30_000 },
  );
}

test("examples: echo-spoke serves client.mjs", async (t) => {
  const env = await hubFor(t, { spokes: ["echo"], clients: { cli: {} } });
  const spoke = runNode(t, join(examples, "echo-spoke.mjs"), [], {
    ALKHUB_URL: env.hub.url,
    ALKHUB_TOKEN: env.tokens.echo,
  });
  await ready(spoke, "echo-spoke.mjs");
  assert.deepEqual(lines(spoke.stdout), ["ready"]);

  const client = runNode(t, join(examples, "client.mjs"), [], {
    ALKHUB_URL: env.hub.url,
    ALKHUB_TOKEN: env.tokens.cli,
  });
  const exit = await within(client.exited, 60_000, "client.mjs to finish");
  assert.equal(exit.code, 0, client.stderr);
  assert.deepEqual(lines(client.stdout), ['{"hello":"world"}', '{"tick":1}', '{"tick":2}', '{"tick":3}']);

  // demo.ticks defaults to 5 ticks.
  const caller = env.track(new Client({ url: env.hub.url, token: env.tokens.cli }));
  const ticks = [];
  for await (const event of caller.subscribe("demo.ticks", { everyMs: 1 })) ticks.push(event.tick);
  assert.deepEqual(ticks, [1, 2, 3, 4, 5]);
  await caller.close();

  spoke.child.kill("SIGTERM");
  assert.equal((await within(spoke.exited, 20_000, "echo-spoke.mjs to exit")).code, 0);
});

test("examples: folder-spoke serves a folder read-only and refuses paths that leave it", async (t) => {
  const env = await hubFor(t, { spokes: ["folder"], clients: { reader: {} } });
  const base = await mkdtemp(join(tmpdir(), "alkhub-folder-"));
  t.after(() => rm(base, { recursive: true, force: true }));
  const folder = join(base, "shared");
  await mkdir(join(folder, "sub"), { recursive: true });
  await writeFile(join(folder, "a.txt"), "alpha\n");
  await writeFile(join(folder, "sub", "b.txt"), "beta\n");
  await writeFile(join(base, "secret.txt"), "outside\n");
  await mkdir(join(base, "elsewhere"));
  await symlink(join(folder, "sub", "b.txt"), join(folder, "inner-link"));
  await symlink(join(base, "secret.txt"), join(folder, "file-escape"));
  await symlink(join(base, "elsewhere"), join(folder, "dir-escape"));
  await symlink("../../secret.txt", join(folder, "sub", "relative-escape"));

  const spoke = runNode(t, join(examples, "folder-spoke.mjs"), [folder, "docs"], {
    ALKHUB_URL: env.hub.url,
    ALKHUB_TOKEN: env.tokens.folder,
  });
  await ready(spoke, "folder-spoke.mjs");
  const client = env.track(new Client({ url: env.hub.url, token: env.tokens.reader }));

  const listing = await client.call("docs.list", {});
  assert.deepEqual(
    listing.entries.map((e) => [e.name, e.type]),
    [
      ["a.txt", "file"],
      ["dir-escape", "symlink"],
      ["file-escape", "symlink"],
      ["inner-link", "symlink"],
      ["sub", "directory"],
    ],
  );
  const sub = await client.call("docs.list", { path: "sub" });
  assert.deepEqual(
    sub.entries.map((e) => e.name),
    ["b.txt", "relative-escape"],
  );
  assert.equal((await client.call("docs.read", { path: "a.txt" })).content, "alpha\n");
  assert.equal((await client.call("docs.read", { path: "sub/b.txt" })).content, "beta\n");
  assert.equal((await client.call("docs.read", { path: "sub/../a.txt" })).content, "alpha\n");
  assert.equal((await client.call("docs.read", { path: "inner-link" })).content, "beta\n");

  const refused = [
    ["docs.read", { path: "../secret.txt" }, "PATH_OUTSIDE_FOLDER"],
    ["docs.read", { path: "sub/../../secret.txt" }, "PATH_OUTSIDE_FOLDER"],
    ["docs.read", { path: join(base, "secret.txt") }, "PATH_OUTSIDE_FOLDER"],
    ["docs.read", { path: "file-escape" }, "PATH_OUTSIDE_FOLDER"],
    ["docs.read", { path: "sub/relative-escape" }, "PATH_OUTSIDE_FOLDER"],
    ["docs.list", { path: "dir-escape" }, "PATH_OUTSIDE_FOLDER"],
    ["docs.list", { path: ".." }, "PATH_OUTSIDE_FOLDER"],
    ["docs.read", { path: "missing.txt" }, "NOT_FOUND"],
    ["docs.read", { path: "sub" }, "NOT_A_FILE"],
    ["docs.list", { path: "a.txt" }, "NOT_A_DIRECTORY"],
    ["docs.read", {}, "VALIDATION_ERROR"],
  ];
  for (const [operationId, input, code] of refused) {
    await assert.rejects(client.call(operationId, input), (error) => {
      assert.ok(error instanceof HubError);
      assert.equal(error.code, code, `${operationId} ${JSON.stringify(input)}: ${error.message}`);
      return true;
    });
  }
});
