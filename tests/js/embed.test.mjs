// tally mounted inside a host application: the embedding example
// (`examples/embed.rs`) run as a process on port 0, and the official
// socket.io-client clicking through the prefixed Socket.IO path, identified
// by the host's own session cookie.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { afterEach, test } from 'node:test';
import { io } from 'socket.io-client';

import { WAIT_MS, makeDir, removeDir, startExample, within } from './server.mjs';

const LIMIT = { timeout: 60_000 };

let sockets = [];
let servers = [];
let dirs = [];

afterEach(async () => {
  for (const socket of sockets) socket.disconnect();
  await Promise.all(servers.map((server) => server.kill()));
  await Promise.all(dirs.map(removeDir));
  sockets = [];
  servers = [];
  dirs = [];
});

async function host(dir) {
  const server = await startExample(dir);
  servers.push(server);
  return server;
}

/** Signs in to the host under `name`; resolves with the session cookie. */
async function signIn(url, name) {
  const response = await fetch(`${url}/login`, {
    method: 'POST',
    body: new URLSearchParams({ username: name }),
    redirect: 'manual',
  });
  assert.equal(response.status, 303, 'the host redirects after signing in');
  assert.equal(response.headers.get('location'), '/tally/');
  const cookie = response.headers.get('set-cookie')?.split(';')[0];
  assert.match(cookie ?? '', /^host_session=[0-9a-f]{32}$/);
  return cookie;
}

/** Connects at tally's prefixed Socket.IO path; resolves once connected. */
async function connect(url, { cookie, transports }) {
  const socket = io(url, {
    path: '/tally/socket.io/',
    transports,
    forceNew: true,
    reconnection: false,
    timeout: WAIT_MS,
    extraHeaders: cookie ? { cookie } : {},
  });
  sockets.push(socket);
  const me = cookie ? once(socket, 'me') : null;
  const first = once(socket, 'count');
  await within(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    }),
    'connect at /tally/socket.io/',
  );
  const [count] = await within(first, 'the first count');
  return { socket, total: count.total, me: me && (await within(me, 'me'))[0] };
}

const click = (socket) => socket.timeout(WAIT_MS).emitWithAck('click');

test('the host serves its own routes and tally under /tally', LIMIT, async () => {
  const dir = await makeDir();
  dirs.push(dir);
  const server = await host(dir);

  const home = await fetch(`${server.url}/`);
  assert.equal(home.status, 200);
  assert.match(await home.text(), /The host application/);
  assert.equal(home.headers.get('x-served-by'), 'embed-example');

  const bare = await fetch(`${server.url}/tally`, { redirect: 'manual' });
  assert.equal(bare.status, 308, 'the mount path without its slash redirects');
  assert.equal(bare.headers.get('location'), '/tally/');

  const page = await fetch(`${server.url}/tally/`);
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /<script src="app\.js"/, 'the page loads its script relatively');
  assert.equal(page.headers.get('x-served-by'), 'embed-example', "the host's middleware wraps tally");
  assert.equal((await fetch(`${server.url}/tally/app.js`)).status, 200);

  const health = await fetch(`${server.url}/tally/healthz`);
  assert.equal(health.status, 200);
  assert.equal((await health.json()).status, 'ok');

  const missing = await fetch(`${server.url}/tally/nothing-here`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, 'not_found');
  assert.equal((await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`)).status, 404,
    'Socket.IO is only at the prefixed path');
});

test("clicks at the prefixed path count for the host's signed-in user", LIMIT, async () => {
  const dir = await makeDir();
  dirs.push(dir);
  let server = await host(dir);
  const cookie = await signIn(server.url, 'Ada');

  for (const [i, transports] of [['websocket'], ['polling']].entries()) {
    const ada = await connect(server.url, { cookie, transports });
    assert.equal(ada.socket.io.engine.transport.name, transports[0]);
    assert.deepEqual(ada.me, { username: 'Ada', count: i }, 'the host cookie identifies the socket');
    assert.deepEqual(await click(ada.socket), { total: ada.total + 1, you: i + 1 });
    ada.socket.disconnect();
  }

  const stranger = await connect(server.url, { transports: ['websocket'] });
  assert.equal(stranger.me, null);
  assert.deepEqual(await click(stranger.socket), { total: 3, you: null }, 'no cookie: anonymous');

  const board = await (await fetch(`${server.url}/tally/api/leaderboard`)).json();
  assert.deepEqual(board, [{ username: 'Ada', count: 2, rank: 1 }]);

  // Ctrl-C stops the host and tally cleanly; the clicks were written.
  assert.deepEqual(await server.stop('SIGINT'), { code: 0, signal: null });
  server = await host(dir);
  const health = await (await fetch(`${server.url}/tally/healthz`)).json();
  assert.equal(health.pending, 0);
  const after = await connect(server.url, { transports: ['websocket'] });
  assert.equal(after.total, 3, 'the total survived the restart');
  const user = await (await fetch(`${server.url}/tally/api/users/ada`)).json();
  assert.deepEqual(user, { username: 'Ada', count: 2, rank: 1 });
});
