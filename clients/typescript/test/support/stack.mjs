// The stack scripts/test-sdk.sh started, as the tests see it: gateway
// URLs, tokens minted by the real pulse-auth, the HTTP API and gRPC with
// the API key, gateways killed and started again on their ports, and
// polling with a deadline.
import { execFileSync, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { openSync, readFileSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import WebSocket from "ws";
import { Pulse } from "../../dist/index.js";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with scripts/test-sdk.sh`);
  return value;
};

export const gateways = env("PULSE_GATEWAYS").split(" ");
const state = env("PULSE_SDK_STATE");

let unique = 0;
/** A channel name no other test uses. */
export function channel(namespace) {
  return `${namespace}:t${process.pid}-${Date.now()}-${unique++}`;
}

/** A user id no other test uses. */
export function user(name) {
  return `${name}-${process.pid}-${unique++}`;
}

/** A token for `user` from `pulse-auth mint` (the stack's secret). */
export function mint(user, ttl = "1h") {
  return execFileSync(env("PULSE_AUTH_BIN"), ["mint", "--user", user, "--ttl", ttl], { encoding: "utf8" }).trim();
}

/**
 * A subscription token (claims `sub`, `channel`, `exp`), signed HS256 with
 * the stack's secret as an application's backend would.
 */
export function subscriptionToken(user, channel) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: user, channel, iat: now, exp: now + 3600 })}`;
  const signature = createHmac("sha256", env("JWT_SECRET")).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

const clients = [];

/** A client of gateway `n` (0 or 1) for `user`, with short reconnect delays; disconnected by `closeAll`. */
export function client(user, n = 0, options = {}) {
  const pulse = new Pulse(gateways[n], {
    WebSocket,
    minReconnectDelay: 50,
    maxReconnectDelay: 1000,
    timeout: 5000,
    ...(options.getToken ? {} : { token: mint(user) }),
    ...options,
  });
  clients.push(pulse);
  return pulse;
}

export function closeAll() {
  for (const pulse of clients.splice(0)) pulse.disconnect();
}

/** Polls `condition` every 20 ms until it is truthy (and returns it), or throws after `timeout` ms. */
export async function waitFor(what, condition, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Resolves with the next `event` of `emitter` that passes `filter`. */
export function next(emitter, event, filter = () => true, timeout = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${event}`));
    }, timeout);
    const off = emitter.on(event, (value) => {
      if (!filter(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

/** `POST /api/v1/<method>` on pulse-presence's HTTP API; the parsed answer. */
export async function api(method, body) {
  const response = await fetch(`${env("PULSE_HTTP_API")}/api/v1/${method}`, {
    method: "POST",
    headers: { authorization: `Bearer ${env("PULSE_API_KEY")}` },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${method}: ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}

/**
 * A unary gRPC call to pulse-presence whose request has only string fields
 * (numbered from 1 in `fields`' order), over Node's own HTTP/2; resolves
 * with the first varint field of the answer. The presence calls (`Send`,
 * `Disconnect`) are not on the HTTP API.
 */
export function grpc(method, fields) {
  const parts = [];
  fields.forEach((value, index) => {
    const bytes = Buffer.from(value, "utf8");
    parts.push(Buffer.from([((index + 1) << 3) | 2]), varint(bytes.length), bytes);
  });
  const message = Buffer.concat(parts);
  const frame = Buffer.concat([Buffer.from([0]), Buffer.alloc(4), message]);
  frame.writeUInt32BE(message.length, 1);
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${env("PULSE_GRPC")}`);
    session.on("error", reject);
    const request = session.request({
      ":method": "POST",
      ":path": method,
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${env("PULSE_API_KEY")}`,
    });
    const chunks = [];
    let status;
    let statusMessage;
    request.on("response", (headers) => {
      status ??= headers["grpc-status"];
      statusMessage ??= headers["grpc-message"];
    });
    request.on("trailers", (trailers) => {
      status = trailers["grpc-status"];
      statusMessage = trailers["grpc-message"];
    });
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      session.close();
      if (status !== "0") return reject(new Error(`${method}: grpc-status ${status} ${decodeURIComponent(statusMessage ?? "")}`));
      const body = Buffer.concat(chunks).subarray(5);
      resolve(body.length > 1 && body[0] === 0x08 ? readVarint(body, 1) : 0);
    });
    request.on("error", reject);
    request.end(frame);
  });
}

function varint(value) {
  const bytes = [];
  while (value > 0x7f) {
    bytes.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  bytes.push(value);
  return Buffer.from(bytes);
}

function readVarint(buffer, at) {
  let value = 0;
  for (let shift = 0; ; shift += 7) {
    const byte = buffer[at++];
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return value;
  }
}

const port = (n) => Number(readFileSync(join(state, `gateway-${n + 1}.port`), "utf8"));
const pidFile = (n) => join(state, `gateway-${n + 1}.pid`);

function refuses(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.on("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.on("error", () => resolve(true));
  });
}

/** Stops gateway `n` with `signal` and waits until its port refuses connections. */
export async function stopGateway(n, signal) {
  process.kill(Number(readFileSync(pidFile(n), "utf8")), signal);
  await waitFor(`gateway ${n + 1}'s port to close`, () => refuses(port(n)));
}

/** Starts gateway `n` again, on the same port, and waits until it is ready. */
export async function startGateway(n) {
  const log = openSync(join(state, `gateway-${n + 1}.log`), "a");
  const child = spawn("bash", [join(state, `gateway-${n + 1}.sh`)], { detached: true, stdio: ["ignore", log, log] });
  child.unref();
  // scripts/test-sdk.sh stops whatever pid this file holds on exit.
  writeFileSync(pidFile(n), String(child.pid));
  await waitFor(`gateway ${n + 1} to be ready`, async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port(n)}/readyz`)).ok;
    } catch {
      return false;
    }
  });
}
