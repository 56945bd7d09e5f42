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
