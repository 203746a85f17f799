// A WebSocket the unit tests drive by hand, and helpers for Node's fake
// clock (node:test's mock.timers, which also moves Date.now).
import { mock } from "node:test";

/** Every socket the client under test made, in order. */
export const sockets = [];

export class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = undefined;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    sockets.push(this);
  }
  send(text) {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(text));
  }
  close(code) {
    this.closedWith = code ?? 1005;
    this.readyState = 3;
  }
  // The server's side.
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  /** Opens and answers the `auth` with `connected`. */
  connect(extra = {}) {
    this.open();
    this.receive({
      type: "connected",
      connection_id: `c${sockets.indexOf(this)}`,
      user_id: "u",
      instance_id: "gw",
      heartbeat_interval_ms: 1000,
      channel: "#u",
      ...extra,
    });
  }
  /** The frames sent of one type. */
  of(type) {
    return this.sent.filter((frame) => frame.type === type);
  }
}

/** Resets the socket list and starts the fake clock at `now`. */
export function fakeClock(now = 1_000_000) {
  sockets.length = 0;
  mock.timers.enable({ apis: ["setTimeout", "Date"], now });
  return {
    tick: (ms) => mock.timers.tick(ms),
    reset: () => mock.timers.reset(),
  };
}

/** Lets pending promise callbacks (token fetches, answers) run. */
export async function settle() {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** The last socket made. */
export function last() {
  return sockets[sockets.length - 1];
}

/** A JWT-shaped token (unsigned: the client only reads `exp`). */
export function jwt(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.signature`;
}

/** Records every event of `emitter` named in `names`, as [name, value]. */
export function record(emitter, names) {
  const seen = [];
  for (const name of names) emitter.on(name, (value) => seen.push([name, value]));
  return seen;
}
