/**
 * A client: a peer on `/v1/clients/connect` that calls operations.
 *
 * @module
 */

import { Peer, type PeerOptions } from "./peer.js";

/**
 * A client: calls and subscribes through the hub. It connects on its first
 * call (or on {@link Peer.connect}) and reconnects like a spoke. A client
 * may also serve operations, but only those its grants allow
 * (`alkhub client add NAME --provides PATTERN`).
 *
 * ```ts
 * const client = new Client({ url: "http://127.0.0.1:7700", token: "alk_client_..." });
 * const echoed = await client.call("demo.echo", { hello: "world" });
 * for await (const event of client.subscribe("demo.ticks", { count: 3 })) console.log(event);
 * await client.close();
 * ```
 */
export class Client extends Peer {
  constructor(options: PeerOptions) {
    super("clients", options);
  }
}
