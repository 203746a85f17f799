// The pure rules: backoff bounds and full jitter, the close-code table,
// token refresh timing, reading a token's expiry.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backoff, closeAction, refreshDelay, tokenExpiry } from "../../dist/index.js";
import { jwt } from "../support/fake.mjs";

describe("backoff", () => {
  it("is bounded by min * 2^attempt, capped at max", () => {
    const ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
    ceilings.forEach((ceiling, attempt) => {
      assert.equal(backoff(attempt, 100, 5000, () => 0), 0, `attempt ${attempt}: the floor is 0`);
      assert.equal(backoff(attempt, 100, 5000, () => 0.999999), ceiling - 1, `attempt ${attempt}: just under ${ceiling}`);
    });
    assert.equal(backoff(1000, 100, 5000, () => 0.999999), 4999, "a huge attempt stays at max");
  });

  it("spreads delays over the whole range (full jitter)", () => {
    const samples = Array.from({ length: 2000 }, () => backoff(3, 100, 5000));
    assert.ok(samples.every((delay) => delay >= 0 && delay < 800), "within [0, 800)");
    assert.ok(samples.some((delay) => delay < 200), "some in the lowest quarter");
    assert.ok(samples.some((delay) => delay >= 600), "some in the highest quarter");
    assert.ok(new Set(samples).size > 100, "not a few fixed values");
  });
});

describe("close codes", () => {
  const table = {
    1000: "retry",
    1001: "retry",
    1006: "retry",
    1009: "retry",
    1011: "retry",
    1013: "retry",
    4400: "stop",
    4401: "token",
    4403: "stop",
    4408: "retry",
    4429: "retry",
  };
  for (const [code, action] of Object.entries(table)) {
    it(`${code}: ${action}`, () => assert.equal(closeAction(Number(code)), action));
  }
});

describe("token refresh timing", () => {
  it("refreshes `margin` before expiry", () => {
    assert.equal(refreshDelay(1_000_000 + 600_000, 1_000_000, 60_000), 540_000);
  });
  it("never in the first half of a short token's life", () => {
    assert.equal(refreshDelay(1_000_000 + 20_000, 1_000_000, 60_000), 10_000);
  });
  it("at once for an expired token, never without an expiry", () => {
    assert.equal(refreshDelay(500, 1_000_000, 60_000), 0);
    assert.equal(refreshDelay(undefined, 1_000_000, 60_000), undefined);
  });
  it("reads exp from a JWT (base64url, no padding)", () => {
    // A claim whose encoding has '-' and '_' and needs padding.
    assert.equal(tokenExpiry(jwt({ sub: "ü>?~", exp: 1_900_000_000 })), 1_900_000_000_000);
    assert.equal(tokenExpiry(jwt({ sub: "a" })), undefined);
    assert.equal(tokenExpiry("not a token"), undefined);
  });
});
