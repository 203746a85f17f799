// The connection on a fake clock and a fake socket: authentication,
// reconnect delays, what each close code does, token refresh, request
// timeouts, the heartbeat, the browser's offline/online events.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { Pulse } from "../../dist/index.js";
import { FakeSocket, fakeClock, jwt, last, record, settle, sockets } from "../support/fake.mjs";

let clock;
beforeEach(() => {
  clock = fakeClock();
});
afterEach(() => {
  clock.reset();
  mock.restoreAll();
});

/** A heartbeat longer than any test: no silence timeout in the way. */
const QUIET = { heartbeat_interval_ms: 3_600_000 };

function client(options = {}) {
  return new Pulse("ws://gw/ws", {
    WebSocket: FakeSocket,
    token: "t0",
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    timeout: 5000,
    ...options,
  });
}

describe("connecting", () => {
  it("authenticates with the first message, then is connected", async () => {
    const pulse = client();
    const seen = record(pulse, ["state", "connected"]);
    pulse.connect();
    assert.equal(pulse.state, "connecting");
    last().connect();
    assert.deepEqual(last().sent[0], { type: "auth", token: "t0" });
    assert.equal(pulse.state, "connected");
    assert.deepEqual(seen, [
      ["state", "connecting"],
      ["state", "connected"],
      ["connected", { connectionId: "c0", userId: "u", instanceId: "gw", heartbeatIntervalMs: 1000, channel: "#u" }],
    ]);
    assert.equal(last().url, "ws://gw/ws", "the token is not in the URL");
  });

  it("gives up on a socket that does not say connected within the timeout, and tries again", () => {
    mock.method(Math, "random", () => 0.5);
    const pulse = client();
    const seen = record(pulse, ["disconnected"]);
    pulse.connect();
    last().open();
    clock.tick(4999);
    assert.equal(sockets[0].closedWith, undefined);
    clock.tick(1);
    assert.equal(sockets[0].closedWith, 1005, "closed by the client");
    clock.tick(50);
    assert.equal(sockets.length, 2, "a new attempt after the backoff");
    assert.deepEqual(seen, [], "a failed attempt is no disconnection");
  });
});

