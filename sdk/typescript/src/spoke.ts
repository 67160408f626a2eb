/**
 * A spoke: a peer on `/v1/spokes/connect` that serves operations.
 *
 * @module
 */

import { Peer, type PeerOptions } from "./peer.js";

/**
 * A spoke: declares operations with {@link Peer.operation}, then
 * {@link Peer.connect}s and serves them until {@link Peer.close}. One spoke
 * id has one live session: a second connection with the same token takes
 * over, and this one then stops with close code 4409 without reconnecting.
 *
 * ```ts
 * const spoke = new Spoke({ url: "http://127.0.0.1:7700", token: "alk_spoke_..." });
 * spoke.operation({ id: "demo.echo", type: "query" }, (input) => input);
 * await spoke.connect();
 * ```
 */
export class Spoke extends Peer {
  constructor(options: PeerOptions) {
    super("spokes", options);
  }
}
