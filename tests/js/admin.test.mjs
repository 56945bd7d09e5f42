// The namespace of the official Socket.IO Admin UI, spoken to with the
// official client as the UI speaks it: logins and sessions, `config`,
// `server_stats` after a known workload, development mode's socket list and
// `_disconnect`, read-only mode, and a server that refuses to start with
// the UI open to anyone by accident.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, test } from 'node:test';
import { io } from 'socket.io-client';

import {
  TALLY_BIN,
  WAIT_MS,
  makeDir,
  passwordHash as hashOf,
  removeDir,
  startServer,
  within,
} from './server.mjs';

const LIMIT = { timeout: 60_000 };
const PASSWORD = 'correct horse battery staple';

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

/** `PASSWORD`'s hash, checked for bcrypt's shape at cost 4. */
function passwordHash() {
  const hash = hashOf(PASSWORD);
  assert.match(hash, /^\$2[aby]\$04\$.{53}$/);
  return hash;
}

async function serve(args) {
  const dir = await makeDir();
  dirs.push(dir);
  const server = await startServer(dir, args);
  servers.push(server);
  return server;
}

/**
 * A socket that records every event it receives, in order, with a way to
 * wait for the next one that matches.
 */
function open(url, options = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, timeout: WAIT_MS, ...options });
  sockets.push(socket);
  socket.received = [];
  socket.waiters = [];
  socket.onAny((event, ...args) => {
    socket.received.push({ event, args });
    socket.waiters = socket.waiters.filter((waiter) => !waiter());
  });
  return socket;
}

/** Resolves with the args of the first event `name` (seen or to come) for which `matches` holds. */
function eventWhere(socket, name, matches = () => true, from = 0) {
  const find = () => socket.received.slice(from).find((e) => e.event === name && matches(...e.args));
  const found = find();
  if (found) return Promise.resolve(found.args);
  return within(
    new Promise((resolve) => {
      socket.waiters.push(() => {
        const hit = find();
        if (hit) resolve(hit.args);
        return Boolean(hit);
      });
    }),
    `event ${name}`,
  );
}

function connected(socket) {
  return within(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    }),
    'connect',
  );
}

function refused(socket) {
  return within(
    new Promise((resolve, reject) => {
      socket.once('connect', () => reject(new Error('connected, expected a refusal')));
      socket.once('connect_error', resolve);
    }),
    'connect_error',
  );
}

