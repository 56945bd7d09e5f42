// The tally page: shows the live total, the user's own count, the top 10 and
// a sparkline of clicks per second; sends clicks; signs users in by name.
// Talks to the server with the official socket.io client.
import { io } from 'socket.io-client';
import { BASE, connectSession } from './session.js';

const $ = (id) => document.getElementById(id);
const format = new Intl.NumberFormat();
// How long a click waits for its answer before its +1 is taken back.
const CLICK_ANSWER_MS = 10_000;

// ---- Counts -------------------------------------------------------------
// Totals only grow, but acks and broadcasts can arrive in any order, so each
// display keeps the largest authoritative value seen. A click shows +1 at
// once (optimistic); the server's answer can only be equal or larger, so the
// number never goes backwards.
const total = { confirmed: -1, optimistic: -1, el: $('total') };
const you = { confirmed: -1, optimistic: -1, el: $('you') };

function render(counter) {
  const value = Math.max(counter.confirmed, counter.optimistic);
  if (value >= 0) counter.el.textContent = format.format(value);
}

function confirm(counter, value) {
  if (typeof value !== 'number' || value <= counter.confirmed) return;
  // The sparkline counts from the first total this page learns.
  if (counter === total && lastSecondTotal < 0) lastSecondTotal = value;
  counter.confirmed = value;
  render(counter);
}

function bump(counter) {
  if (counter.confirmed < 0) return;
  counter.optimistic = Math.max(counter.confirmed, counter.optimistic) + 1;
  render(counter);
}

// Takes back one optimistic +1 that the server did not count. Once the
// confirmed total has passed it, there is nothing left to take back.
function unbump(counter) {
  if (counter.optimistic <= counter.confirmed) return;
  counter.optimistic -= 1;
  render(counter);
}

// ---- Sparkline: clicks per second over the last minute --------------------
const rates = new Array(60).fill(0);
let lastSecondTotal = -1;

function drawSparkline() {
  const peak = Math.max(1, ...rates);
  const points = rates.map((r, i) => `${i * 2},${(23 - (r / peak) * 21).toFixed(1)}`);
  $('sparkline').querySelector('polyline').setAttribute('points', points.join(' '));
  $('rate').textContent = format.format(rates[rates.length - 1]);
}

setInterval(() => {
  if (lastSecondTotal >= 0) {
    rates.push(Math.max(0, total.confirmed - lastSecondTotal));
    rates.shift();
    lastSecondTotal = total.confirmed;
  }
  drawSparkline();
}, 1000);
drawSparkline();

// ---- Session and connection (see session.js) ---------------------------
// The name the server knows this page by when the page holds no token: an
// application that embeds tally may identify sockets from its own sign-in
// (a cookie), and then signing in and out is that application's business.
let hostUser = null;

function showHostUser(name) {
  hostUser = name;
  $('you-line').hidden = false;
  $('login').hidden = true;
  $('signed-in').hidden = false;
  $('logout').hidden = true;
  $('me-name').textContent = name;
}

function setStatus(state) {
  $('status').dataset.state = state;
  $('status').textContent = state;
}

const sameUser = (a, b) => a && b && a.username.toLowerCase() === b.username.toLowerCase();

const connection = connectSession({
  io,
  onStatus: setStatus,
  onSession(next, previous) {
    if (!sameUser(next, previous)) you.confirmed = you.optimistic = -1;
    $('you-line').hidden = !next;
    $('login').hidden = !!next;
    $('signed-in').hidden = !next;
    $('me-name').textContent = next ? next.username : '';
  },
});
const { socket } = connection;

socket.on('connect', () => setStatus('connected'));
socket.on('count', (msg) => confirm(total, msg?.total));
socket.on('me', (msg) => {
  if (!connection.current() && typeof msg?.username === 'string') showHostUser(msg.username);
  confirm(you, msg?.count);
});
socket.on('leaderboard', renderLeaderboard);

// ---- Clicking -----------------------------------------------------------
const button = $('click');
button.addEventListener('click', () => {
  button.classList.remove('pressed');
  void button.offsetWidth; // restarts the press animation
  button.classList.add('pressed');
  bump(total);
  if (connection.current() || hostUser) bump(you);
  // socket.io-client buffers the emit while disconnected, so a click made
  // during a reconnect is sent once the connection is back. With a timeout
  // the callback also hears of a click whose answer will never come (the
  // connection dropped after it was sent): a plain emit would forget it,
  // and its +1 would stay on the page for good.
  socket.timeout(CLICK_ANSWER_MS).emit('click', (lost, ack) => {
    if (lost || ack?.error) {
      // Not counted (or not known to be): take back this click's +1 only;
      // other clicks on their way keep theirs. If it was the rate limit,
      // say so politely until clicking is allowed again. A lost click that
      // was counted after all shows up in the next total.
      unbump(total);
      unbump(you);
      if (ack?.error?.code === 'rate_limited') slowDown(ack.error.retryAfterMs);
      else console.warn('click not counted:', lost?.message ?? ack.error.message);
      return;
    }
    confirm(total, ack?.total);
    confirm(you, ack?.you);
  });
});
button.addEventListener('animationend', () => button.classList.remove('pressed'));

let slowDownTimer;
function slowDown(retryAfterMs) {
  $('slow-down').hidden = false;
  clearTimeout(slowDownTimer);
  slowDownTimer = setTimeout(() => {
    $('slow-down').hidden = true;
  }, Math.max(Number(retryAfterMs) || 0, 1500));
}

// ---- Leaderboard --------------------------------------------------------
function renderLeaderboard(list) {
  if (!Array.isArray(list)) return;
  const mine = (connection.current()?.username ?? hostUser)?.toLowerCase();
  const items = list.map(({ username, count, rank }) => {
    const li = document.createElement('li');
    // Names are user input: always inserted as text, never as HTML.
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = `${rank}. ${username}`;
    const score = document.createElement('span');
    score.className = 'score';
    score.textContent = format.format(count);
    li.append(name, score);
    if (String(username).toLowerCase() === mine) {
      li.classList.add('me');
      li.setAttribute('aria-current', 'true');
    }
    return li;
  });
  $('leaderboard').replaceChildren(...items);
  $('board-empty').hidden = items.length > 0;
}

// ---- Sign in / out ------------------------------------------------------
$('login').addEventListener('submit', async (event) => {
  event.preventDefault();
  const error = $('username-error');
  error.textContent = '';
  try {
    await connection.signIn($('username').value.trim());
  } catch (e) {
    error.textContent = e.message;
  }
});

$('logout').addEventListener('click', () => connection.signOut());

connection.start();

// ---- Conversations -------------------------------------------------------
$('open-conversation').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = $('conversation').value.trim();
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(id)) {
    $('conversation-error').textContent = '1–64 characters: letters, digits, _ - . :';
    return;
  }
  location.href = new URL(`c/${encodeURIComponent(id)}`, BASE).href;
});
