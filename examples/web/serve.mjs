// The demo page's server, as small as it can be: the page's files, the
// built SDK at /pulse.js, /config.json (where the gateway and the HTTP API
// are), and /auth/login passed to the gateway's dev login so that the page
// calls it from its own origin. The WebSocket goes to the gateway itself.
//
//   node examples/web/serve.mjs --port 8080 --gateway http://127.0.0.1:3000 --api http://127.0.0.1:8052
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "8080" },
    gateway: { type: "string", default: "http://127.0.0.1:3000" },
    api: { type: "string", default: "http://127.0.0.1:8052" },
  },
});
const here = dirname(fileURLToPath(import.meta.url));
const files = {
  "/": [join(here, "index.html"), "text/html; charset=utf-8"],
  "/app.js": [join(here, "app.js"), "text/javascript"],
  "/pulse.js": [join(here, "../../clients/typescript/dist/pulse.min.js"), "text/javascript"],
};
const config = JSON.stringify({ gateway: `${values.gateway.replace(/^http/, "ws")}/ws`, api: values.api });

createServer(async (request, response) => {
  const path = new URL(request.url, "http://demo").pathname;
  try {
    if (request.method === "POST" && path === "/auth/login") {
      const chunks = [];
      for await (const chunk of request) chunks.push(chunk);
      const answer = await fetch(`${values.gateway}/auth/login`, { method: "POST", body: Buffer.concat(chunks) });
      response.writeHead(answer.status, { "content-type": "application/json" });
      response.end(await answer.text());
    } else if (request.method === "GET" && path === "/config.json") {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(config);
    } else if (request.method === "GET" && files[path]) {
      const [file, type] = files[path];
      response.writeHead(200, { "content-type": type, "cache-control": "no-store" });
      response.end(await readFile(file));
    } else {
      response.writeHead(404).end("not found\n");
    }
  } catch (error) {
    response.writeHead(502).end(`${error.message}\n`);
  }
}).listen(Number(values.port), "127.0.0.1", () => {
  console.log(`demo page: http://127.0.0.1:${values.port}/ (gateway ${values.gateway})`);
});
