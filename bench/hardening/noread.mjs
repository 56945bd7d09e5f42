// Measures what a socket that never reads costs the server: seeds a
// conversation with long messages, then one WebSocket joins it N times
// without ever reading, and the server's RSS is sampled.
import { readFileSync } from 'node:fs';
// Run from the repository root after `npm ci` in tests/js:
//   node bench/hardening/noread.mjs URL SERVER_PID [JOINS]
// (the server with --api-key api-key-0123456789abcdef and --admin-token
// admin-token-0123456789abcdef).
import WebSocket from '../../tests/js/node_modules/ws/index.js';
const [url, pid, joins = '100', key = 'api-key-0123456789abcdef'] = process.argv.slice(2);
const rss = () => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const long = 'é'.repeat(1995);
for (let i = 0; i < 50; i++) {
  const r = await fetch(`${url}/api/conversations/big/messages`, {
    method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ userId: 'seed', content: long + i }),
  });
  if (r.status !== 201) throw new Error(`seed ${r.status}`);
}
await sleep(500);
console.log(`seeded; RSS ${rss().toFixed(1)} MiB`);
const ws = new WebSocket(`${url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
await new Promise((resolve) => ws.once('message', resolve)); // the open packet
ws.send('40{"username":"reader"}');
await sleep(300);
ws._socket.pause(); // never read again; the kernel's buffers fill, then the server's
for (let i = 0; i < Number(joins); i++) ws.send(`42${i}["join_conversation",{"conversationId":"big"}]`);
let previous = 0;
for (const t of [1, 5, 15, 30, 60, 90]) {
  await sleep((t - previous) * 1000);
  previous = t;
  const h = await fetch(`${url}/api/admin/stats`, { headers: { authorization: 'Bearer admin-token-0123456789abcdef' } }).then((r) => r.json());
  console.log(`t=${t}s RSS ${rss().toFixed(1)} MiB, sockets ${h.connections}`);
}
process.exit(0);
