// The official JavaScript Socket.IO client against the real tally server:
// WebSocket only, long-polling only, polling upgraded to WebSocket, broadcasts
// across transports, a server limited to polling, bad input, and counts that
// survive a graceful shutdown.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { afterEach, describe, test } from 'node:test';
import { io } from 'socket.io-client';

import { WAIT_MS, makeDir, removeDir, startServer, within } from './server.mjs';

// A backstop per test; every wait inside a test has its own shorter bound.
const LIMIT = { timeout: 60_000 };

// Everything a test opens, closed by `afterEach` whether the test passed or not.
let clients = [];
let servers = [];
let dirs = [];

afterEach(async () => {
  for (const client of clients) client.socket.disconnect();
  await Promise.all(servers.map((server) => server.kill()));
  await Promise.all(dirs.map(removeDir));
  clients = [];
  servers = [];
  dirs = [];
});

async function newDir() {
  const dir = await makeDir();
  dirs.push(dir);
  return dir;
}

/** A server with its own database; `dir` shares one with an earlier server. */
async function serve({ dir, args = [] } = {}) {
  const server = await startServer(dir ?? (await newDir()), args);
  servers.push(server);
  return server;
}

/**
 * A socket.io-client socket, with every `count` it receives recorded from the
 * first one on. It does not reconnect, so a failure shows as `connect_error`.
 */
class Client {
  constructor(url, options = {}) {
    this.totals = [];
    this.waiters = [];
    this.socket = io(url, {
      forceNew: true,
      reconnection: false,
      autoConnect: false,
      timeout: WAIT_MS,
      ...options,
    });
    this.socket.on('count', (payload) => {
      assert.equal(typeof payload?.total, 'number', `count payload: ${JSON.stringify(payload)}`);
      this.totals.push(payload.total);
      this.waiters = this.waiters.filter((waiter) => !waiter());
    });
    clients.push(this);
  }

  /** Starts connecting; resolves on `connect`, rejects on `connect_error`. */
  connect() {
    const connected = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('connect_error', reject);
    });
    this.socket.connect();
    return within(connected, 'connect');
  }

  /** The last total received. */
  get total() {
    return this.totals.at(-1);
  }

  /** Resolves with the first total once one has arrived. */
  firstCount() {
    return this.until(() => this.totals.length > 0, 'the first count').then(() => this.totals[0]);
  }

  /** Resolves once the last total received is `total`. */
  countReaches(total) {
    return this.until(() => this.total === total, `a count of ${total} (last: ${this.total})`);
  }

  until(done, what) {
    if (done()) return Promise.resolve();
    const reached = new Promise((resolve) => {
      this.waiters.push(() => done() && (resolve(), true));
    });
    return within(reached, what);
  }

  /** Emits `click` (with `args`, if any) and resolves with the ack. */
  click(...args) {
    return this.socket.timeout(WAIT_MS).emitWithAck('click', ...args);
  }

  /** Clicks `times` times one after the other; checks each ack counts one more. */
  async clicks(times, from) {
    for (let i = 1; i <= times; i++) {
      assertAck(await this.click(), from + i, `ack of click ${i}`);
    }
  }
}

/**
 * Checks that a click's ack counts `total`. Only `total` is checked: the ack
 * may carry more fields (e.g. the clicker's own count), never an `error`.
 */
function assertAck(ack, total, what = 'click ack') {
  assert.equal(ack?.error, undefined, `${what}: ${JSON.stringify(ack)}`);
  assert.equal(ack?.total, total, `${what}: ${JSON.stringify(ack)}`);
}

/** Connects, checks the `count` sent on connect, clicks once, checks the total. */
async function connectAndClick(client) {
  await client.connect();
  const before = await client.firstCount();
  assert.ok(Number.isInteger(before) && before >= 0, `first count ${before}`);
  assertAck(await client.click(), before + 1);
  await client.countReaches(before + 1);
}

