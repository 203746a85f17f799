import { Emitter } from "./emitter.js";
import { backoff, closeAction, refreshDelay, tokenExpiry } from "./policy.js";
import { Subscription, type Frame } from "./subscription.js";
import {
  PulseError,
  type ClientEvents,
  type ConnectedInfo,
  type Options,
  type PublishResult,
  type State,
  type SubscribeOptions,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./types.js";

interface Request {
  frame: Frame;
  resolve: (answer: Frame) => void;
  reject: (error: PulseError) => void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
}

type TimerName = "reconnect" | "ping" | "silence" | "refresh";

/** The settings a `Subscription` reads. */
interface Settings {
  minReconnectDelay: number;
  maxReconnectDelay: number;
  timeout: number;
  refreshMargin: number;
}

/**
 * A connection to a Pulse gateway that stays up: it authenticates with the
 * first message, reconnects with exponential backoff and full jitter when
 * the close code allows it, refreshes the token in-band before it expires,
 * pings every heartbeat interval and treats two silent intervals as a dead
 * socket, and resubscribes and recovers every subscription after a
 * reconnect.
 */
export class Pulse extends Emitter<ClientEvents> {
  /** Where the connection is: `connecting` covers the wait before a reconnect too. */
  state: State = "disconnected";
  /** What the current connection's `connected` said. */
  info: ConnectedInfo | undefined;
  /** @internal */
  readonly _settings: Settings;
  private readonly WebSocket: WebSocketConstructor;
  private ws: WebSocketLike | null = null;
  private stopped = true;
  /** Bumped by every `open` and `disconnect`, so that a stale token fetch does nothing. */
  private generation = 0;
  private attempt = 0;
  private refreshAttempt = 0;
  private token: string | undefined;
  /** The token a 4401 refused: `getToken` must return another. */
  private refused: string | undefined;
  private nextId = 0;
  private readonly requests = new Map<number, Request>();
  private readonly subscriptions = new Map<string, Subscription>();
  private personal: Subscription | undefined;
  private readonly timers: Partial<Record<TimerName, ReturnType<typeof setTimeout>>> = {};

  constructor(
    readonly url: string,
    private readonly options: Options = {},
  ) {
    super();
    const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocket) throw new Error("no global WebSocket here: pass the WebSocket option");
    if (options.token === undefined && !options.getToken) throw new Error("a token or getToken is needed");
    this.WebSocket = WebSocket;
    this.token = options.token;
    this._settings = {
      minReconnectDelay: options.minReconnectDelay ?? 500,
      maxReconnectDelay: options.maxReconnectDelay ?? 20000,
      timeout: options.timeout ?? 10000,
      refreshMargin: options.refreshMargin ?? 60000,
    };
  }

  /** Connects, and keeps connecting until `disconnect()` or a close code that stops. */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.network(true);
    void this.open();
  }

  /** Closes the connection and stops reconnecting; subscriptions are kept for the next `connect()`. */
  disconnect(): void {
    if (this.stopped) return;
    this.halt();
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000);
    this.lost();
    this.emit("disconnected", { code: 1000, reason: "disconnect() called", reconnect: false });
  }

  /**
   * The subscription to `channel`, made and subscribed (queued until
   * connected) if there is none.
   */
  subscribe(channel: string, options?: SubscribeOptions): Subscription {
    let subscription = this.subscriptions.get(channel);
    if (!subscription) {
      subscription = new Subscription(this, channel, options);
      subscription.subscribe();
    }
    return subscription;
  }

  /** The subscription to `channel`, if there is one. */
  getSubscription(channel: string): Subscription | undefined {
    return this.subscriptions.get(channel);
  }

  /** Publishes to a channel (namespaces with `allow_publish`, channels this connection is subscribed to). */
  async publish(channel: string, data: unknown): Promise<PublishResult> {
    const answer = await this._request({ type: "publish", channel, data });
    return typeof answer.offset === "number" ? { offset: answer.offset } : {};
  }

  /**
   * @internal Sends a request (once connected) and resolves with its answer,
   * or rejects with the server's error code, `timeout` or `disconnected`.
   */
  _request(frame: Frame): Promise<Frame> {
    return new Promise((resolve, reject) => {
      const id = ++this.nextId;
      const timer = setTimeout(() => {
        this.requests.delete(id);
        reject(new PulseError("timeout", `no answer to ${frame.type} within ${this._settings.timeout} ms`));
      }, this._settings.timeout);
      const request: Request = { frame: { ...frame, id }, resolve, reject, timer, sent: false };
      this.requests.set(id, request);
      if (this.state === "connected") this.sendRequest(request);
    });
  }

  /** @internal */
  _hold(subscription: Subscription): void {
    this.subscriptions.set(subscription.channel, subscription);
  }

  /** @internal */
  _release(subscription: Subscription): void {
    if (this.subscriptions.get(subscription.channel) === subscription) {
      this.subscriptions.delete(subscription.channel);
    }
  }

  /** @internal */
  _debug(message: string): void {
    this.options.debug?.(message);
  }

  /** @internal Gives up on the current socket, as if it had closed with `code`. */
  _drop(code: number, reason: string): void {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Closing a socket that is still connecting reports an error (`ws`
    // throws one that has no listener): keep a listener that ignores it.
    ws.onerror = () => {};
    ws.close();
    this.closed(code, reason);
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.setState("connecting");
    let token = this.token;
    if (token === undefined) {
      try {
        token = await this.options.getToken!();
      } catch (error) {
        if (generation !== this.generation) return;
        this.emit("error", { code: "token_unavailable", message: String(error) });
        this.reconnect();
        return;
      }
      if (generation !== this.generation) return;
      if (token === this.refused) {
        this.emit("error", { code: "token_refused", message: "getToken returned the token the server refused" });
        this.halt();
        return;
      }
      this.token = token;
    }
    let ws: WebSocketLike;
    try {
      ws = new this.WebSocket(this.url);
    } catch (error) {
      this.emit("error", { code: "bad_url", message: String(error) });
      this.halt();
      return;
    }
    this._debug(`connecting to ${this.url}`);
    this.ws = ws;
    const auth = JSON.stringify({ type: "auth", token });
    ws.onopen = () => ws.send(auth);
    ws.onmessage = (event: { data: unknown }) => {
      if (this.ws === ws) this.receive(String(event.data));
    };
    ws.onclose = (event: { code: number; reason: string }) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.closed(event.code, String(event.reason));
    };
    ws.onerror = () => {
      // A close follows, with the code that says what to do.
    };
    this.timer("silence", this._settings.timeout, () => this._drop(4408, "no connected within the timeout"));
  }

  private receive(text: string): void {
    let message: Frame;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (typeof message !== "object" || message === null) return;
    if (this.state === "connected") this.heard();
    const { type, channel } = message;
    if (typeof message.id === "number") {
      // An answer; one whose request timed out is dropped.
      const request = this.requests.get(message.id);
      if (!request) return;
      this.requests.delete(message.id);
      clearTimeout(request.timer);
      if (type === "error") request.reject(new PulseError(message.code, message.message));
      else request.resolve(message);
      return;
    }
    const subscription = channel === this.personal?.channel ? this.personal : this.subscriptions.get(channel);
    switch (type) {
      case "connected":
        this.connected(message);
        break;
      case "publication": {
        const publication = { channel, data: message.data, ...(typeof message.offset === "number" ? { offset: message.offset } : {}) };
        if (subscription) subscription._publication(publication);
        else this.emit("publication", publication);
        break;
      }
      case "join":
      case "leave":
        subscription?._presence(type, message.user_id);
        break;
      case "subscribed":
        if (!subscription) this.emit("subscribed", { channel });
        break;
      case "unsubscribed":
        if (subscription) subscription._ended(message.code);
        else this.emit("unsubscribed", { channel, code: message.code });
        break;
      case "error":
        this.emit("error", { code: message.code, message: message.message });
        // A refresh that was not checked: the token stays; try again later.
        if (this.state === "connected" && (message.code === "auth_unavailable" || message.code === "rate_limited")) {
          this.timer("refresh", this.delay(this.refreshAttempt++), () => void this.refresh());
        }
        break;
    }
  }

  private connected(message: Frame): void {
    this.attempt = 0;
    this.refused = undefined;
    const heartbeat = message.heartbeat_interval_ms;
    this.info = {
      connectionId: message.connection_id,
      userId: message.user_id,
      instanceId: message.instance_id,
      heartbeatIntervalMs: heartbeat,
      channel: message.channel,
    };
    this.setState("connected");
    this._debug(`connected to ${this.info.instanceId}`);
    this.heard();
    const ping = () => {
      this.send({ type: "ping" });
      this.timer("ping", heartbeat, ping);
    };
    this.timer("ping", heartbeat, ping);
    this.scheduleRefresh();
    if (this.personal && this.personal.channel === message.channel) {
      // A reconnect: recover what the personal channel missed.
      void this.personal._send();
    } else {
      this.personal = new Subscription(this, message.channel);
      this.personal.on("publication", (publication) => this.emit("message", publication));
      this.personal.on("unrecovered", (info) => this.emit("unrecovered", info));
      this.personal.on("error", (info) => this.emit("error", info));
      this.personal._personal(message.offset, message.epoch);
    }
    for (const subscription of this.subscriptions.values()) void subscription._send();
    for (const request of this.requests.values()) if (!request.sent) this.sendRequest(request);
    this.emit("connected", this.info);
  }

  /** Any message proves the socket alive for two more heartbeat intervals. */
  private heard(): void {
    const interval = this.info?.heartbeatIntervalMs ?? this._settings.timeout;
    this.timer("silence", 2 * interval, () => this._drop(4408, "nothing heard for two heartbeat intervals"));
  }

  private closed(code: number, reason: string): void {
    const wasConnected = this.state === "connected";
    this.lost();
    if (this.stopped) return;
    let action = closeAction(code);
    if (action === "token") {
      // Only a new token can help, and only getToken can give one.
      this.refused = this.token;
      this.token = undefined;
      action = this.options.getToken ? "retry" : "stop";
    }
    this._debug(`closed ${code} ${reason}: ${action}`);
    // A failed attempt while reconnecting is no news; losing a connection,
    // or stopping, is.
    if (wasConnected || action !== "retry") {
      this.emit("disconnected", { code, reason, reconnect: action === "retry" });
    }
    if (action === "retry") this.reconnect();
    else this.halt();
  }

  /** Forgets the socket's state: its timers, its requests in flight, its subscriptions. */
  private lost(): void {
    for (const name of ["ping", "silence", "refresh"] as const) this.clear(name);
    this.info = undefined;
    for (const [id, request] of this.requests) {
      if (!request.sent) continue;
      this.requests.delete(id);
      clearTimeout(request.timer);
      request.reject(new PulseError("disconnected", `the connection closed before ${request.frame.type} was answered`));
    }
    this.personal?._lost();
    for (const subscription of this.subscriptions.values()) subscription._lost();
  }

  private reconnect(): void {
    const delay = this.delay(this.attempt++);
    this.setState("connecting");
    this._debug(`reconnecting in ${delay} ms`);
    this.timer("reconnect", delay, () => {
      if (typeof navigator === "object" && navigator.onLine === false) {
        this._debug("offline: waiting for the online event");
        return;
      }
      void this.open();
    });
  }

  /** Stops for good: no reconnect, queued requests rejected. */
  private halt(): void {
    this.stopped = true;
    this.generation++;
    this.network(false);
    for (const name of Object.keys(this.timers) as TimerName[]) this.clear(name);
    for (const request of this.requests.values()) {
      clearTimeout(request.timer);
      request.reject(new PulseError("disconnected", "the client stopped"));
    }
    this.requests.clear();
    this.setState("disconnected");
  }

  private scheduleRefresh(): void {
    if (!this.options.getToken || this.token === undefined) return;
    const delay = refreshDelay(tokenExpiry(this.token), Date.now(), this._settings.refreshMargin);
    if (delay !== undefined) this.timer("refresh", delay, () => void this.refresh());
  }

  /** Fetches a new token and sends it on the open socket (no reconnect). */
  private async refresh(): Promise<void> {
    let token: string;
    try {
      token = await this.options.getToken!();
    } catch (error) {
      this.emit("error", { code: "token_unavailable", message: String(error) });
      if (this.state === "connected") this.timer("refresh", this.delay(this.refreshAttempt++), () => void this.refresh());
      return;
    }
    this.token = token;
    if (this.state !== "connected") return;
    this.refreshAttempt = 0;
    this._debug("token refreshed");
    this.send({ type: "auth", token });
    this.scheduleRefresh();
  }

  private delay(attempt: number): number {
    return backoff(attempt, this._settings.minReconnectDelay, this._settings.maxReconnectDelay);
  }

  private sendRequest(request: Request): void {
    request.sent = true;
    this.send(request.frame);
  }

  private send(frame: Frame): void {
    if (this.ws?.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  private setState(state: State): void {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  private timer(name: TimerName, delay: number, callback: () => void): void {
    this.clear(name);
    this.timers[name] = setTimeout(() => {
      delete this.timers[name];
      callback();
    }, delay);
  }

  private clear(name: TimerName): void {
    clearTimeout(this.timers[name]);
    delete this.timers[name];
  }

  /** Browsers' offline/online events: drop a socket at once when offline, reconnect at once when online. */
  private network(on: boolean): void {
    const target = globalThis as { addEventListener?: Window["addEventListener"]; removeEventListener?: Window["removeEventListener"] };
    if (typeof target.addEventListener !== "function") return;
    const method = on ? target.addEventListener : target.removeEventListener!;
    method.call(globalThis, "offline", this.offline);
    method.call(globalThis, "online", this.online);
  }

  private readonly offline = (): void => this._drop(1006, "the browser went offline");

  private readonly online = (): void => {
    if (this.stopped || this.ws) return;
    this.clear("reconnect");
    this.attempt = 0;
    void this.open();
  };
}
