// The connection against the real binaries: connect, the personal
// channel, a token refreshed in-band past its expiry, a 4403 kick that
// stops reconnecting.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { api, client, closeAll, grpc, mint, next, user, waitFor } from "../support/stack.mjs";

after(closeAll);

describe("connection", () => {
  it("connects with a token from pulse-auth and learns its personal channel", async () => {
    const alice = user("alice");
    const pulse = client(alice);
    pulse.connect();
    const info = await next(pulse, "connected");
    assert.equal(info.userId, alice);
    assert.equal(info.channel, `#${alice}`);
    assert.equal(info.instanceId, "sdk-gateway-1");
    assert.ok(info.heartbeatIntervalMs > 0);
    assert.equal(pulse.state, "connected");
  });

  it("delivers a publication to the personal channel (HTTP API) as `message`", async () => {
    const bob = user("bob");
    const pulse = client(bob, 1);
    pulse.connect();
    await next(pulse, "connected");
    const message = next(pulse, "message");
    const answer = await api("publish", { channel: `#${bob}`, data: { text: "for bob" } });
    assert.equal(answer.instances, 1);
    assert.deepEqual((await message).data, { text: "for bob" });
  });

  it("refreshes a short token in-band: the connection outlives the first token", async () => {
    const carol = user("carol");
    let fetched = 0;
    const pulse = client(carol, 0, {
      getToken: async () => {
        fetched++;
        return mint(carol, "3s");
      },
      refreshMargin: 2000,
    });
    const disconnects = [];
    pulse.on("disconnected", (info) => disconnects.push(info));
    pulse.connect();
    const { connectionId } = await next(pulse, "connected");
    const firstExpiry = Date.now() + 3000;
    // The gateway closes with 4401 at a token's exp (no leeway in this
    // stack): four fetches take past the first token's exp.
    await waitFor("four token fetches", () => fetched >= 4 && Date.now() > firstExpiry);
    // A round trip after it: the socket is open and answering.
    const sub = pulse.subscribe(`room:refresh-${carol}`);
    await next(sub, "subscribed");
    assert.deepEqual(disconnects, []);
    assert.equal(pulse.info.connectionId, connectionId, "the same connection");
  });

  it("stops reconnecting after a 4403 kick (Presence/Disconnect)", async () => {
    const dave = user("dave");
    const log = [];
    const pulse = client(dave, 1, { debug: (line) => log.push(line) });
    const errors = [];
    pulse.on("error", (error) => errors.push(error));
    pulse.connect();
    await next(pulse, "connected");
    const disconnected = next(pulse, "disconnected");
    const closed = await grpc("/pulse.presence.v1.Presence/Disconnect", [dave, "", "kicked by the SDK test"]);
    assert.equal(closed, 1, "one connection asked to close");
    assert.deepEqual(await disconnected, { code: 4403, reason: "kicked by the SDK test", reconnect: false });
    assert.deepEqual(errors, [{ code: "disconnected", message: "kicked by the SDK test" }]);
    assert.equal(pulse.state, "disconnected");
    assert.ok(log.some((line) => line.startsWith("closed 4403") && line.endsWith(": stop")), log.join("\n"));
    assert.ok(!log.some((line) => line.startsWith("reconnecting")), "no reconnect scheduled");
  });
});

describe("a gateway that never answers", () => {
  it("gives up on a socket still connecting after `timeout`, without an uncaught error, and tries again", async () => {
    const { createServer } = await import("node:net");
    const held = [];
    // Takes TCP connections and never answers the upgrade.
    const server = createServer((socket) => held.push(socket));
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { Pulse } = await import("../../dist/index.js");
    const { default: WebSocket } = await import("ws");
    const log = [];
    const pulse = new Pulse(`ws://127.0.0.1:${server.address().port}/ws`, {
      WebSocket,
      token: "t",
      timeout: 200,
      minReconnectDelay: 10,
      maxReconnectDelay: 20,
      debug: (line) => log.push(line),
    });
    try {
      pulse.connect();
      await waitFor("three attempts", () => held.length >= 3);
      assert.ok(log.some((line) => line.startsWith("closed 4408 no connected within the timeout: retry")), log.join("\n"));
      assert.equal(pulse.state, "connecting");
    } finally {
      pulse.disconnect();
      for (const socket of held) socket.destroy();
      server.close();
    }
  });
});
