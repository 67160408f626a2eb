// A spoke exposing one folder read-only: NAMESPACE.list lists a directory,
// NAMESPACE.read reads a file. Paths are relative to the folder; a path that
// leaves it, with ".." or through a symbolic link, is refused.
//
//   ALKHUB_TOKEN=alk_spoke_... node examples/folder-spoke.mjs FOLDER [NAMESPACE]
//
// NAMESPACE defaults to "files". ALKHUB_URL is the hub's HTTP base URL
// (default http://127.0.0.1:7700). Prints "ready" once the hub welcomed it.

import { lstat, readFile, readdir, realpath, stat } from "node:fs/promises";
import { isAbsolute, join, relative, resolve, sep } from "node:path";

import { HubError, Spoke } from "../dist/index.js";

const url = process.env.ALKHUB_URL ?? "http://127.0.0.1:7700";
const token = process.env.ALKHUB_TOKEN;
const [folder, namespace = "files"] = process.argv.slice(2);
if (!token || !folder) {
  console.error("usage: ALKHUB_TOKEN=alk_spoke_... node folder-spoke.mjs FOLDER [NAMESPACE]");
  process.exit(2);
}

const root = await realpath(folder);
// A read answers in one WebSocket frame, whose size the hub caps (1 MiB by default).
const maxFileBytes = 512 * 1024;

/** Whether `path` (absolute, resolved) is the root or below it. */
function inside(path) {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * The real path of `path` (relative to the folder), refused when it leaves
 * the folder: lexically (".."), or once symbolic links are resolved.
 */
async function confine(path = "") {
  if (typeof path !== "string" || isAbsolute(path) || !inside(resolve(root, path))) {
    throw new HubError("PATH_OUTSIDE_FOLDER", `${JSON.stringify(path)} is not a path inside the folder`);
  }
  let real;
  try {
    real = await realpath(resolve(root, path));
  } catch (error) {
    if (error.code === "ENOENT" || error.code === "ENOTDIR") {
      throw new HubError("NOT_FOUND", `${JSON.stringify(path)} does not exist`);
    }
    throw error;
  }
  if (!inside(real)) {
    throw new HubError("PATH_OUTSIDE_FOLDER", `${JSON.stringify(path)} leads outside the folder`);
  }
  return real;
}

function kindOf(stats) {
  if (stats.isSymbolicLink()) return "symlink";
  if (stats.isDirectory()) return "directory";
  if (stats.isFile()) return "file";
  return "other";
}

const pathInput = (required) => ({
  type: "object",
  properties: { path: { type: "string", description: "relative to the folder" } },
  ...(required ? { required: ["path"] } : {}),
  additionalProperties: false,
});

const spoke = new Spoke({ url, token, name: `folder ${namespace}` });

spoke.operation(
  {
    id: `${namespace}.list`,
    type: "query",
    description: "Lists a directory of the folder (path relative to it; default: the folder itself).",
    input: pathInput(false),
  },
  async (input) => {
    const directory = await confine(input?.path);
    if (!(await stat(directory)).isDirectory()) {
      throw new HubError("NOT_A_DIRECTORY", `${JSON.stringify(input?.path)} is not a directory`);
    }
    const names = (await readdir(directory)).sort();
    const entries = [];
    for (const name of names) {
      const stats = await lstat(join(directory, name));
      entries.push({ name, type: kindOf(stats), size: stats.size });
    }
    return { path: relative(root, directory), entries };
  },
);

spoke.operation(
  {
    id: `${namespace}.read`,
    type: "query",
    description: "Reads a file of the folder as UTF-8 text.",
    input: pathInput(true),
  },
  async ({ path }) => {
    const file = await confine(path);
    const stats = await stat(file);
    if (!stats.isFile()) throw new HubError("NOT_A_FILE", `${JSON.stringify(path)} is not a file`);
    if (stats.size > maxFileBytes) {
      throw new HubError("FILE_TOO_LARGE", `${JSON.stringify(path)} is larger than ${maxFileBytes} bytes`, {
        size: stats.size,
        maxBytes: maxFileBytes,
      });
    }
    return { path: relative(root, file), size: stats.size, content: await readFile(file, "utf8") };
  },
);

const welcome = await spoke.connect().catch((error) => {
  console.error(`cannot connect: ${error.code ?? ""} ${error.message}`);
  process.exit(1);
});
for (const r of welcome.registrations) console.error(`serving ${r.operationId} from ${root}`);
for (const r of welcome.rejected) console.error(`rejected ${r.operationId}: ${r.code} ${r.message}`);
console.log("ready");

for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => spoke.close());
const { code } = await spoke.closed;
process.exit(code === 1000 ? 0 : 1);
