// What both pages share: where tally is mounted, and the signed-in name with
// its token (kept in localStorage, so one sign-in covers every page).

// Where tally is mounted: the directory of this bundle. The pages may be
// served at `/` or under a host application's prefix (`/tally/`), and the
// API and Socket.IO live next to the bundle either way.
export const BASE = new URL('.', document.currentScript?.src ?? location.href);
const SESSION_KEY = 'tally.session';

export function loadSession() {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY));
    return saved && saved.username && saved.token ? saved : null;
  } catch {
    return null;
  }
}

export function storeSession(next) {
  if (next) localStorage.setItem(SESSION_KEY, JSON.stringify(next));
  else localStorage.removeItem(SESSION_KEY);
}

/** Asks the server for a token for `username`; throws an Error with the server's message. */
export async function requestToken(username) {
  const response = await fetch(new URL('api/session', BASE), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body?.error?.message ?? `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// Renew a token this long before it expires, so the session never lapses.
const RENEW_BEFORE_MS = 60_000;

/**
 * Opens the page's socket and keeps its session: the socket, the name it is
 * signed in with, and everything both pages need to stay connected.
 *
 * - `auth` is read on every (re)connection, so a renewed token is used.
 * - Shortly before the token expires a fresh one is fetched and handed to
 *   the open socket with `refresh`; a token that ran out anyway
 *   (`session_expired`, or a refused handshake) is replaced before
 *   reconnecting.
 * - A refusal (an HTTP answer with a status) ends the session and the page
 *   goes on anonymously; a network error keeps it, and the reconnection
 *   retries.
 * - A restarting server's `server_shutdown` pause is honoured, plus a
 *   random share, so not every page comes back at once.
 *
 * `onSession(next, previous)` is called whenever the session changes (and
 * once by `start`); `onStatus(text)` with `reconnecting`, `server
 * restarting` or `sign-in required`. The pages set `connected` themselves,
 * when they are ready.
 */
export function connectSession({ io, onSession, onStatus }) {
  let session = loadSession();
  let renewTimer;
  let expired = false;
  // Set by `server_shutdown`: the server is restarting and asked for a pause.
  let comeBackAfterMs = 0;

  // Default transports (polling first, then upgrade) so the pages also work
  // where WebSocket is blocked.
  const socket = io({
    path: `${BASE.pathname}socket.io/`,
    auth: (send) => send(session ? { token: session.token } : {}),
  });

  function save(next) {
    const previous = session;
    session = next;
    storeSession(next);
    scheduleRenewal();
    onSession(next, previous);
  }

  function scheduleRenewal() {
    clearTimeout(renewTimer);
    if (!session) return;
    const wait = session.expires_at * 1000 - Date.now() - RENEW_BEFORE_MS;
    renewTimer = setTimeout(async () => {
      try {
        const fresh = await requestToken(session.username);
        save(fresh);
        socket.emit('refresh', { token: fresh.token });
      } catch (error) {
        console.warn('could not renew the session:', error.message);
        // Tried again later; until it expires the token still works.
        if (!error.status) renewTimer = setTimeout(scheduleRenewal, 5_000);
      }
    }, Math.max(wait, 1000));
  }

  /** After a refused or expired token: a new one for the same name, then reconnect. */
  async function renewOrSignOut() {
    if (session) {
      try {
        save(await requestToken(session.username));
      } catch (error) {
        // The server refused the name: go on anonymously. Unreachable:
        // keep the session; the reconnection retries.
        if (error.status) save(null);
      }
    }
    socket.connect();
  }

  socket.on('session_expired', () => {
    expired = true;
  });
  socket.on('server_shutdown', (msg) => {
    comeBackAfterMs = Number(msg?.reconnectAfterMs) || 1000;
    onStatus('server restarting');
  });
  socket.on('disconnect', (reason) => {
    if (!comeBackAfterMs) onStatus('reconnecting');
    // A disconnect by the server is final for socket.io-client: come back
    // by hand, with a new token if the old one ran out.
    if (reason === 'io server disconnect') {
      const wait = comeBackAfterMs ? comeBackAfterMs * (1 + Math.random()) : 0;
      setTimeout(expired ? renewOrSignOut : () => socket.connect(), wait);
      expired = false;
      comeBackAfterMs = 0;
    }
  });
  socket.io.on('reconnect_attempt', () => onStatus('reconnecting'));
  socket.on('connect_error', () => {
    // Network errors retry by themselves (`socket.active`); a refused
    // handshake does not.
    if (socket.active) onStatus('reconnecting');
    else if (session) renewOrSignOut();
    else onStatus('sign-in required');
  });

  return {
    socket,
    /** The signed-in name and token, or `null`. */
    current: () => session,
    /** Shows the session kept from an earlier visit; call once the page is wired. */
    start: () => save(session),
    /** Signs in as `name` and reconnects with the token; throws the server's reason. */
    async signIn(name) {
      save(await requestToken(name));
      socket.disconnect().connect();
    },
    signOut() {
      save(null);
      socket.disconnect().connect();
    },
  };
}
