// The demo page: the dev login, who is online in room:lobby (its presence,
// then join/leave live), its chat, messages pushed to it with curl, and
// the personal channel. Everything realtime goes through @pulse/client.
import { Pulse } from "/pulse.js";

const CHANNEL = "room:lobby";
const $ = (id) => document.getElementById(id);
const config = await (await fetch("/config.json")).json();

$("curl").textContent =
  `curl -s -H "authorization: Bearer $KEY" \\\n  -d '{"channel":"${CHANNEL}","data":{"text":"hello from curl"}}' \\\n  ${config.api}/api/v1/publish`;

function log(text, warn = false) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (warn) item.className = "warn";
  $("log").prepend(item);
}

async function login(email, password) {
  const response = await fetch("/auth/login", { method: "POST", body: JSON.stringify({ email, password }) });
  if (!response.ok) throw new Error(`login refused (${response.status})`);
  return (await response.json()).token;
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = $("email").value;
  const password = $("password").value;
  let token;
  try {
    token = await login(email, password);
  } catch (error) {
    $("login-error").textContent = error.message;
    $("login-error").hidden = false;
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  start(token, () => login(email, password));
});

function start(token, getToken) {
  const pulse = new Pulse(config.gateway, { token, getToken, maxReconnectDelay: 5000 });
  const members = new Map();
  let me;

  function showMembers() {
    $("members").replaceChildren(
      ...[...members.keys()].sort().map((userId) => {
        const item = document.createElement("li");
        item.textContent = userId;
        item.dataset.user = userId;
        if (userId === me) item.className = "me";
        return item;
      }),
    );
    $("counts").textContent = `${members.size} online`;
  }

  function addMessage(data, live = true) {
    const item = document.createElement("li");
    const from = document.createElement("span");
    from.className = "from";
    from.textContent = data?.from ?? "server";
    if (!data?.from) item.className = "server";
    item.append(from, String(data?.text ?? JSON.stringify(data)));
    item.dataset.text = String(data?.text ?? "");
    $("messages").append(item);
    if (live) $("messages").scrollTop = $("messages").scrollHeight;
  }

  pulse.on("state", (state) => {
    $("state").textContent = state;
    $("state").className = `badge ${state}`;
  });
  pulse.on("connected", (info) => {
    me = info.userId;
    $("who").textContent = `${info.userId} on ${info.instanceId}`;
    log(`connected to ${info.instanceId}`);
  });
  pulse.on("disconnected", (info) => log(`disconnected (${info.code}${info.reason ? ` ${info.reason}` : ""})${info.reconnect ? ", reconnecting" : ""}`, true));
  pulse.on("error", (error) => log(`error ${error.code}: ${error.message}`, true));
  pulse.on("message", (publication) => {
    log("a message on my personal channel");
    addMessage({ from: "to me", text: publication.data?.text ?? JSON.stringify(publication.data) });
  });

  const room = pulse.subscribe(CHANNEL);
  room.on("subscribed", async (info) => {
    log(`subscribed to ${CHANNEL}${info.wasRecovering ? ` again (recovered: ${info.recovered})` : ""}`);
    // Who is here now; join and leave keep it current from here on.
    const presence = await room.presence();
    members.clear();
    for (const user of presence.users ?? []) members.set(user.userId, user.connections);
    showMembers();
  });
  room.on("join", ({ userId }) => {
    members.set(userId, 1);
    showMembers();
    log(`${userId} joined`);
  });
  room.on("leave", ({ userId }) => {
    members.delete(userId);
    showMembers();
    log(`${userId} left`);
  });
  room.on("publication", (publication) => addMessage(publication.data));
  room.on("unrecovered", () => {
    $("unrecovered").textContent =
      "Reconnected: messages sent while the connection was down could not be recovered; reload to see them.";
    $("unrecovered").hidden = false;
    log("missed messages could not be recovered", true);
  });

  $("send").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    $("text").value = "";
    try {
      await room.publish({ from: me, text });
    } catch (error) {
      log(`not sent: ${error.code}`, true);
    }
  });

  pulse.connect();
  window.pulse = pulse;
}
