// A spoke serving demo.echo (a query returning its input) and demo.ticks
// (a subscription counting to input.count, one tick every input.everyMs ms).
//
//   ALKHUB_TOKEN=alk_spoke_... node examples/echo-spoke.mjs
//
// ALKHUB_URL is the hub's HTTP base URL (default http://127.0.0.1:7700).
// Prints "ready" on stdout once the hub has welcomed it.

import { Spoke } from "../dist/index.js";

const url = process.env.ALKHUB_URL ?? "http://127.0.0.1:7700";
const token = process.env.ALKHUB_TOKEN;
if (!token) {
  console.error("set ALKHUB_TOKEN to a spoke token");
  process.exit(2);
}

/** Resolves after `ms`, or as soon as `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}

const spoke = new Spoke({ url, token, name: "echo example" });

spoke.operation({ id: "demo.echo", type: "query", description: "Returns its input." }, (input) => input);

spoke.operation(
  {
    id: "demo.ticks",
    type: "subscription",
    description: "Counts to input.count, one tick every input.everyMs ms.",
    input: {
      type: "object",
      properties: {
        count: { type: "integer", minimum: 1, maximum: 1000 },
        everyMs: { type: "integer", minimum: 1 },
      },
    },
  },
  async function* (input, ctx) {
    const count = input?.count ?? 5;
    const everyMs = input?.everyMs ?? 200;
    for (let tick = 1; tick <= count && !ctx.signal.aborted; tick++) {
      yield { tick };
      await sleep(everyMs, ctx.signal);
    }
  },
);

spoke.on("disconnect", ({ code, reason }) => console.error(`disconnected (${code} ${reason}); reconnecting`));
spoke.on("welcome", () => console.error("connected"));

const welcome = await spoke.connect().catch((error) => {
  console.error(`cannot connect: ${error.code ?? ""} ${error.message}`);
  process.exit(1);
});
for (const r of welcome.registrations)
  console.error(`serving ${r.operationId} (declared as ${r.preRemapId})`);
for (const r of welcome.rejected) console.error(`rejected ${r.operationId}: ${r.code} ${r.message}`);
console.log("ready");

for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => spoke.close());
const { code, reason, error } = await spoke.closed;
console.error(`closed (${code}${reason ? ` ${reason}` : ""})${error ? `: ${error.message}` : ""}`);
process.exit(code === 1000 ? 0 : 1);
