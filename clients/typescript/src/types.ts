/** The client's connection state. */
export type State = "disconnected" | "connecting" | "connected";

/** A subscription's state. */
export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";

/**
 * The part of the WebSocket API the client uses: the browser's, Node 22's
 * global one, or the `ws` package's.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // The events are `any` so that every implementation's own event types
  // fit: the client reads `data` of a message, `code` and `reason` of a close.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

/** A constructor of sockets, such as `WebSocket` or `ws`'s default export. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The options of a `Pulse` client. */
export interface Options {
  /** A token to connect with. Without `getToken`, it is never refreshed. */
  token?: string;
  /**
   * Returns a token. Called to connect when there is no `token`, again
   * ahead of the current token's expiry (the new one is sent on the open
   * socket with `auth`, no reconnect), and after a close with 4401.
   */
  getToken?: () => Promise<string>;
  /** The WebSocket implementation where there is no global one (Node 20: `ws`). */
  WebSocket?: WebSocketConstructor;
  /** The ceiling of the first reconnect delay, in ms (default 500). */
  minReconnectDelay?: number;
  /** The largest reconnect delay, in ms (default 20000). */
  maxReconnectDelay?: number;
  /** How long a request, or connecting, may take before it fails, in ms (default 10000). */
  timeout?: number;
  /** How long before its expiry a token is refreshed, in ms (default 60000). */
  refreshMargin?: number;
  /** Receives one line per notable step, for debugging. Tokens never appear. */
  debug?: (message: string) => void;
}

/** What `connected` tells. */
export interface ConnectedInfo {
  connectionId: string;
  userId: string;
  instanceId: string;
  heartbeatIntervalMs: number;
  /** The user's personal channel, `#<user_id>`. */
  channel: string;
}

/**
 * A connection was lost, or the client stopped: why, and whether it
 * reconnects. Attempts that fail while reconnecting are not reported (see
 * `debug`).
 */
export interface DisconnectedInfo {
  code: number;
  reason: string;
  reconnect: boolean;
}

/** An error the server or the client reported outside any request. */
export interface ErrorInfo {
  code: string;
  message: string;
}

/** A publication on a channel; `offset` where the channel keeps history. */
export interface Publication {
  channel: string;
  data: unknown;
  offset?: number;
}

/** A user's first subscription to a channel anywhere, or their last one gone. */
export interface JoinLeave {
  channel: string;
  userId: string;
}

/** A subscription's answer from the server. */
export interface SubscribedInfo {
  channel: string;
  /** Whether this subscribe asked to recover from a position (a resubscribe). */
  wasRecovering: boolean;
  /** Present when it did: whether every missed publication was delivered. */
  recovered?: boolean;
  offset?: number;
  epoch?: string;
}

/** A subscription ended; `code` is the server's, or `client` for `unsubscribe()`. */
export interface UnsubscribedInfo {
  channel: string;
  code: string;
}

/**
 * A resubscribe could not recover what was missed while the connection was
 * down (`recovered:false`): publications may have been lost, so reload the
 * state from your own source.
 */
export interface UnrecoveredInfo {
  channel: string;
  epoch?: string;
}

/** Who is subscribed to a channel. */
export interface PresenceResult {
  /** Absent above the namespace's `presence_max_users`. */
  users?: { userId: string; connections: number }[];
  numUsers: number;
  numConnections: number;
}

/** The answer to a publish. */
export interface PublishResult {
  offset?: number;
}

/** A position in a channel's history. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** The options of one subscription. */
export interface SubscribeOptions {
  /** Recover from this position (from your own storage) on the first subscribe. */
  since?: StreamPosition;
  /** A subscription token, for namespaces with `authorize = "token"`. */
  token?: string;
  /** Returns a subscription token; called before every (re)subscribe. */
  getToken?: (channel: string) => Promise<string>;
}

/** The events of a `Pulse` client. */
export interface ClientEvents {
  state: State;
  connected: ConnectedInfo;
  disconnected: DisconnectedInfo;
  error: ErrorInfo;
  /** A publication on the user's personal channel (`Send`, or a publish to `#<user_id>`). */
  message: Publication;
  /** A publication on a channel the server subscribed this connection to. */
  publication: Publication;
  /** The server subscribed this connection to a channel (`Channels/Subscribe`). */
  subscribed: { channel: string };
  /** The server ended a subscription that no `Subscription` holds. */
  unsubscribed: UnsubscribedInfo;
  /** The personal channel's missed publications could not be recovered. */
  unrecovered: UnrecoveredInfo;
}

/** The events of a `Subscription`. */
export interface SubscriptionEvents {
  state: SubscriptionState;
  publication: Publication;
  join: JoinLeave;
  leave: JoinLeave;
  subscribed: SubscribedInfo;
  unsubscribed: UnsubscribedInfo;
  unrecovered: UnrecoveredInfo;
  error: ErrorInfo;
}

/**
 * A refused or failed request: `code` is the server's error code, or
 * `timeout` / `disconnected`; `reason` the server's message (`message` is
 * both).
 */
export class PulseError extends Error {
  constructor(
    readonly code: string,
    readonly reason: string,
  ) {
    super(`${code}: ${reason}`);
    this.name = "PulseError";
  }
}
