// Subscriptions on a fake socket: queued before connect, resubscribed
// after a reconnect with `since`, recovered publications delivered once
// and in order, `recovered:false` surfaced, the server's `resubscribe`,
// the personal channel.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Pulse } from "../../dist/index.js";
import { FakeSocket, fakeClock, last, record, settle } from "../support/fake.mjs";

let clock;
beforeEach(() => {
  clock = fakeClock();
});
afterEach(() => clock.reset());

function connected() {
  const pulse = new Pulse("ws://gw/ws", { WebSocket: FakeSocket, token: "t", minReconnectDelay: 100, timeout: 5000 });
  pulse.connect();
  last().connect();
  return pulse;
}

/** Closes the socket as a lost connection and lets the client reconnect. */
function reconnect(extra = {}) {
  last().serverClose(1006);
  clock.tick(100);
  last().connect(extra);
}

/** Answers the last `subscribe` sent on the current socket. */
function answerSubscribe(fields = {}) {
  const request = last().of("subscribe").at(-1);
  last().receive({ type: "subscribed", id: request.id, channel: request.channel, ...fields });
  return request;
}

const data = (events) => events.filter(([name]) => name === "publication").map(([, p]) => p.data);

describe("subscriptions", () => {
  it("made before connect are sent once connected, without since", async () => {
    const pulse = new Pulse("ws://gw/ws", { WebSocket: FakeSocket, token: "t" });
    const sub = pulse.subscribe("room:a");
    assert.equal(sub.state, "subscribing");
    pulse.connect();
    last().connect();
    await settle();
    const request = answerSubscribe();
    assert.deepEqual(request, { type: "subscribe", channel: "room:a", id: request.id });
    await settle();
    assert.equal(sub.state, "subscribed");
    assert.equal(pulse.subscribe("room:a"), sub, "one subscription per channel");
  });

  it("resubscribe after a reconnect with since, and deliver the recovered publications once, in order", async () => {
    const pulse = connected();
    const sub = pulse.subscribe("feed:a");
    const events = record(sub, ["publication", "subscribed", "unrecovered"]);
    await settle();
    answerSubscribe({ offset: 3, epoch: "e1" });
    await settle();
    last().receive({ type: "publication", channel: "feed:a", offset: 4, data: "four" });
    last().receive({ type: "publication", channel: "feed:a", offset: 4, data: "four again" });
    reconnect();
    await settle();
    const request = last().of("subscribe").at(-1);
    assert.deepEqual(request.since, { offset: 4, epoch: "e1" });
    answerSubscribe({
      offset: 6,
      epoch: "e1",
      recovered: true,
      publications: [
        { offset: 4, data: "four, already seen" },
        { offset: 5, data: "five" },
        { offset: 6, data: "six" },
      ],
    });
    await settle();
    last().receive({ type: "publication", channel: "feed:a", offset: 6, data: "six again" });
    last().receive({ type: "publication", channel: "feed:a", offset: 7, data: "seven" });
    assert.deepEqual(data(events), ["four", "five", "six", "seven"]);
    const subscribed = events.filter(([name]) => name === "subscribed").map(([, info]) => info);
    assert.deepEqual(subscribed[1], { channel: "feed:a", wasRecovering: true, recovered: true, offset: 6, epoch: "e1" });
    assert.equal(events.filter(([name]) => name === "unrecovered").length, 0);
    assert.equal(sub.offset, 7);
  });

  it("surface recovered:false, and start over in a new epoch", async () => {
    const pulse = connected();
    const sub = pulse.subscribe("feed:a");
    const events = record(sub, ["publication", "unrecovered"]);
    await settle();
    answerSubscribe({ offset: 10, epoch: "e1" });
    await settle();
    reconnect();
    await settle();
    assert.deepEqual(last().of("subscribe").at(-1).since, { offset: 10, epoch: "e1" });
    await settle();
    answerSubscribe({ offset: 2, epoch: "e2", recovered: false, publications: [] });
    await settle();
    last().receive({ type: "publication", channel: "feed:a", offset: 3, data: "three of e2" });
    assert.deepEqual(events, [
      ["unrecovered", { channel: "feed:a", epoch: "e2" }],
      ["publication", { channel: "feed:a", offset: 3, data: "three of e2" }],
    ]);
  });

  it("in a namespace without history, send since with no position and surface the server's recovered:false", async () => {
    const pulse = connected();
    const sub = pulse.subscribe("room:a");
    const events = record(sub, ["unrecovered"]);
    await settle();
    answerSubscribe();
    await settle();
    reconnect();
    await settle();
    assert.deepEqual(last().of("subscribe").at(-1).since, { offset: 0, epoch: "" });
    answerSubscribe({ recovered: false });
    await settle();
    assert.deepEqual(events, [["unrecovered", { channel: "room:a" }]]);
  });

  it("subscribe again with since when the server asks (unsubscribed, code resubscribe), with no event", async () => {
    const pulse = connected();
    const sub = pulse.subscribe("feed:a");
    const events = record(sub, ["unsubscribed", "publication"]);
    await settle();
    answerSubscribe({ offset: 1, epoch: "e" });
    await settle();
    last().receive({ type: "unsubscribed", channel: "feed:a", code: "resubscribe" });
    await settle();
    assert.deepEqual(last().of("subscribe").at(-1).since, { offset: 1, epoch: "e" });
    answerSubscribe({ offset: 2, epoch: "e", recovered: true, publications: [{ offset: 2, data: "two" }] });
    await settle();
    assert.deepEqual(events, [["publication", { channel: "feed:a", offset: 2, data: "two" }]]);
    assert.equal(sub.state, "subscribed");
  });

  it("end when the server unsubscribes them or refuses them", async () => {
    const pulse = connected();
    const ended = pulse.subscribe("room:a");
    const refused = pulse.subscribe("order:1");
    const events = record(ended, ["unsubscribed"]);
    const refusals = record(refused, ["error", "unsubscribed"]);
    await settle();
    const [first, second] = last().of("subscribe");
    last().receive({ type: "subscribed", id: first.id, channel: "room:a" });
    last().receive({ type: "error", id: second.id, code: "permission_denied", message: "a subscription token is needed" });
    last().receive({ type: "unsubscribed", channel: "room:a", code: "unsubscribed_by_server" });
    await settle();
    assert.deepEqual(events, [["unsubscribed", { channel: "room:a", code: "unsubscribed_by_server" }]]);
    assert.deepEqual(refusals, [
      ["error", { code: "permission_denied", message: "a subscription token is needed" }],
      ["unsubscribed", { channel: "order:1", code: "permission_denied" }],
    ]);
    assert.equal(pulse.getSubscription("room:a"), undefined);
    reconnect();
    await settle();
    const resubscribed = last().of("subscribe").filter((frame) => frame.channel !== "#u");
    assert.deepEqual(resubscribed, [], "neither is resubscribed");
  });

  it("retry a refusal that may pass later (unavailable) with backoff", async () => {
    const pulse = connected();
    const sub = pulse.subscribe("room:a");
    await settle();
    const first = last().of("subscribe")[0];
    last().receive({ type: "error", id: first.id, code: "unavailable", message: "Redis" });
    await settle();
    clock.tick(100);
    await settle();
    assert.equal(last().of("subscribe").length, 2);
    answerSubscribe();
    await settle();
    assert.equal(sub.state, "subscribed");
  });

  it("carry a subscription token from getToken, fetched again for every subscribe; a failed fetch is retried", async () => {
    const pulse = connected();
    let n = 0;
    const sub = pulse.subscribe("order:1", {
      getToken: async (channel) => {
        n++;
        if (n === 2) throw new Error("backend down");
        return `${channel}-token-${n}`;
      },
    });
    const errors = record(sub, ["error"]);
    await settle();
    assert.equal(last().of("subscribe")[0].token, "order:1-token-1");
    answerSubscribe();
    await settle();
    reconnect();
    await settle();
    assert.deepEqual(errors, [["error", { code: "token_unavailable", message: "Error: backend down" }]]);
    assert.equal(last().of("subscribe").filter((frame) => frame.channel === "order:1").length, 0);
    clock.tick(100);
    await settle();
    assert.equal(last().of("subscribe").find((frame) => frame.channel === "order:1").token, "order:1-token-3");
  });

  it("carry join, leave and presence", async () => {
    const pulse = connected();
    const sub = pulse.subscribe("room:a");
    const events = record(sub, ["join", "leave"]);
    await settle();
    answerSubscribe();
    last().receive({ type: "join", channel: "room:a", user_id: "bob" });
    last().receive({ type: "leave", channel: "room:a", user_id: "bob" });
    const presence = sub.presence();
    const request = last().of("presence")[0];
    last().receive({
      type: "presence",
      id: request.id,
      channel: "room:a",
      users: [{ user_id: "u", connections: 2 }],
      num_users: 1,
      num_connections: 2,
    });
    assert.deepEqual(await presence, { users: [{ userId: "u", connections: 2 }], numUsers: 1, numConnections: 2 });
    assert.deepEqual(events, [
      ["join", { channel: "room:a", userId: "bob" }],
      ["leave", { channel: "room:a", userId: "bob" }],
    ]);
  });

  it("unsubscribe() tells the server and stops the events", async () => {
    const pulse = connected();
    const sub = pulse.subscribe("room:a");
    const events = record(sub, ["publication", "unsubscribed"]);
    await settle();
    answerSubscribe();
    sub.unsubscribe();
    assert.equal(last().of("unsubscribe")[0].channel, "room:a");
    last().receive({ type: "publication", channel: "room:a", data: 1 });
    assert.deepEqual(events, [["unsubscribed", { channel: "room:a", code: "client" }]]);
  });
});

