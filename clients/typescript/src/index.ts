/**
 * `@pulse/client`: the client of Pulse, the realtime WebSocket gateway.
 * No runtime dependencies; browsers and Node 20+ (with the `WebSocket`
 * option where there is no global one).
 */
export { Pulse } from "./client.js";
export { Subscription } from "./subscription.js";
export { backoff, closeAction, refreshDelay, tokenExpiry, type CloseAction } from "./policy.js";
export * from "./types.js";
