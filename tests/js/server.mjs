// Starts the real tally binary for a test: port 0, a database in a temporary
// directory, and the bound address read from its log.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Upper bound for anything a test waits for, in milliseconds. */
export const WAIT_MS = 10_000;

/** The server binary: `TALLY_BIN`, or the debug build of this repository. */
export const TALLY_BIN =
  process.env.TALLY_BIN ?? fileURLToPath(new URL('../../target/debug/tally', import.meta.url));

/** The embedding example (`examples/embed.rs`): `TALLY_EMBED_BIN`, or its debug build. */
export const EMBED_BIN =
  process.env.TALLY_EMBED_BIN ??
  fileURLToPath(new URL('../../target/debug/examples/embed', import.meta.url));

const LISTENING = /listening on (http:\/\/[^\s]+)/;
// Strips terminal colour codes, in case the log ever has them.
const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * A bcrypt hash of `password` made by `tally hash-password` (cost 4: a test
 * needs no strength), for `--admin-password-hash`.
 */
export function passwordHash(password) {
  const made = spawnSync(TALLY_BIN, ['hash-password', '--cost', '4'], {
    input: `${password}\n`,
    encoding: 'utf8',
    timeout: WAIT_MS,
  });
  if (made.status !== 0) throw new Error(`tally hash-password failed: ${made.stderr || made.error}`);
  return made.stdout.trim();
}

/** Rejects with `what` unless `promise` settles within `WAIT_MS`. */
export async function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms: ${what}`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// With TALLY_TEST_E2E_DATABASE_URL (a PostgreSQL server, e.g.
// postgres://postgres@127.0.0.1:5432/test) every test directory gets its own
// fresh PostgreSQL database instead of a SQLite file, created and dropped with
// psql; scripts/test runs the suites once more that way.
const E2E_DATABASE = process.env.TALLY_TEST_E2E_DATABASE_URL;
const databases = new Map();

function psql(statement) {
  const result = spawnSync('psql', [E2E_DATABASE, '-v', 'ON_ERROR_STOP=1', '-qc', statement], {
    encoding: 'utf8',
  });
  if (result.status !== 0) {
    throw new Error(`psql ${E2E_DATABASE} -c "${statement}" failed: ${result.stderr || result.error}`);
  }
}

/** A fresh temporary directory (and database); remove it with `removeDir`. */
export async function makeDir() {
  const dir = await mkdtemp(join(tmpdir(), 'tally-js-'));
  if (E2E_DATABASE) {
    const name = `tally_e2e_${basename(dir).replace(/[^A-Za-z0-9]/g, '').toLowerCase()}`;
    psql(`CREATE DATABASE ${name}`);
    databases.set(dir, `${E2E_DATABASE.replace(/\/[^/]*$/, '')}/${name}`);
  }
  return dir;
}

export async function removeDir(dir) {
  const url = databases.get(dir);
  if (url) {
    psql(`DROP DATABASE IF EXISTS ${url.split('/').pop()} WITH (FORCE)`);
    databases.delete(dir);
  }
  await rm(dir, { recursive: true, force: true });
}

/** The database URL of the server whose files live in `dir`. */
export function databaseUrl(dir) {
  return databases.get(dir) ?? `sqlite://${join(dir, 'tally.db')}`;
}

/**
 * Rate limits and connection caps off: these suites click and connect as
 * fast as they can on purpose. A test of the limits sets them with flags,
 * which win over these variables.
 */
export const NO_LIMITS = {
  TALLY_CLICK_LIMIT: '0',
  TALLY_NEW_NAME_LIMIT: '0',
  TALLY_NEW_CONVERSATION_LIMIT: '0',
  TALLY_MESSAGE_LIMIT: '0',
  TALLY_TYPING_LIMIT: '0',
  TALLY_JOIN_LIMIT: '0',
  TALLY_REFRESH_LIMIT: '0',
  TALLY_MAX_CONNECTIONS_PER_IP: '0',
};

/** The environment for the server: ours without anything that configures tally, and no limits. */
function serverEnv() {
  const env = { ...process.env, NO_COLOR: '1' };
  for (const name of Object.keys(env)) {
    if (name.startsWith('TALLY_') || name === 'RUST_LOG') delete env[name];
  }
  return { ...env, ...NO_LIMITS };
}

/**
 * Starts `tally serve` on `addr` (default 127.0.0.1:0) with its database in `dir`, plus `args`,
 * and resolves once it logs its address. Rejects with the server's output if
 * it exits first or does not say where it listens within `WAIT_MS`.
 */
export function startServer(dir, args = [], { addr = '127.0.0.1:0' } = {}) {
  const argv = [
    'serve',
    '--addr',
    addr,
    '--database-url',
    databaseUrl(dir),
    ...args,
  ];
  const child = spawn(TALLY_BIN, argv, { env: serverEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const server = new Server(child, TALLY_BIN, argv);
  return server.ready;
}

/**
 * Starts the embedding example, which reads its settings from `TALLY_*`
 * variables like `tally serve`: port 0, its database in `dir`, plus `env`.
 * Resolves once it logs its address, like `startServer`.
 */
export function startExample(dir, env = {}) {
  const settings = {
    TALLY_ADDR: '127.0.0.1:0',
    TALLY_DATABASE_URL: databaseUrl(dir),
    ...env,
  };
  const child = spawn(EMBED_BIN, [], {
    env: { ...serverEnv(), ...settings },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const described = Object.entries(settings).map(([name, value]) => `${name}=${value}`);
  const server = new Server(child, EMBED_BIN, described);
  return server.ready;
}

class Server {
  constructor(child, bin, argv) {
    this.child = child;
    this.bin = bin;
    this.argv = argv;
    this.log = '';
    this.url = null;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      // A binary that cannot be started never exits; report it the same way.
      child.once('error', (error) => {
        resolve({ code: null, signal: null, error });
      });
    });
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(this.failure(`did not log its address within ${WAIT_MS} ms`)),
        WAIT_MS,
      );
      const onData = (chunk) => {
        this.log += chunk.toString().replace(ANSI, '');
        const match = this.url === null && LISTENING.exec(this.log);
        if (match) {
          this.url = match[1];
          clearTimeout(timer);
          resolve(this);
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      this.exited.then(({ code, signal, error }) => {
        clearTimeout(timer);
        reject(
          this.failure(
            error
              ? `could not be started (${error.message}); build it or set TALLY_BIN`
              : `exited (code ${code}, signal ${signal}) before listening`,
          ),
        );
      });
    });
    // `ready` may be dropped unobserved after a late rejection; that is fine.
    this.ready.catch(() => {});
  }

  failure(what) {
    return new Error(
      `tally ${what}\n  command: ${this.bin} ${this.argv.join(' ')}\n  output:\n${this.log}`,
    );
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Sends `signal` and resolves with `{code, signal}` once the process has
   * exited; rejects with its output if it takes longer than `WAIT_MS`.
   */
  async stop(signal = 'SIGTERM') {
    if (this.running) this.child.kill(signal);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(this.failure(`did not exit within ${WAIT_MS} ms of ${signal}`)),
        WAIT_MS,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the process whatever state it is in; for cleanup. */
  async kill() {
    if (!this.running) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}
