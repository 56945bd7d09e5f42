// The tally page: shows the live total, sends clicks, and reports the
// connection state. Talks to the server with the official socket.io client.
import { io } from 'socket.io-client';

const button = document.getElementById('click');
const totalEl = document.getElementById('total');
const statusEl = document.getElementById('status');
const format = new Intl.NumberFormat();

// Totals only grow, but an ack and a broadcast can arrive in either order:
// keep the largest total seen so the display never goes backwards.
let shown = -1;
function show(total) {
  if (typeof total !== 'number' || total <= shown) return;
  shown = total;
  totalEl.textContent = format.format(total);
}

function setStatus(state) {
  statusEl.dataset.state = state;
  statusEl.textContent = state;
}

// Default options: same origin, polling first then upgrade to WebSocket, so
// the page also works where WebSocket is blocked.
const socket = io();

socket.on('connect', () => setStatus('connected'));
socket.on('disconnect', () => setStatus('reconnecting'));
socket.io.on('reconnect_attempt', () => setStatus('reconnecting'));
socket.on('count', (msg) => show(msg && msg.total));

button.addEventListener('click', () => {
  // Immediate feedback, even before the server answers.
  button.classList.remove('pressed');
  void button.offsetWidth;
  button.classList.add('pressed');
  // socket.io-client buffers the emit while disconnected, so no click made
  // during a reconnect is lost.
  socket.emit('click', (ack) => {
    if (ack && ack.error) {
      console.warn('click refused:', ack.error.message);
      return;
    }
    show(ack && ack.total);
  });
});
button.addEventListener('animationend', () => button.classList.remove('pressed'));
button.addEventListener('transitionend', () => button.classList.remove('pressed'));
