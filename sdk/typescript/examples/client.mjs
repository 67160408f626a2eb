// A client: calls demo.echo with {"hello":"world"} and prints the result as
// one JSON line, then subscribes to demo.ticks with {"count":3,"everyMs":10}
// and prints each event as one JSON line. Run examples/echo-spoke.mjs first.
//
//   ALKHUB_TOKEN=alk_client_... node examples/client.mjs
//
// ALKHUB_URL is the hub's HTTP base URL (default http://127.0.0.1:7700).

import { Client } from "../dist/index.js";

const url = process.env.ALKHUB_URL ?? "http://127.0.0.1:7700";
const token = process.env.ALKHUB_TOKEN;
if (!token) {
  console.error("set ALKHUB_TOKEN to a client token");
  process.exit(2);
}

const client = new Client({ url, token, reconnect: false });
try {
  const echoed = await client.call("demo.echo", { hello: "world" }, { timeoutMs: 10_000 });
  console.log(JSON.stringify(echoed));
  for await (const event of client.subscribe(
    "demo.ticks",
    { count: 3, everyMs: 10 },
    { timeoutMs: 30_000 },
  )) {
    console.log(JSON.stringify(event));
  }
} catch (error) {
  console.error(`${error.code ?? "ERROR"}: ${error.message}`);
  process.exitCode = 1;
} finally {
  await client.close();
}
