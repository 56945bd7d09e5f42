// The click contract on Node's socket.io, the way most people would write it:
// an in-memory counter, an ack with the new total, and a broadcast after
// every increment. It is the baseline tally is measured against.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

const server = http.createServer();
const io = new Server(server, { transports: ['websocket', 'polling'] });
let total = 0;

io.on('connection', (socket) => {
  socket.emit('count', { total });
  socket.on('click', (...args) => {
    total += 1;
    const ack = args.find((arg) => typeof arg === 'function');
    if (ack) ack({ total });
    io.emit('count', { total });
  });
});

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});

process.on('SIGTERM', () => io.close(() => process.exit(0)));
