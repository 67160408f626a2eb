// zod schemas as operation input and output, against a real hub.

import assert from "node:assert/strict";
import { test } from "node:test";
import { z } from "zod";

import { Client, Spoke, ValidationError } from "../dist/index.js";
import { hubFor } from "./support/hub.mjs";

test("zod: schemas are declared as JSON Schema and parse the handler's input", async (t) => {
  const env = await hubFor(t, { spokes: ["zod-spoke"], clients: { "zod-client": {} } });
  const spoke = env.track(new Spoke({ url: env.hub.url, token: env.tokens["zod-spoke"] }));
  spoke.operation(
    {
      id: "zod.greet",
      type: "query",
      input: z.object({
        name: z
          .string()
          .min(1)
          .refine((name) => name === name.toLowerCase(), "must be lower case"),
        times: z.number().int().default(1),
      }),
      output: z.object({ greeting: z.string() }),
    },
    ({ name, times }) => ({ greeting: Array(times).fill(`hi ${name}`).join(", ") }),
  );
  spoke.operation(
    { id: "zod.count", type: "subscription", input: z.object({ to: z.number().int().max(10) }) },
    async function* ({ to }) {
      for (let n = 1; n <= to; n++) yield n;
    },
  );
  const welcome = await spoke.connect();
  assert.deepEqual(welcome.rejected, []);

  const client = env.track(new Client({ url: env.hub.url, token: env.tokens["zod-client"] }));
  const definition = await client.call("hub.operations.get", { operationId: "zod.greet" });
  assert.equal(definition.inputSchema.type, "object");
  assert.deepEqual(definition.inputSchema.required, ["name"], "the input schema of what callers send");
  assert.equal(definition.inputSchema.properties.name.minLength, 1);
  assert.deepEqual(definition.outputSchema.required, ["greeting"]);

  // The handler gets zod's output: defaults filled in.
  assert.deepEqual(await client.call("zod.greet", { name: "ada" }), { greeting: "hi ada" });
  assert.deepEqual(await client.call("zod.greet", { name: "ada", times: 2 }), { greeting: "hi ada, hi ada" });
  // The hub checks the JSON Schema...
  await assert.rejects(client.call("zod.greet", { name: 7 }), ValidationError);
  await assert.rejects(client.call("zod.greet", { name: "" }), ValidationError);
  // ...and zod what JSON Schema cannot say, with details shaped like the hub's.
  await assert.rejects(client.call("zod.greet", { name: "Ada" }), (error) => {
    assert.ok(error instanceof ValidationError);
    assert.deepEqual(error.details, { errors: [{ instancePath: "/name", message: "must be lower case" }] });
    return true;
  });

  const counted = [];
  for await (const n of client.subscribe("zod.count", { to: 3 })) counted.push(n);
  assert.deepEqual(counted, [1, 2, 3]);
  await assert.rejects(async () => {
    for await (const _ of client.subscribe("zod.count", { to: 11 })) {
      // not reached
    }
  }, ValidationError);
});
