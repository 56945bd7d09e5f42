// The click contract on Node's socket.io, the way most people would write it:
// an in-memory counter, an ack with the new total, and a broadcast after
// every increment. It is the design's own baseline.
//
// With THROTTLE_MS=N it is the best simple design instead, the fair peer:
// the first change in a window of N ms is broadcast at once, later ones are
// merged into one trailing broadcast when the window ends (what tally's
// --broadcast-interval does; its default is 10 ms).
//
// It also speaks the conversation contract the straightforward way, in
// memory: `join_conversation` joins the room and answers with the last 50
// messages, `message` keeps the message and emits it to the room, so the
// `chat` workload can run against both servers.
'use strict';

const http = require('node:http');
const { randomUUID } = require('node:crypto');
const { Server } = require('socket.io');

const HISTORY = 50;
const THROTTLE_MS = Number(process.env.THROTTLE_MS ?? 0);
// `/healthz` answers 200 like tally's, so `tally-bench scale` can ask both
// servers how promptly they answer while holding many connections.
const server = http.createServer((req, res) => {
  res.statusCode = req.url === '/healthz' ? 200 : 404;
  res.end(res.statusCode === 200 ? 'ok' : '');
});
const io = new Server(server, { transports: ['websocket', 'polling'] });
let total = 0;
const conversations = new Map();

function conversation(id) {
  let room = conversations.get(id);
  if (!room) {
    room = { total: 0, messages: [] };
    conversations.set(id, room);
  }
  return room;
}

// Throttled broadcasts: `open` while a window runs, `dirty` when a change
// came in it and is still to be sent.
let open = false;
let dirty = false;
function publish() {
  if (!THROTTLE_MS) {
    io.emit('count', { total });
    return;
  }
  if (open) {
    dirty = true;
    return;
  }
  io.emit('count', { total });
  open = true;
  const close = () => {
    if (dirty) {
      dirty = false;
      io.emit('count', { total });
      setTimeout(close, THROTTLE_MS);
    } else {
      open = false;
    }
  };
  setTimeout(close, THROTTLE_MS);
}

io.on('connection', (socket) => {
  const user = typeof socket.handshake.auth?.username === 'string' ? socket.handshake.auth.username : null;
  socket.emit('count', { total });
  socket.on('click', (...args) => {
    total += 1;
    const ack = args.find((arg) => typeof arg === 'function');
    if (ack) ack({ total });
    publish();
  });
  socket.on('join_conversation', (payload, ack) => {
    const id = payload?.conversationId;
    if (typeof id !== 'string' || typeof ack !== 'function') return;
    socket.join(id);
    const room = conversation(id);
    const online = io.sockets.adapter.rooms.get(id)?.size ?? 0;
    ack({ conversationId: id, total: room.total, online, history: room.messages.slice(-HISTORY) });
  });
  socket.on('message', (payload, ack) => {
    const id = payload?.conversationId;
    const content = typeof payload?.content === 'string' ? payload.content.trim() : '';
    if (typeof ack !== 'function') return;
    if (!user || typeof id !== 'string' || !socket.rooms.has(id) || !content || content.length > 2000) {
      ack({ error: { code: 'invalid_payload', message: 'refused' } });
      return;
    }
    const message = {
      type: 'message',
      conversationId: id,
      userId: user,
      content,
      timestamp: new Date().toISOString(),
      messageId: randomUUID(),
    };
    const room = conversation(id);
    room.messages.push(message);
    if (room.messages.length > HISTORY) room.messages.shift();
    io.to(id).emit('message', message);
    ack({ messageId: message.messageId, timestamp: message.timestamp });
  });
});

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});

process.on('SIGTERM', () => io.close(() => process.exit(0)));
