/**
 * A reader of `text/event-stream` bodies (the server-sent events format of
 * the HTML standard), for the hub's subscription streams (§5.3). It needs
 * only a `ReadableStream` of bytes, as `fetch` gives in browsers and Node.
 *
 * @module
 */

/** One dispatched event. */
export interface ServerSentEvent {
  /** The `event:` field; `message` when absent. */
  event: string;
  /** The `data:` lines, joined with `\n`. */
  data: string;
}

/** The events of `body`, in order, until it ends. */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerSentEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new EventParser();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
      yield* parser.push(text, done);
      if (done) return;
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

/** Turns chunks of text into events; lines may be split anywhere between chunks. */
export class EventParser {
  #pending = "";
  #event = "";
  #data: string[] = [];

  /** Feeds a chunk; `last` when the stream ended. Returns the events it completed. */
  push(chunk: string, last = false): ServerSentEvent[] {
    this.#pending += chunk;
    const events: ServerSentEvent[] = [];
    for (;;) {
      const end = this.#pending.search(/\r\n|\r|\n/);
      // A "\r" at the end of a chunk may be the first half of "\r\n".
      if (end < 0 || (end === this.#pending.length - 1 && this.#pending[end] === "\r" && !last)) break;
      const line = this.#pending.slice(0, end);
      const width = this.#pending.startsWith("\r\n", end) ? 2 : 1;
      this.#pending = this.#pending.slice(end + width);
      const event = this.#line(line);
      if (event) events.push(event);
    }
    return events;
  }

  #line(line: string): ServerSentEvent | undefined {
    if (line === "") {
      const event =
        this.#data.length > 0 ? { event: this.#event || "message", data: this.#data.join("\n") } : undefined;
      this.#event = "";
      this.#data = [];
      return event;
    }
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.#event = value;
    else if (field === "data") this.#data.push(value);
    return undefined;
  }
}
