// The conversation page (<mount>/c/<id>): the conversation's counter and
// button, the global total, who is online, and the chat with its history,
// typing indicator and catch-up after a reconnect. Messages are user input
// and are only ever inserted as text.
import { io } from 'socket.io-client';
import { BASE, connectSession } from './session.js';

const $ = (id) => document.getElementById(id);
const format = new Intl.NumberFormat();
const conversationId = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() ?? '');
const TYPING_SHOWN_MS = 3000;
const TYPING_EVERY_MS = 1500;

document.title = `tally · ${conversationId}`;
$('conversation-name').textContent = conversationId;

// ---- Counts (monotonic: keep the largest seen) ---------------------------
const counts = { room: -1, global: -1 };
function show(which, value) {
  if (typeof value !== 'number' || value <= counts[which]) return;
  counts[which] = value;
  $(which === 'room' ? 'room-total' : 'global').textContent = format.format(value);
}

// ---- Messages ------------------------------------------------------------
const seen = new Set();
// The id up to which this page has every message: the catch-up after a
// reconnect asks for what came after it. History pages move it forward, and
// live messages only while the page is caught up (`synced`): one that
// arrives in the middle of a catch-up is newer than messages the next page
// still has to bring.
let caughtUpTo = null;
let synced = false;
let newest = null;
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

function addMessage(message) {
  if (!message || message.conversationId !== conversationId || seen.has(message.messageId)) return;
  seen.add(message.messageId);
  const li = document.createElement('li');
  li.dataset.messageId = message.messageId;
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = message.userId;
  const time = document.createElement('time');
  time.className = 'time';
  time.dateTime = message.timestamp;
  time.textContent = timeFormat.format(new Date(message.timestamp));
  const content = document.createElement('p');
  content.className = 'content';
  content.textContent = message.content;
  li.append(author, time, content);
  // Ids are time-ordered: insert in order even if a live message overtook
  // the history page that holds an older one.
  const list = $('messages');
  const after = [...list.children].find((other) => other.dataset.messageId > message.messageId);
  list.insertBefore(li, after ?? null);
  if (!newest || message.messageId > newest) newest = message.messageId;
  if (synced) caughtUpTo = newest;
  list.scrollTop = list.scrollHeight;
  clearTyping(message.userId);
}

// ---- Typing indicator ----------------------------------------------------
const typing = new Map();
function renderTyping() {
  const names = [...typing.keys()];
  $('typing').textContent =
    names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
}
function clearTyping(name) {
  clearTimeout(typing.get(name));
  typing.delete(name);
  renderTyping();
}

// ---- Connection ----------------------------------------------------------
function setStatus(state) {
  $('status').dataset.state = state;
  $('status').textContent = state;
}

// Connecting, token renewal and reconnection are the main page's too
// (session.js).
const connection = connectSession({
  io,
  onStatus: setStatus,
  onSession(next) {
    $('login').hidden = !!next;
    $('signed-in').hidden = !next;
    $('compose').hidden = !next;
    $('me-name').textContent = next ? next.username : '';
  },
});
const { socket } = connection;

// Refusals of a join that are worth asking again: the database was not
// there, or the join limit (a long catch-up, several tabs at once).
const JOIN_AGAIN = new Set(['unavailable', 'rate_limited']);
let joining = 0;

/** Joins (or re-joins after a reconnect) and catches up on what was missed, a page at a time. */
async function join() {
  const attempt = ++joining;
  synced = false;
  let wait = 500;
  // A newer join (after another reconnect) or a lost connection ends this one.
  const current = () => attempt === joining && socket.connected;
  while (current()) {
    let ack;
    try {
      ack = await socket
        .timeout(10_000)
        .emitWithAck('join_conversation', caughtUpTo ? { conversationId, since: caughtUpTo } : { conversationId });
    } catch {
      continue; // no answer: the connection dropped or the server is busy; try again while connected
    }
    if (!current()) return;
    if (ack?.error) {
      setStatus(ack.error.message);
      if (!JOIN_AGAIN.has(ack.error.code)) return;
      await new Promise((resolve) => setTimeout(resolve, Math.max(Number(ack.error.retryAfterMs) || 0, wait)));
      wait = Math.min(wait * 2, 10_000);
      continue;
    }
    show('room', ack.total);
    $('online').textContent = format.format(ack.online);
    const firstPage = !caughtUpTo;
    ack.history.forEach(addMessage);
    const last = ack.history.at(-1)?.messageId;
    if (last && (!caughtUpTo || last > caughtUpTo)) caughtUpTo = last;
    if (firstPage) $('history-more').hidden = !ack.more;
    if (firstPage || !ack.more) {
      // Everything stored before the last page was read is here, and what
      // was stored since came live (the socket joined before the read).
      synced = true;
      if (newest && (!caughtUpTo || newest > caughtUpTo)) caughtUpTo = newest;
      setStatus('connected');
      return;
    }
  }
}

socket.on('connect', join);
socket.on('disconnect', () => {
  synced = false;
});
socket.on('count', (msg) => show('global', msg?.total));
socket.on('room_count', (msg) => msg?.conversationId === conversationId && show('room', msg.total));
socket.on('presence', (msg) => {
  if (msg?.conversationId === conversationId) $('online').textContent = format.format(msg.online);
});
socket.on('message', addMessage);
socket.on('typing', (msg) => {
  if (msg?.conversationId !== conversationId) return;
  clearTimeout(typing.get(msg.userId));
  typing.set(msg.userId, setTimeout(() => clearTyping(msg.userId), TYPING_SHOWN_MS));
  renderTyping();
});

// ---- Clicking ------------------------------------------------------------
$('click').addEventListener('click', () => {
  socket.emit('click', { conversationId }, (ack) => {
    if (ack?.error) {
      if (ack.error.code === 'rate_limited') setStatus('slow down a little');
      return console.warn('click refused:', ack.error.message);
    }
    show('global', ack.total);
    show('room', ack.conversation?.total);
  });
});

// ---- Posting -------------------------------------------------------------
let lastTypingSent = 0;
$('content').addEventListener('input', () => {
  if (Date.now() - lastTypingSent < TYPING_EVERY_MS) return;
  lastTypingSent = Date.now();
  socket.emit('typing', { conversationId });
});
$('content').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) {
    event.preventDefault();
    $('compose').requestSubmit();
  }
});
let sending = false;
$('compose').addEventListener('submit', async (event) => {
  event.preventDefault();
  // One message at a time: a second Enter while the first waits for its
  // answer would post it twice.
  if (sending) return;
  const error = $('compose-error');
  error.textContent = '';
  const content = $('content').value;
  sending = true;
  try {
    const ack = await socket.timeout(10_000).emitWithAck('message', { conversationId, content });
    if (ack?.error) {
      error.textContent = ack.error.message;
      return;
    }
    // Cleared only if nothing new was typed while it was being sent.
    if ($('content').value === content) $('content').value = '';
  } catch {
    // No answer: the connection dropped or the server is slow. The message
    // may have been stored; its copy in the list will tell.
    error.textContent = 'Not confirmed (connection lost): check the list before sending again.';
  } finally {
    sending = false;
  }
});

// ---- Sign in / out -------------------------------------------------------
$('login').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('username-error').textContent = '';
  try {
    await connection.signIn($('username').value.trim());
  } catch (e) {
    $('username-error').textContent = e.message;
  }
});
$('logout').addEventListener('click', () => connection.signOut());

connection.start();