describe("the personal channel", () => {
  it("delivers `message`, and after a reconnect recovers from its position, live publications held until the answer", async () => {
    const pulse = new Pulse("ws://gw/ws", { WebSocket: FakeSocket, token: "t", minReconnectDelay: 100 });
    const events = record(pulse, ["message", "unrecovered"]);
    pulse.connect();
    last().connect({ offset: 5, epoch: "p1" });
    last().receive({ type: "publication", channel: "#u", offset: 6, data: "six" });
    reconnect({ offset: 8, epoch: "p1" });
    await settle();
    const request = last().of("subscribe")[0];
    assert.deepEqual(request, { type: "subscribe", channel: "#u", since: { offset: 6, epoch: "p1" }, id: request.id });
    // A live publication the server sent before the answer.
    last().receive({ type: "publication", channel: "#u", offset: 9, data: "nine" });
    answerSubscribe({
      offset: 8,
      epoch: "p1",
      recovered: true,
      publications: [
        { offset: 7, data: "seven" },
        { offset: 8, data: "eight" },
      ],
    });
    await settle();
    assert.deepEqual(data(events.map(([name, value]) => [name === "message" ? "publication" : name, value])), [
      "six",
      "seven",
      "eight",
      "nine",
    ]);
  });

  it("surfaces recovered:false as the client's `unrecovered`", async () => {
    const pulse = new Pulse("ws://gw/ws", { WebSocket: FakeSocket, token: "t", minReconnectDelay: 100 });
    const events = record(pulse, ["unrecovered"]);
    pulse.connect();
    last().connect();
    reconnect();
    await settle();
    assert.deepEqual(last().of("subscribe")[0].since, { offset: 0, epoch: "" });
    answerSubscribe({ recovered: false });
    await settle();
    assert.deepEqual(events, [["unrecovered", { channel: "#u" }]]);
  });
});
