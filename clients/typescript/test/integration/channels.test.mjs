// Subscriptions on two gateways against the real binaries: join, presence,
// publications from the HTTP API and from a client, once and in order.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { api, channel, client, closeAll, next, subscriptionToken, user, waitFor } from "../support/stack.mjs";

after(closeAll);

describe("channels", () => {
  it("subscribers on two gateways get every publication once, in order, with join and presence", async () => {
    const room = channel("room");
    const [alice, bob] = [user("alice"), user("bob")];
    const first = client(alice, 0);
    const second = client(bob, 1);
    // Subscribed before connect: queued.
    const a = first.subscribe(room);
    first.connect();
    await next(a, "subscribed");
    const joined = next(a, "join");
    const b = second.subscribe(room);
    second.connect();
    await next(b, "subscribed");
    assert.deepEqual(await joined, { channel: room, userId: bob });

    const presence = await b.presence();
    assert.deepEqual(presence, {
      users: [
        { userId: alice, connections: 1 },
        { userId: bob, connections: 1 },
      ].sort((x, y) => x.userId.localeCompare(y.userId)),
      numUsers: 2,
      numConnections: 2,
    });

    const got = { a: [], b: [] };
    a.on("publication", (p) => got.a.push(p.data));
    b.on("publication", (p) => got.b.push(p.data));
    const sent = [];
    for (let i = 0; i < 20; i++) {
      const data = { n: i, from: i % 2 ? "http" : "client" };
      sent.push(data);
      if (i % 2) assert.equal((await api("publish", { channel: room, data })).instances, 2);
      else await a.publish(data);
    }
    await waitFor("every publication on both", () => got.a.length >= 20 && got.b.length >= 20);
    assert.deepEqual(got.a, sent);
    assert.deepEqual(got.b, sent);

    const left = next(a, "leave");
    b.unsubscribe();
    assert.deepEqual(await left, { channel: room, userId: bob });
  });

  it("subscribes with the subscription token getToken gives, and is refused without one", async () => {
    const order = channel("order");
    const name = user("heidi");
    const pulse = client(name, 1);
    const asked = [];
    const sub = pulse.subscribe(order, {
      getToken: async (channel) => {
        asked.push(channel);
        return subscriptionToken(name, channel);
      },
    });
    const refused = pulse.subscribe(channel("order"));
    const refusal = next(refused, "error");
    pulse.connect();
    await next(sub, "subscribed");
    assert.deepEqual(asked, [order]);
    const publication = next(sub, "publication");
    await api("publish", { channel: order, data: { status: "paid" } });
    assert.deepEqual((await publication).data, { status: "paid" });
    assert.equal((await refusal).code, "permission_denied");
    assert.equal(refused.state, "unsubscribed");
  });

  it("rejects a refused request with the server's code", async () => {
    const pulse = client(user("erin"));
    pulse.connect();
    await assert.rejects(pulse.publish(channel("room"), 1), { name: "PulseError", code: "not_subscribed" });
    const refused = pulse.subscribe("nowhere:x");
    const error = await next(refused, "error");
    assert.equal(error.code, "unknown_namespace");
    assert.equal(refused.state, "unsubscribed");
  });
});