describe('socket.io-client compatibility', () => {
  test('WebSocket only: count on connect, click with ack', LIMIT, async () => {
    const server = await serve();
    const client = new Client(server.url, { transports: ['websocket'] });
    await connectAndClick(client);
    assert.equal(client.socket.io.engine.transport.name, 'websocket');
  });

  test('long-polling only: count on connect, click with ack', LIMIT, async () => {
    const server = await serve();
    const client = new Client(server.url, { transports: ['polling'], upgrade: false });
    await connectAndClick(client);
    assert.equal(client.socket.io.engine.transport.name, 'polling');
  });

  test('default options: polling upgrades to WebSocket, then clicks work', LIMIT, async () => {
    const server = await serve();
    const client = new Client(server.url);
    const connected = client.connect();
    const engine = client.socket.io.engine;
    assert.equal(engine.transport.name, 'polling', 'the first transport');
    const upgraded = within(once(engine, 'upgrade'), 'the upgrade to WebSocket');
    upgraded.catch(() => {}); // awaited below; this only keeps an early failure quiet
    await connected;
    await upgraded;
    assert.equal(engine.transport.name, 'websocket');
    assert.equal(await client.firstCount(), 0);
    await client.clicks(3, 0);
    await client.countReaches(3);
  });

  test('clicks are broadcast to a client on another transport', LIMIT, async () => {
    const K = 7;
    const server = await serve();
    const clicker = new Client(server.url, { transports: ['websocket'] });
    const watcher = new Client(server.url, { transports: ['polling'], upgrade: false });
    await Promise.all([clicker.connect(), watcher.connect()]);
    assert.equal(await clicker.firstCount(), 0);
    assert.equal(await watcher.firstCount(), 0);
    await clicker.clicks(K, 0);
    await watcher.countReaches(K);
    // Broadcasts may be coalesced, but totals never go back.
    const sorted = [...watcher.totals].sort((a, b) => a - b);
    assert.deepEqual(watcher.totals, sorted, 'totals seen by the watcher only grow');
  });

  test('a server limited to polling refuses WebSocket and serves polling', LIMIT, async () => {
    const server = await serve({ args: ['--transports', 'polling'] });
    const ws = new Client(server.url, { transports: ['websocket'] });
    await assert.rejects(ws.connect(), (error) => {
      assert.ok(error instanceof Error, `connect_error gives an Error: ${error}`);
      return true;
    });
    assert.equal(ws.socket.connected, false);
    const polling = new Client(server.url, { transports: ['polling'], upgrade: false });
    await connectAndClick(polling);
  });

  test('a click with a bad payload answers an error and is not counted', LIMIT, async () => {
    const server = await serve();
    const client = new Client(server.url, { transports: ['websocket'] });
    await client.connect();
    assert.equal(await client.firstCount(), 0);
    const answer = await client.click('garbage');
    assert.equal(typeof answer?.error, 'object', `ack: ${JSON.stringify(answer)}`);
    assert.equal(typeof answer.error.code, 'string', `error code: ${JSON.stringify(answer)}`);
    assert.equal(typeof answer.error.message, 'string', `error message: ${JSON.stringify(answer)}`);
    assert.equal(answer.total, undefined, 'an error carries no total');
    // The next good click is the first one counted.
    assertAck(await client.click(), 1);
    await client.countReaches(1);
    assert.ok(!client.totals.some((total) => total > 1), `totals: ${client.totals}`);
  });

  test('a binary click payload is refused with an error ack', LIMIT, async () => {
    const server = await serve();
    const client = new Client(server.url, { transports: ['websocket'] });
    await client.connect();
    assert.equal(await client.firstCount(), 0);
    const answer = await client.click(new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    assert.equal(answer?.error?.code, 'bad_request', `ack: ${JSON.stringify(answer)}`);
    assertAck(await client.click(), 1);
  });

  test('a token in `auth` identifies the user; a bad one gets connect_error', LIMIT, async () => {
    const secret = 'js-test-secret-js-test-secret-js-test';
    const server = await serve({
      args: ['--auth', 'token', '--jwt-secret', secret, '--guest-login', 'true'],
    });
    const response = await fetch(`${server.url}/api/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'Grace' }),
    });
    assert.equal(response.status, 200);
    const { token, username } = await response.json();
    assert.equal(username, 'Grace');

    const user = new Client(server.url, { transports: ['websocket'], auth: { token } });
    const me = new Promise((resolve) => user.socket.once('me', resolve));
    await user.connect();
    assert.deepEqual(await within(me, 'me'), { username: 'Grace', count: 0 });
    const ack = await user.click();
    assert.deepEqual(ack, { total: 1, you: 1 });

    for (const auth of [{}, { token: `${token}x` }, { token: 'not-a-jwt' }]) {
      const intruder = new Client(server.url, { transports: ['polling'], upgrade: false, auth });
      await assert.rejects(intruder.connect(), (error) => {
        assert.equal(error.message, 'unauthorized', `auth ${JSON.stringify(auth)}`);
        return true;
      });
    }
  });

  test('counts survive a graceful shutdown', LIMIT, async () => {
    const K = 5;
    const dir = await newDir();
    // A flush interval far beyond the test: only the shutdown writes the clicks.
    const first = await serve({ dir, args: ['--flush-interval', '1h'] });
    const client = new Client(first.url, { transports: ['websocket'] });
    await client.connect();
    assert.equal(await client.firstCount(), 0);
    await client.clicks(K, 0);
    // The client stays connected: shutting down must not wait for it to leave.
    const disconnected = within(once(client.socket, 'disconnect'), 'disconnect on shutdown');
    disconnected.catch(() => {}); // awaited below; this only keeps an early failure quiet
    assert.deepEqual(await first.stop('SIGTERM'), { code: 0, signal: null }, first.log);
    await disconnected;

    const second = await serve({ dir });
    const reader = new Client(second.url, { transports: ['websocket'] });
    await reader.connect();
    assert.equal(await reader.firstCount(), K);
  });
});

describe('conversations with socket.io-client', () => {
  test('members on WebSocket and long-polling chat, see presence and typing, and catch up', LIMIT, async () => {
    const server = await serve();
    const ada = new Client(server.url, { transports: ['websocket'], auth: { username: 'ada' } });
    const bob = new Client(server.url, { transports: ['polling'], auth: { username: 'bob' } });
    await ada.connect();
    await bob.connect();
    const event = (client, name, matches = () => true) =>
      within(
        new Promise((resolve) => {
          const listener = (payload) => {
            if (!matches(payload)) return;
            client.socket.off(name, listener);
            resolve(payload);
          };
          client.socket.on(name, listener);
        }),
        `${name} event`,
      );
    const emit = (client, name, payload) => client.socket.timeout(WAIT_MS).emitWithAck(name, payload);

    const joined = await emit(ada, 'join_conversation', { conversationId: 'js' });
    assert.deepEqual(joined, { conversationId: 'js', total: 0, online: 1, history: [], more: false });
    const presence = event(ada, 'presence', (p) => p.online === 2);
    assert.equal((await emit(bob, 'join_conversation', { conversationId: 'js' })).online, 2);
    await presence;

    // A message from the polling client reaches the WebSocket one in the
    // design's schema, after it was stored (the ack).
    const received = event(ada, 'message');
    const ack = await emit(bob, 'message', { conversationId: 'js', content: 'from polling' });
    assert.match(ack.messageId, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a UUIDv7');
    assert.match(ack.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual(await received, {
      type: 'message',
      conversationId: 'js',
      userId: 'bob',
      content: 'from polling',
      timestamp: ack.timestamp,
      messageId: ack.messageId,
    });

    const typing = event(bob, 'typing');
    assert.deepEqual(await emit(ada, 'typing', { conversationId: 'js' }), { ok: true });
    assert.deepEqual(await typing, { conversationId: 'js', userId: 'ada' });

    const roomCount = event(bob, 'room_count', (c) => c.total === 1);
    const click = await ada.click({ conversationId: 'js' });
    assert.deepEqual(click.conversation, { conversationId: 'js', total: 1 });
    await roomCount;

    // Bob leaves, misses two messages, and catches up with `since`.
    assert.deepEqual(await emit(bob, 'leave_conversation', { conversationId: 'js' }), { ok: true });
    const missed = [];
    for (const content of ['one', 'two']) missed.push((await emit(ada, 'message', { conversationId: 'js', content })).messageId);
    const back = await emit(bob, 'join_conversation', { conversationId: 'js', since: ack.messageId });
    assert.deepEqual(back.history.map((m) => m.messageId), missed);
    assert.equal(back.more, false);

    const refused = await emit(ada, 'message', { conversationId: 'js', content: '   ' });
    assert.equal(refused.error.code, 'invalid_payload');
  });
});
