// Example programs run as child processes: started with an environment,
// their stdout read line by line, stopped when the test ends.

import { spawn } from "node:child_process";

/** Runs `node script args` and keeps its output; `t.after` stops it. */
export function runNode(t, script, args, env) {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const run = { child, stdout: "", stderr: "" };
  child.stdout.setEncoding("utf8").on("data", (chunk) => (run.stdout += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk) => (run.stderr += chunk));
  run.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await run.exited;
      clearTimeout(timer);
    }
  });
  return run;
}

/** The lines of a finished run's stdout. */
export function lines(text) {
  return text.split("\n").filter((line) => line !== "");
}
