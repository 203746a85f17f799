// Type-checked, never run (`tsc -p test/types`): the README's example and
// the public API as an application uses it, in Node with `ws` and in a
// browser with the DOM's WebSocket.
import WebSocket from "ws";
import {
  Pulse,
  PulseError,
  type ConnectedInfo,
  type PresenceResult,
  type Publication,
  type PublishResult,
  type Subscription,
} from "../../dist/index.js";

// The README's example.
const login = { method: "POST", body: JSON.stringify({ email: "test@test.com", password: "test123" }) };
const getToken = async () => (await (await fetch("http://localhost:3000/auth/login", login)).json()).token;
const pulse = new Pulse("ws://localhost:3000/ws", { getToken, WebSocket });
pulse.on("connected", (info) => console.log("connected as", info.userId, "to", info.instanceId));
const room = pulse.subscribe("room:lobby");
room.on("publication", (p) => console.log("publication", p.data));
room.on("join", (u) => console.log(u.userId, "joined"));
pulse.connect();
console.log(await room.publish({ text: "hi" }), await room.presence());

// A browser's global WebSocket fits the option too.
declare const browserWebSocket: typeof globalThis.WebSocket;
const inBrowser = new Pulse("wss://rt.example.com/ws", { token: "t", WebSocket: browserWebSocket });

// Every option and the event payloads' types.
const full = new Pulse("wss://rt.example.com/ws", {
  token: "t",
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  timeout: 10000,
  refreshMargin: 60000,
  debug: (line: string) => console.debug(line),
});
const off = full.on("disconnected", ({ code, reason, reconnect }) => console.log(code + 1, reason.length, !reconnect));
off();
full.on("message", (p: Publication) => p.offset ?? 0);
full.on("unrecovered", ({ channel, epoch }) => [channel, epoch]);
const info: ConnectedInfo | undefined = full.info;
const sub: Subscription = full.subscribe("order:1", { getToken: async (channel) => channel, since: { offset: 3, epoch: "e" } });
sub.on("subscribed", ({ wasRecovering, recovered }) => wasRecovering && recovered);
sub.on("error", ({ code }) => code);
const presence: Promise<PresenceResult> = sub.presence();
const published: Promise<PublishResult> = full.publish("room:a", { any: ["json"] });
published.catch((error: unknown) => error instanceof PulseError && error.code === "timeout");
sub.unsubscribe();
full.disconnect();
void [inBrowser, info, presence];
