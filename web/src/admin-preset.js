// Served before the official Socket.IO Admin UI's scripts at .../admin/: the
// UI asks which server to connect to and remembers the answer in
// localStorage. Until someone has chosen another, it is the tally that
// served the page: its origin, and its Socket.IO path next to admin/ (so a
// tally mounted under a prefix, e.g. /tally/admin/, is reached at
// /tally/socket.io).
try {
  if (!localStorage.getItem('server_url')) {
    localStorage.setItem('server_url', location.origin);
    localStorage.setItem('path', location.pathname.replace(/admin\/[^/]*$/, 'socket.io'));
  }
} catch (_) {
  // Storage disabled: the UI then asks for the URL itself.
}
