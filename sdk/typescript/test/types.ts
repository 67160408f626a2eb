// Compiled with `tsc --noEmit` by `npm test`: the public types infer what
// handlers receive and return. Nothing here runs.

import { z } from "zod";

import {
  Client,
  HubError,
  Spoke,
  TimeoutError,
  httpSubscribe,
  type CallContext,
  type CloseInfo,
  type Welcome,
} from "../dist/index.js";

const spoke = new Spoke({ url: "http://127.0.0.1:7700", token: "alk_spoke_..." });

spoke.operation(
  {
    id: "types.greet",
    type: "query",
    input: z.object({ name: z.string(), times: z.number().default(1) }),
    output: z.object({ greeting: z.string() }),
  },
  (input, ctx: CallContext) => {
    const times: number = input.times;
    const parent: string | undefined = ctx.parentRequestId;
    return { greeting: `${input.name.repeat(times)} ${parent ?? ""}` };
  },
);

// @ts-expect-error the result must match the zod output schema
spoke.operation({ id: "types.bad", type: "query", output: z.object({ n: z.string() }) }, () => ({ n: 1 }));

// @ts-expect-error a subscription handler returns an iterable, not a value
spoke.operation({ id: "types.notStream", type: "subscription" }, () => 1);

spoke.operation(
  { id: "types.count", type: "subscription", input: z.object({ to: z.number() }) },
  async function* ({ to }, ctx) {
    for (let n = 1; n <= to && !ctx.signal.aborted; n++) yield n;
  },
);

spoke.operation({ id: "types.json", type: "mutation", input: { type: "object" } }, (input) => input.anything);

export async function use(): Promise<void> {
  const client = new Client({ url: "http://127.0.0.1:7700", token: "alk_client_..." });
  const total: number = await client.call<number>("types.sum", [1, 2], { timeoutMs: 1000 });
  for await (const event of client.subscribe<{ tick: number }>("demo.ticks", { count: 3 })) {
    const tick: number = event.tick + total;
    void tick;
  }
  for await (const event of httpSubscribe<string>("http://127.0.0.1:7700", null, "demo.lines")) {
    event.toUpperCase();
  }
  const welcome: Welcome | undefined = client.welcome;
  const info: CloseInfo = await client.close();
  void welcome;
  void info;
  try {
    await client.call("demo.echo");
  } catch (error) {
    if (error instanceof TimeoutError) {
      const code: string = error.code;
      void code;
    } else if (error instanceof HubError) {
      const details: unknown = error.details;
      void details;
    }
  }
}
