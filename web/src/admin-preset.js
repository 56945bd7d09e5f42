// Served before the official Socket.IO Admin UI's scripts at /admin/: the UI
// asks which server to connect to and remembers the answer in localStorage.
// Until someone has chosen another, it is the tally that served the page.
try {
  if (!localStorage.getItem('server_url')) {
    localStorage.setItem('server_url', location.origin);
  }
} catch (_) {
  // Storage disabled: the UI then asks for the URL itself.
}
