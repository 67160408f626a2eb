// Runs a real alkhub hub for a test: a fresh SQLite database in a temporary
// folder, principals made with the CLI, `alkhub serve` on a free loopback
// port. The binary is ALKHUB_BIN, else $CARGO_TARGET_DIR/debug/alkhub, else
// the repository's target/debug/alkhub; a missing binary fails the test.

import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os, { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The hub binary, or an error naming every place looked at. */
export function hubBinary() {
  if (process.env.ALKHUB_BIN) {
    if (existsSync(process.env.ALKHUB_BIN)) return process.env.ALKHUB_BIN;
    throw new Error(`ALKHUB_BIN is ${process.env.ALKHUB_BIN}, which does not exist`);
  }
  const candidates = [
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug", "alkhub"),
    join(packageDir, "..", "..", "target", "debug", "alkhub"),
  ].filter(Boolean);
  const found = candidates.find((path) => existsSync(path));
  if (found) return found;
  throw new Error(
    `no alkhub binary: set ALKHUB_BIN to one (build it with cargo build); looked at ${candidates.join(", ")}`,
  );
}

// Hubs still running when the test process exits or is stopped are killed
// with it.
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});
for (const signal of ["SIGINT", "SIGTERM"])
  process.once(signal, () => process.exit(128 + os.constants.signals[signal]));

// Compiled plugins are cached here, shared by every hub the tests start.
const pluginCache = join(tmpdir(), "alkhub-sdk-typescript-plugin-cache");

/** Writes a TOML file from `{section: {key: value}}`. */
function toml(sections) {
  return (
    Object.entries(sections)
      .map(
        ([section, keys]) =>
          `[${section}]\n` +
          Object.entries(keys)
            .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
            .join("\n"),
      )
      .join("\n\n") + "\n"
  );
}

/** A running (or stopped) hub. */
export class Hub {
  /** @param {string} dir */
  constructor(dir, config) {
    this.dir = dir;
    this.binary = hubBinary();
    this.database = `sqlite://${join(dir, "hub.db")}`;
    this.configPath = join(dir, "alkhub.toml");
    this.config = config;
    this.process = undefined;
    this.addr = undefined;
    this.log = [];
  }

  /**
   * A hub in a fresh folder. `config` adds to the test defaults, by section:
   * `{limits: {heartbeat_ms: 200}}`.
   */
  static async create(config = {}) {
    hubBinary(); // fails before anything is made
    const dir = await mkdtemp(join(tmpdir(), "alkhub-sdk-ts-"));
    await mkdir(join(dir, "plugins"));
    const sections = {
      server: { shutdown_grace_ms: 500, shutdown_hard_ms: 1000, ...config.server },
      plugins: { cache_dir: pluginCache, watch: false, ...config.plugins },
      ...Object.fromEntries(Object.entries(config).filter(([k]) => k !== "server" && k !== "plugins")),
    };
    await writeFile(join(dir, "alkhub.toml"), toml(sections));
    return new Hub(dir, sections);
  }

  /** Starts a fresh hub; registers its stop with `t.after`. */
  static async start(t, config = {}) {
    const hub = await Hub.create(config);
    t.after(() => hub.dispose());
    await hub.start();
    return hub;
  }

  /** The HTTP base URL. */
  get url() {
    return `http://${this.addr}`;
  }

  #cli(args) {
    return run(this.binary, [...args, "--database-url", this.database, "--config", this.configPath], {
      cwd: this.dir,
      env: this.#env(),
    });
  }

  #env() {
    const env = { ...process.env, RUST_LOG: "info" };
    delete env.ALKHUB_CONFIG;
    delete env.ALKHUB_DATABASE_URL;
    delete env.ALKHUB_TOKEN;
    return env;
  }

  async #add(kind, name, flags) {
    const { stdout } = await this.#cli([kind, "add", name, ...flags]);
    const lines = stdout.trim().split("\n");
    return lines[lines.length - 1].trim();
  }

  /** Creates a spoke; returns its token. */
  addSpoke(name, { provides } = {}) {
    return this.#add("spoke", name, provides ? ["--provides", provides.join(",")] : []);
  }

  /** Creates a client; returns its token. */
  addClient(name, { scopes, provides } = {}) {
    const flags = [];
    if (scopes) flags.push("--scopes", scopes.join(","));
    if (provides) flags.push("--provides", provides.join(","));
    return this.#add("client", name, flags);
  }

  /**
   * Starts `alkhub serve` (on the previous address when restarting) and
   * waits for its `alkhub listening` log line.
   */
  async start() {
    const listen = this.addr ?? "127.0.0.1:0";
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#spawn(listen);
        return;
      } catch (error) {
        // The port of a restart may still be held for a moment.
        if (attempt >= 20 || listen.endsWith(":0")) throw error;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  #spawn(listen) {
    const child = spawn(
      this.binary,
      [
        "serve",
        "--database-url",
        this.database,
        "--listen",
        listen,
        "--log-format",
        "json",
        "--plugins-dir",
        join(this.dir, "plugins"),
        "--config",
        this.configPath,
      ],
      { cwd: this.dir, env: this.#env(), stdio: ["ignore", "ignore", "pipe"] },
    );
    this.process = child;
    running.add(child);
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        running.delete(child);
        resolve({ code, signal });
      }),
    );
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(
        () => fail(new Error("the hub did not log `alkhub listening` within 90 s")),
        90_000,
      );
      let buffered = "";
      let started = false;
      const fail = (error) => {
        clearTimeout(timer);
        child.kill("SIGKILL");
        reject(new Error(`${error.message}\n--- hub log ---\n${this.log.slice(-40).join("\n")}`));
      };
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (chunk) => {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          this.log.push(line);
          if (this.log.length > 2000) this.log.shift();
          if (started) continue;
          let entry;
          try {
            entry = JSON.parse(line);
          } catch {
            continue;
          }
          const fields = entry.fields ?? entry;
          if (fields.message === "alkhub listening") {
            started = true;
            clearTimeout(timer);
            this.addr = fields.addr;
            resolvePromise();
          }
        }
      });
      child.once("exit", (code, signal) => {
        if (!started) fail(new Error(`the hub exited (code ${code}, signal ${signal}) before listening`));
      });
    });
  }

  /** Stops the hub: SIGTERM, then SIGKILL if it has not exited within 15 s. */
  async stop() {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Stops the hub and starts it again on the same address and database. */
  async restart() {
    await this.stop();
    await this.start();
  }

  /** Stops the hub and removes its folder. */
  async dispose() {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * A hub for one test, with principals made before it starts, and peers
 * that are closed (before the hub stops) when the test ends.
 *
 * `spokes` is a list of names; `clients` maps names to `{scopes}`.
 */
export async function hubFor(t, { spokes = [], clients = {}, config = {} } = {}) {
  const hub = await Hub.create(config);
  const peers = [];
  t.after(async () => {
    await Promise.all(peers.map((peer) => peer.close()));
    await hub.dispose();
  });
  const tokens = {};
  for (const name of spokes) tokens[name] = await hub.addSpoke(name);
  for (const [name, options] of Object.entries(clients)) tokens[name] = await hub.addClient(name, options);
  await hub.start();
  return {
    hub,
    tokens,
    /** Keeps `peer` to close it at the end of the test. */
    track(peer) {
      peers.push(peer);
      return peer;
    },
  };
}
