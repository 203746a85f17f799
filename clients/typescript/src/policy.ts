/**
 * The pure rules of the connection, apart from any socket or timer so that
 * they can be tested alone: the reconnect delay, what a close code means,
 * and when a token is refreshed.
 */

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a
 * loss): exponential backoff with full jitter, a uniformly random delay in
 * `[0, min(maxDelay, minDelay * 2^attempt))`, so that clients cut off
 * together do not come back together.
 */
export function backoff(
  attempt: number,
  minDelay: number,
  maxDelay: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 31));
  return Math.floor(random() * ceiling);
}

/**
 * What the client does after a close: `retry` (with backoff), `token`
 * (retry only with a new token from `getToken`), or `stop` (report it and
 * stay disconnected).
 */
export type CloseAction = "retry" | "token" | "stop";

/**
 * The close-code table. 4401: the token was refused or expired, so only a
 * new one can help. 4403 (disconnected or blocked by the server, another
 * user's token) and 4400 (a malformed message: a client bug that a
 * reconnect would repeat) stop. Everything else, among them 1001 (server
 * going away), 1006 (connection lost), 1013 (try again later), 4408
 * (heartbeat or authentication timeout) and 4429 (rate limited, too many
 * connections, slow consumer), is transient and retried with backoff.
 */
export function closeAction(code: number): CloseAction {
  if (code === 4401) return "token";
  if (code === 4403 || code === 4400) return "stop";
  return "retry";
}

/**
 * When a token is refreshed, in milliseconds from `now`: `margin` before it
 * expires, but never in the first half of its remaining life, so that a
 * short-lived token is not refreshed in a loop. `undefined` when the token
 * carries no expiry (it is never refreshed ahead of time).
 */
export function refreshDelay(
  expiresAt: number | undefined,
  now: number,
  margin: number,
): number | undefined {
  if (expiresAt === undefined) return undefined;
  const left = Math.max(0, expiresAt - now);
  return left - Math.min(margin, left / 2);
}

/** The `exp` of a JWT in milliseconds since the epoch, if it has one. */
export function tokenExpiry(token: string): number | undefined {
  try {
    const payload = token.split(".")[1] ?? "";
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const claims: unknown = JSON.parse(atob(base64));
    const exp = (claims as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
