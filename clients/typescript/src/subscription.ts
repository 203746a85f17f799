import { Emitter } from "./emitter.js";
import { backoff } from "./policy.js";
import type { Pulse } from "./client.js";
import {
  PulseError,
  type PresenceResult,
  type Publication,
  type PublishResult,
  type SubscribeOptions,
  type SubscriptionEvents,
  type SubscriptionState,
} from "./types.js";

/** A frame of the protocol, as parsed JSON. */
export type Frame = Record<string, any>;

/** Refusals that a later subscribe may not meet: it is retried with backoff. */
const RETRYABLE = ["unavailable", "auth_unavailable", "token_unavailable"];

/**
 * One channel the application wants to be subscribed to, across every
 * connection the client opens: it subscribes when the client connects,
 * again after every reconnect with `since` = the last position it saw, and
 * delivers each publication once, in order (publications whose offset is
 * not above the last one seen in the same epoch are dropped).
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  /** Where the subscription is. */
  state: SubscriptionState = "unsubscribed";
  /** The offset of the last publication delivered, where the channel keeps history. */
  offset: number | undefined;
  /** The history `offset` belongs to. */
  epoch: string | undefined;
  private wanted = false;
  /** Whether the next subscribe carries `since` (after the first answer, or with `options.since`). */
  private recover = false;
  /** Live publications held while a recovering subscribe is answered. */
  private held: Publication[] | null = null;
  private attempt = 0;
  private retry: ReturnType<typeof setTimeout> | undefined;
  /** Bumped whenever an answer in flight stops mattering. */
  private generation = 0;

  /** @internal Made by `Pulse.subscribe`. */
  constructor(
    private readonly client: Pulse,
    readonly channel: string,
    private readonly options: SubscribeOptions = {},
  ) {
    super();
    if (options.since) {
      this.offset = options.since.offset;
      this.epoch = options.since.epoch;
      this.recover = true;
    }
  }

  /** Subscribes again after `unsubscribe()` (a new subscription starts subscribed). */
  subscribe(): void {
    if (this.wanted) return;
    this.wanted = true;
    this.client._hold(this);
    this.setState("subscribing");
    void this._send();
  }

  /** Ends the subscription; no more events but `unsubscribed` and `state`. */
  unsubscribe(): void {
    if (!this.wanted) return;
    const connected = this.client.state === "connected";
    this.stop();
    this.offset = this.epoch = undefined;
    this.recover = false;
    if (connected) {
      this.client._request({ type: "unsubscribe", channel: this.channel }).catch(() => {});
    }
    this.emit("unsubscribed", { channel: this.channel, code: "client" });
  }

  /** Who is subscribed (namespaces with presence). */
  async presence(): Promise<PresenceResult> {
    const answer = await this.client._request({ type: "presence", channel: this.channel });
    const result: PresenceResult = {
      numUsers: answer.num_users,
      numConnections: answer.num_connections,
    };
    if (Array.isArray(answer.users)) {
      result.users = answer.users.map((user: Frame) => ({
        userId: user.user_id,
        connections: user.connections,
      }));
    }
    return result;
  }

  /** Publishes to this channel (namespaces with `allow_publish`). */
  publish(data: unknown): Promise<PublishResult> {
    return this.client.publish(this.channel, data);
  }

  /** @internal The client connected: subscribe (with `since` once there is a position). */
  async _send(): Promise<void> {
    clearTimeout(this.retry);
    if (!this.wanted || this.client.state !== "connected") return;
    const generation = ++this.generation;
    this.setState("subscribing");
    const frame: Frame = { type: "subscribe", channel: this.channel };
    const recovering = this.recover;
    if (recovering) {
      frame.since = { offset: this.offset ?? 0, epoch: this.epoch ?? "" };
      this.held = [];
    }
    try {
      const { token, getToken } = this.options;
      const subscriptionToken = getToken ? await fetchToken(getToken, this.channel) : token;
      if (subscriptionToken !== undefined) frame.token = subscriptionToken;
      if (generation !== this.generation) return;
      const answer = await this.client._request(frame);
      if (generation === this.generation) this.answered(answer, recovering);
    } catch (error) {
      if (generation === this.generation) this.failed(error as PulseError);
    }
  }

  /** @internal The socket closed: wait for the next connection. */
  _lost(): void {
    this.generation++;
    this.held = null;
    clearTimeout(this.retry);
    if (this.wanted) this.setState("subscribing");
  }

  /** @internal The server ended the subscription (`unsubscribed` without an id). */
  _ended(code: string): void {
    if (code === "resubscribe") {
      // The server lost the live stream's continuity: subscribe again from
      // the last position, which recovers what the gap held.
      this.client._debug(`${this.channel}: resubscribing at the server's request`);
      void this._send();
      return;
    }
    this.stop();
    this.emit("unsubscribed", { channel: this.channel, code });
  }

  /** @internal The personal channel, which the server subscribed at connect. */
  _personal(offset: unknown, epoch: unknown): void {
    this.wanted = true;
    this.recover = true;
    if (typeof offset === "number" && typeof epoch === "string") {
      this.offset = offset;
      this.epoch = epoch;
    }
    this.setState("subscribed");
  }

  /** @internal A publication on this channel: delivered unless seen already. */
  _publication(publication: Publication): void {
    if (this.held) {
      this.held.push(publication);
      return;
    }
    const { offset } = publication;
    if (offset !== undefined) {
      if (this.offset !== undefined && offset <= this.offset) {
        this.client._debug(`${this.channel}: offset ${offset} seen already, dropped`);
        return;
      }
      this.offset = offset;
    }
    this.emit("publication", publication);
  }

  /** @internal A `join` or `leave`. */
  _presence(type: "join" | "leave", userId: string): void {
    this.emit(type, { channel: this.channel, userId });
  }

  private answered(answer: Frame, wasRecovering: boolean): void {
    this.attempt = 0;
    if (typeof answer.epoch === "string" && answer.epoch !== this.epoch) {
      // Another history: its offsets start again.
      this.epoch = answer.epoch;
      this.offset = undefined;
    }
    const held = this.held ?? [];
    this.held = null;
    for (const publication of answer.publications ?? []) {
      this._publication({
        channel: this.channel,
        data: publication.data,
        offset: publication.offset,
      });
    }
    if (typeof answer.offset === "number" && (this.offset === undefined || answer.offset > this.offset)) {
      this.offset = answer.offset;
    }
    this.recover = true;
    this.setState("subscribed");
    const info: SubscriptionEvents["subscribed"] = { channel: this.channel, wasRecovering };
    if (typeof answer.recovered === "boolean") info.recovered = answer.recovered;
    if (this.offset !== undefined) info.offset = this.offset;
    if (this.epoch !== undefined) info.epoch = this.epoch;
    this.emit("subscribed", info);
    if (answer.recovered === false) {
      this.emit("unrecovered", this.epoch === undefined ? { channel: this.channel } : { channel: this.channel, epoch: this.epoch });
    }
    for (const publication of held) this._publication(publication);
  }

  private failed(error: PulseError): void {
    this.held = null;
    // The next connection subscribes again.
    if (error.code === "disconnected") return;
    this.emit("error", { code: error.code, message: error.reason });
    if (error.code === "timeout") {
      // Unanswered on an open socket: the socket is not healthy.
      this.client._drop(4408, `subscribe to ${this.channel} timed out`);
    } else if (RETRYABLE.includes(error.code)) {
      const { minReconnectDelay, maxReconnectDelay } = this.client._settings;
      const delay = backoff(this.attempt++, minReconnectDelay, maxReconnectDelay);
      this.client._debug(`${this.channel}: ${error.code}, subscribing again in ${delay} ms`);
      this.retry = setTimeout(() => void this._send(), delay);
    } else {
      this.stop();
      this.emit("unsubscribed", { channel: this.channel, code: error.code });
    }
  }

  private stop(): void {
    this.wanted = false;
    this._lost();
    this.client._release(this);
    this.setState("unsubscribed");
  }

  private setState(state: SubscriptionState): void {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }
}

async function fetchToken(getToken: (channel: string) => Promise<string>, channel: string): Promise<string> {
  try {
    return await getToken(channel);
  } catch (error) {
    throw new PulseError("token_unavailable", String(error));
  }
}
