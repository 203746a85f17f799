// A gateway stopped (SIGTERM: a drain with 1001; SIGKILL: 1006) and
// started again on its port: the client reconnects and resubscribes by
// itself; what was published while it was down is recovered where the
// server keeps history.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { api, channel, client, closeAll, history, next, startGateway, stopGateway, user, waitFor } from "../support/stack.mjs";

after(closeAll);

describe("gateway restart", () => {
  for (const [signal, code] of [
    ["SIGTERM", 1001],
    ["SIGKILL", 1006],
  ]) {
    it(`${signal}: reconnects after ${code}, resubscribes, and gets what is published next`, async () => {
      const room = channel("room");
      const pulse = client(user("frank"), 0);
      const sub = pulse.subscribe(room);
      pulse.connect();
      const { connectionId } = await next(pulse, "connected");
      await next(sub, "subscribed");
      const disconnected = next(pulse, "disconnected");
      await stopGateway(0, signal);
      const closed = await disconnected;
      assert.equal(closed.code, code);
      assert.equal(closed.reconnect, true);
      assert.equal(pulse.state, "connecting");
      const reconnected = next(pulse, "connected");
      const resubscribed = next(sub, "subscribed");
      await startGateway(0);
      assert.notEqual((await reconnected).connectionId, connectionId);
      assert.equal((await resubscribed).wasRecovering, true);
      const publication = next(sub, "publication");
      await api("publish", { channel: room, data: "after the restart" });
      assert.equal((await publication).data, "after the restart");
    });
  }

  it("every publication once and in order across a gateway restart", async (t) => {
    const feed = channel("feed");
    const name = user("grace");
    const personal = `#${name}`;
    const pulse = client(name, 0);
    const sub = pulse.subscribe(feed);
    const got = { feed: [], personal: [] };
    const unrecovered = [];
    sub.on("publication", (p) => got.feed.push(p.data));
    pulse.on("message", (p) => got.personal.push(p.data));
    sub.on("unrecovered", () => unrecovered.push(feed));
    pulse.on("unrecovered", () => unrecovered.push(personal));
    const answers = [];
    sub.on("subscribed", (info) => answers.push(info));
    pulse.connect();
    await next(sub, "subscribed");
    const publish = async (from, to) => {
      for (let n = from; n <= to; n++) {
        await api("publish", { channel: feed, data: n });
        await api("publish", { channel: personal, data: n });
      }
    };
    const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

    await publish(1, 10);
    await waitFor("1..10 on both channels", () => got.feed.length >= 10 && got.personal.length >= 10);
    await stopGateway(0, "SIGKILL");
    await publish(11, 20); // while the client has no connection
    const resubscribed = next(sub, "subscribed");
    await startGateway(0);
    const answer = await resubscribed;
    await publish(21, 30);
    await waitFor("30 on both channels", () => got.feed.at(-1) === 30 && got.personal.at(-1) === 30);

    if (answer.recovered === false) {
      // Without history the gap cannot be filled, and the SDK says so;
      // what did arrive is still once and in order.
      assert.deepEqual(got.feed, [...range(1, 10), ...range(21, 30)]);
      assert.deepEqual(got.personal, [...range(1, 10), ...range(21, 30)]);
      assert.deepEqual(unrecovered.sort(), [feed, personal].sort());
      const reason = `the server answered the resubscribe with recovered:false (${history ? "history is configured" : "this build keeps no history: history_size was refused at start"}); pending until history lands`;
      console.log(`# PENDING every publication once and in order across a gateway restart: ${reason}`);
      t.todo(reason);
      return;
    }
    assert.equal(answer.recovered, true);
    assert.deepEqual(got.feed, range(1, 30));
    assert.deepEqual(got.personal, range(1, 30));
    assert.deepEqual(unrecovered, []);
  });
});