describe("reconnecting", () => {
  it("waits a full-jitter backoff that doubles per attempt up to the max, and resets once connected", () => {
    mock.method(Math, "random", () => 0.5);
    const pulse = client();
    pulse.connect();
    // Ceilings 100, 200, 400, 800, 1000, 1000: the delays are half of them.
    for (const delay of [50, 100, 200, 400, 500, 500]) {
      const before = sockets.length;
      last().serverClose(1006);
      assert.equal(pulse.state, "connecting");
      clock.tick(delay - 1);
      assert.equal(sockets.length, before, `no attempt before ${delay} ms`);
      clock.tick(1);
      assert.equal(sockets.length, before + 1, `an attempt at ${delay} ms`);
    }
    last().connect();
    last().serverClose(1006);
    clock.tick(49);
    const before = sockets.length;
    clock.tick(1);
    assert.equal(sockets.length, before + 1, "back to the first delay after a connection");
  });

  for (const code of [1001, 1006, 1013, 4408, 4429]) {
    it(`${code} reconnects`, () => {
      const pulse = client();
      const seen = record(pulse, ["disconnected"]);
      pulse.connect();
      last().connect();
      last().serverClose(code, "why");
      assert.deepEqual(seen, [["disconnected", { code, reason: "why", reconnect: true }]]);
      clock.tick(100);
      assert.equal(sockets.length, 2);
      last().connect();
      assert.equal(pulse.state, "connected");
    });
  }

  for (const code of [4400, 4403]) {
    it(`${code} stops and reports`, async () => {
      const pulse = client();
      const seen = record(pulse, ["disconnected", "error"]);
      pulse.connect();
      last().connect();
      const queued = pulse.publish("room:a", 1);
      last().receive({ type: "error", code: "disconnected", message: "bye" });
      last().serverClose(code, "bye");
      assert.deepEqual(seen, [
        ["error", { code: "disconnected", message: "bye" }],
        ["disconnected", { code, reason: "bye", reconnect: false }],
      ]);
      assert.equal(pulse.state, "disconnected");
      await assert.rejects(queued, { code: "disconnected" });
      clock.tick(60_000);
      assert.equal(sockets.length, 1, "never reconnects");
    });
  }

  it("a 4403 at authentication (a blocked user) is reported and stops", () => {
    const pulse = client();
    const seen = record(pulse, ["disconnected", "error"]);
    pulse.connect();
    last().open();
    last().receive({ type: "error", code: "blocked", message: "spam; 59 s left" });
    last().serverClose(4403, "blocked");
    assert.deepEqual(seen, [
      ["error", { code: "blocked", message: "spam; 59 s left" }],
      ["disconnected", { code: 4403, reason: "blocked", reconnect: false }],
    ]);
    clock.tick(60_000);
    assert.equal(sockets.length, 1);
  });

  it("4401 with a fixed token stops", () => {
    const pulse = client();
    pulse.connect();
    last().connect();
    last().serverClose(4401, "token_expired");
    assert.equal(pulse.state, "disconnected");
    clock.tick(60_000);
    assert.equal(sockets.length, 1);
  });

  it("4401 retries only with a new token from getToken", async () => {
    const tokens = ["a", "b", "b"];
    const getToken = mock.fn(async () => tokens.shift());
    const pulse = client({ token: undefined, getToken });
    const errors = record(pulse, ["error"]);
    pulse.connect();
    await settle();
    last().connect();
    assert.equal(last().sent[0].token, "a");
    last().serverClose(4401, "token_expired");
    clock.tick(100);
    await settle();
    assert.equal(getToken.mock.callCount(), 2);
    last().open();
    assert.equal(last().sent[0].token, "b", "the new token");
    last().serverClose(4401, "bad_signature");
    clock.tick(200);
    await settle();
    assert.equal(getToken.mock.callCount(), 3);
    assert.equal(sockets.length, 2, "the same refused token again: no socket");
    assert.equal(pulse.state, "disconnected");
    assert.equal(errors.at(-1)[1].code, "token_refused");
  });

  it("disconnect() closes with 1000 and stops", () => {
    const pulse = client();
    const seen = record(pulse, ["disconnected"]);
    pulse.connect();
    last().connect();
    pulse.disconnect();
    assert.equal(sockets[0].closedWith, 1000);
    assert.deepEqual(seen, [["disconnected", { code: 1000, reason: "disconnect() called", reconnect: false }]]);
    clock.tick(60_000);
    assert.equal(sockets.length, 1);
  });
});

describe("token refresh", () => {
  it("calls getToken `refreshMargin` before expiry and sends the token in-band, without a reconnect", async () => {
    let n = 0;
    const getToken = mock.fn(async () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 120, n: n++ }));
    const pulse = client({ token: undefined, getToken, refreshMargin: 30_000 });
    pulse.connect();
    await settle();
    last().connect(QUIET);
    assert.equal(getToken.mock.callCount(), 1);
    clock.tick(89_999);
    await settle();
    assert.equal(getToken.mock.callCount(), 1, "not before 90 s");
    clock.tick(1);
    await settle();
    assert.equal(getToken.mock.callCount(), 2, "at 90 s");
    const auths = last().of("auth");
    assert.equal(auths.length, 2);
    assert.notEqual(auths[1].token, auths[0].token);
    assert.equal(sockets.length, 1, "the same socket");
    clock.tick(90_000);
    await settle();
    assert.equal(getToken.mock.callCount(), 3, "and again 90 s after the new token");
    assert.equal(sockets.length, 1);
  });

  it("tries the refresh again when the server could not check it", async () => {
    mock.method(Math, "random", () => 0.5);
    const getToken = mock.fn(async () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 120 }));
    const pulse = client({ token: undefined, getToken, refreshMargin: 30_000 });
    pulse.connect();
    await settle();
    last().connect(QUIET);
    clock.tick(90_000);
    await settle();
    assert.equal(getToken.mock.callCount(), 2);
    last().receive({ type: "error", code: "auth_unavailable", message: "pulse-auth is away" });
    clock.tick(50);
    await settle();
    assert.equal(getToken.mock.callCount(), 3, "after a backoff delay");
    assert.equal(last().of("auth").length, 3);
  });
});