describe('Socket.IO Admin UI namespace', () => {
  test('logins: wrong or missing credentials are refused, a session is sent after connect and reused', LIMIT, async () => {
    const hash = passwordHash();
    const server = await serve(['--admin', '--admin-user', 'ops', '--admin-password-hash', hash]);
    const admin = `${server.url}/admin`;

    for (const auth of [
      { username: 'ops', password: 'wrong' },
      { username: 'someone', password: PASSWORD },
      { sessionId: 'not-a-session' },
      {},
    ]) {
      const error = await refused(open(admin, { auth }));
      // The UI shows its login form again for exactly this message.
      assert.equal(error.message, 'invalid credentials', JSON.stringify(auth));
    }

    const ui = open(admin, { auth: { username: 'ops', password: PASSWORD } });
    await connected(ui);
    // Sent after `connect`: the UI registers its listeners on `connect`.
    const [session] = await eventWhere(ui, 'session');
    assert.match(session, /^[0-9a-f]{32}$/);
    const [config] = await eventWhere(ui, 'config');
    // Aggregated mode: totals only, and no commands (the UI's pages that
    // send them are empty without development mode's socket list).
    assert.deepEqual(config.supportedFeatures, ['AGGREGATED_EVENTS']);

    // A reload of the UI sends the session id instead of the password.
    const reloaded = open(admin, { auth: { sessionId: session } });
    await connected(reloaded);
    await eventWhere(reloaded, 'config');
    assert.equal(reloaded.received.filter((e) => e.event === 'session').length, 0);

    // Nothing about the password shows in the log.
    assert.ok(!server.log.includes(PASSWORD));
    assert.ok(!server.log.includes(hash));
  });

  test('guessers from a handful of addresses spend their own allowance, not the operator\'s', LIMIT, async () => {
    const hash = passwordHash();
    const server = await serve([
      '--admin', '--admin-user', 'ops', '--admin-password-hash', hash,
      '--trusted-proxies', '127.0.0.1', '--max-connections-per-ip', '0',
    ]);
    const admin = `${server.url}/admin`;
    const from = (address) => ({ extraHeaders: { 'x-forwarded-for': address } });
    // Ten addresses, seven guesses each: more than the server-wide burst of
    // 20 between them, and more than each address's own burst of 5.
    const answers = await Promise.all(
      Array.from({ length: 70 }, (_, i) =>
        refused(open(admin, { auth: { username: 'ops', password: 'guess' }, ...from(`198.51.100.${i % 10}`) })),
      ),
    );
    const messages = answers.map((error) => error.message);
    assert.ok(messages.includes('invalid credentials'), messages.join());
    assert.ok(
      messages.some((message) => message.startsWith('too many login attempts')),
      `the guessers were limited: ${messages.join()}`,
    );
    // The operator, at an address that has not been guessing, gets in.
    const ui = open(admin, { auth: { username: 'ops', password: PASSWORD }, ...from('203.0.113.1') });
    await connected(ui);
    const [session] = await eventWhere(ui, 'session');
    // A valid session id is never limited, even from a guessing address.
    for (let i = 0; i < 3; i += 1) {
      await connected(open(admin, { auth: { sessionId: session }, ...from('198.51.100.1') }));
    }
  });

  test('server_stats counts what happened: connections, events, broadcasts, namespaces', LIMIT, async () => {
    const server = await serve(['--admin', '--admin-no-auth']);
    const ui = open(`${server.url}/admin`);
    await connected(ui);
    const [first] = await eventWhere(ui, 'server_stats');
    assert.equal(first.pid > 0, true);
    assert.equal(typeof first.serverId, 'string');
    assert.equal(typeof first.uptime, 'number');
    assert.deepEqual(first.namespaces, [
      { name: '/', socketsCount: 0 },
      { name: '/admin', socketsCount: 1 },
    ]);
    const mark = ui.received.length;

    const a = open(server.url, { transports: ['websocket'] });
    const b = open(server.url, { transports: ['polling'] });
    await Promise.all([connected(a), connected(b)]);
    const ack = await a.timeout(WAIT_MS).emitWithAck('click');
    assert.equal(ack.total, 1);
    await eventWhere(b, 'count', (count) => count.total === 1);

    // Stats arrive every 2 s; add up the events until all of these showed.
    const sums = {};
    const [stats] = await eventWhere(
      ui,
      'server_stats',
      (stats) => {
        for (const event of stats.aggregatedEvents) {
          sums[event.type] = (sums[event.type] ?? 0) + event.count;
        }
        return (
          stats.namespaces[0].socketsCount === 2 &&
          sums.rawConnection === 2 &&
          sums.packetsIn >= 1 &&
          sums.packetsOut >= 2 &&
          sums.bytesIn > 0 &&
          sums.bytesOut > 0
        );
      },
      mark,
    );
    assert.equal(stats.clientsCount, 3, 'two sockets and the UI');
    assert.equal(stats.pollingClientsCount, 1);
    for (const event of stats.aggregatedEvents) {
      assert.equal(event.timestamp % 1000, 0, 'stamped by the second');
    }
  });

  test('development mode: the socket list, its events, and a socket disconnected from the UI', LIMIT, async () => {
    const server = await serve(['--admin', '--admin-no-auth', '--admin-mode', 'development']);
    const client = open(server.url, { auth: { username: 'ada' } });
    await connected(client);

    const ui = open(`${server.url}/admin`);
    await connected(ui);
    const [config] = await eventWhere(ui, 'config');
    assert.deepEqual(config.supportedFeatures.sort(), [
      'AGGREGATED_EVENTS',
      'ALL_EVENTS',
      'DISCONNECT',
      'JOIN',
      'LEAVE',
      'MDISCONNECT',
      'MJOIN',
      'MLEAVE',
    ]);
    const [all] = await eventWhere(ui, 'all_sockets');
    assert.equal(all.length, 1);
    const listed = all[0];
    assert.equal(listed.id, client.id);
    assert.equal(listed.nsp, '/');
    assert.equal(listed.transport, 'websocket');
    assert.equal(listed.data.user, 'ada');
    assert.ok(listed.rooms.includes(client.id) && listed.rooms.includes('user/ada'), listed.rooms);
    assert.equal(typeof listed.handshake.issued, 'number');
    assert.equal(listed.handshake.query.EIO, '4');
    assert.ok(!JSON.stringify(listed).includes('auth'), 'the handshake auth is never shown');

    await client.timeout(WAIT_MS).emitWithAck('click');
    const [nsp, id, args] = await eventWhere(ui, 'event_received');
    assert.deepEqual([nsp, id, args], ['/', client.id, ['click']]);

    const second = open(server.url);
    await connected(second);
    const [socket] = await eventWhere(ui, 'socket_connected', (s) => s.id === second.id);
    assert.equal(socket.nsp, '/');

    // Into a conversation from the UI, as a member: its presence counts it.
    ui.emit('join', '/', 'lobby', second.id);
    await eventWhere(ui, 'room_joined', (nsp, room, sid) => room === 'lobby' && sid === second.id);
    const watcher = open(server.url, { auth: { username: 'bob' } });
    await connected(watcher);
    const joined = await watcher.timeout(WAIT_MS).emitWithAck('join_conversation', { conversationId: 'lobby' });
    assert.equal(joined.online, 2, JSON.stringify(joined));
    ui.emit('leave', '/', 'lobby', second.id);
    await eventWhere(ui, 'room_left', (nsp, room, sid) => room === 'lobby' && sid === second.id);
    await eventWhere(watcher, 'presence', (p) => p.conversationId === 'lobby' && p.online === 1);
    // A user's own room is tally's to keep.
    ui.emit('leave', '/', 'user/ada', client.id);

    // The client forgets its id once disconnected.
    const clientId = client.id;
    const gone = new Promise((resolve) => client.once('disconnect', resolve));
    ui.emit('_disconnect', '/', false, clientId);
    assert.equal(await within(gone, 'the disconnect'), 'io server disconnect');
    const [, , reason] = await eventWhere(ui, 'socket_disconnected', (_, sid) => sid === clientId);
    assert.equal(reason, 'server namespace disconnect');
    const [, room] = await eventWhere(ui, 'room_left', (_, __, sid) => sid === clientId);
    assert.equal(room, 'user/ada');
    const left = ui.received.filter((e) => e.event === 'room_left' && e.args[2] === clientId);
    assert.equal(left.length, 1, 'the user room was left once, on the disconnect, not on command');
    assert.ok(second.connected, 'only the socket named was disconnected');
  });

  test('read-only: no commands are offered or obeyed', LIMIT, async () => {
    const server = await serve(['--admin', '--admin-no-auth', '--admin-mode', 'development', '--admin-readonly']);
    const client = open(server.url);
    await connected(client);
    const ui = open(`${server.url}/admin`);
    await connected(ui);
    const [config] = await eventWhere(ui, 'config');
    assert.deepEqual(config.supportedFeatures, ['AGGREGATED_EVENTS', 'ALL_EVENTS']);
    const mark = ui.received.length;
    ui.emit('_disconnect', '/', false, client.id);
    // The stats that follow (every 2 s) still count the socket.
    const [stats] = await eventWhere(ui, 'server_stats', () => true, mark);
    assert.equal(stats.namespaces[0].socketsCount, 1);
    const ack = await client.timeout(WAIT_MS).emitWithAck('click');
    assert.equal(ack.total, 1);
    assert.ok(client.connected);
  });

  test('--admin without a password hash refuses to start, unless --admin-no-auth says so', LIMIT, () => {
    const started = spawnSync(TALLY_BIN, ['serve', '--admin', '--addr', '127.0.0.1:0', '--database-url', 'sqlite::memory:'], {
      encoding: 'utf8',
      timeout: WAIT_MS,
      env: { PATH: process.env.PATH },
    });
    // Exit code 1 (refused), not null (still running when the wait ran out).
    assert.equal(started.status, 1, started.stderr);
    assert.match(started.stderr, /--admin-password-hash/);
    const bad = spawnSync(TALLY_BIN, ['serve', '--admin', '--admin-password-hash', 'hunter2', '--addr', '127.0.0.1:0', '--database-url', 'sqlite::memory:'], {
      encoding: 'utf8',
      timeout: WAIT_MS,
      env: { PATH: process.env.PATH },
    });
    assert.equal(bad.status, 1, bad.stderr);
    assert.match(bad.stderr, /not a bcrypt hash/);
    assert.ok(!bad.stderr.includes('hunter2'), 'the value is not echoed');
  });
});
