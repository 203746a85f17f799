// A Pulse webhook receiver that checks every POST (Node 18+, no dependencies):
// PULSE_WEBHOOK_SECRET=... PORT=8090 node receiver.mjs
import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';

const secret = process.env.PULSE_WEBHOOK_SECRET;
createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks); // the raw bytes: what was signed
  const sig = Object.fromEntries((req.headers['pulse-signature'] ?? '').split(',').map((part) => part.split('=')));
  const expected = createHmac('sha256', secret).update(`${sig.t}.`).update(body).digest();
  const given = Buffer.from(sig.v1 ?? '', 'hex');
  const fresh = Math.abs(Date.now() / 1000 - Number(sig.t)) <= 300; // refuses replays of old requests
  if (!fresh || given.length !== expected.length || !timingSafeEqual(given, expected)) return res.writeHead(401).end();
  for (const event of JSON.parse(body).events) console.log(event.id, event.kind, event.user_id); // dedupe by event.id
  res.writeHead(204).end();
}).listen(Number(process.env.PORT ?? 8090), process.env.HOST ?? '127.0.0.1', () => console.log('listening'));