describe("requests", () => {
  it("reject with `timeout` after the timeout, not before", async () => {
    const pulse = client();
    pulse.connect();
    last().connect(QUIET);
    let outcome;
    pulse.publish("room:a", { text: "hi" }).then(
      () => (outcome = "resolved"),
      (error) => (outcome = error.code),
    );
    clock.tick(4999);
    await settle();
    assert.equal(outcome, undefined);
    clock.tick(1);
    await settle();
    assert.equal(outcome, "timeout");
  });

  it("are queued until connected, answered by id, and reject with the server's code", async () => {
    const pulse = client();
    pulse.connect();
    const published = pulse.publish("room:a", { text: "hi" });
    const refused = pulse.publish("news:b", 1);
    last().connect();
    const [first, second] = last().of("publish");
    assert.deepEqual(first, { type: "publish", channel: "room:a", data: { text: "hi" }, id: first.id });
    last().receive({ type: "error", id: second.id, code: "publish_not_allowed", message: "no" });
    last().receive({ type: "published", id: first.id, offset: 7 });
    assert.deepEqual(await published, { offset: 7 });
    await assert.rejects(refused, { name: "PulseError", code: "publish_not_allowed" });
  });

  it("sent on a socket that closes reject with `disconnected`", async () => {
    const pulse = client();
    pulse.connect();
    last().connect();
    const published = pulse.publish("room:a", 1);
    last().serverClose(1006);
    await assert.rejects(published, { code: "disconnected" });
  });
});

describe("heartbeat", () => {
  it("pings every interval and drops a socket silent for two intervals", () => {
    const pulse = client();
    const seen = record(pulse, ["disconnected"]);
    pulse.connect();
    last().connect();
    clock.tick(1000);
    assert.equal(last().of("ping").length, 1);
    last().receive({ type: "pong" });
    clock.tick(1999);
    assert.equal(seen.length, 0, "heard 1999 ms ago");
    assert.equal(last().of("ping").length, 2);
    clock.tick(1);
    assert.deepEqual(seen[0][1], { code: 4408, reason: "nothing heard for two heartbeat intervals", reconnect: true });
    assert.equal(pulse.state, "connecting");
    clock.tick(100);
    assert.equal(sockets.length, 2, "reconnects");
  });
});

describe("offline and online", () => {
  it("drops the socket when offline, waits, and reconnects at once when online", () => {
    const target = new EventTarget();
    globalThis.addEventListener = target.addEventListener.bind(target);
    globalThis.removeEventListener = target.removeEventListener.bind(target);
    const navigator = { onLine: true };
    Object.defineProperty(globalThis, "navigator", { value: navigator, configurable: true });
    try {
      const pulse = client();
      pulse.connect();
      last().connect();
      navigator.onLine = false;
      target.dispatchEvent(new Event("offline"));
      assert.equal(pulse.state, "connecting");
      clock.tick(60_000);
      assert.equal(sockets.length, 1, "no attempt while offline");
      navigator.onLine = true;
      target.dispatchEvent(new Event("online"));
      assert.equal(sockets.length, 2, "at once");
      last().connect();
      pulse.disconnect();
      target.dispatchEvent(new Event("online"));
      assert.equal(sockets.length, 2, "listeners removed");
    } finally {
      delete globalThis.addEventListener;
      delete globalThis.removeEventListener;
      delete globalThis.navigator;
    }
  });
});
