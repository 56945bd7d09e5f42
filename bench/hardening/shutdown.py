#   python3 bench/hardening/shutdown.py path/to/tally
# SIGTERM under steady posting: how long the shutdown takes, what the
# posters were told, and whether every acknowledged message is stored once.
import json, os, signal, sqlite3, subprocess, sys, threading, time, http.client, re, tempfile
binary = sys.argv[1]
d = tempfile.mkdtemp()
log = open(f"{d}/log", "w+")
p = subprocess.Popen([binary, "--addr", "127.0.0.1:0", "--database-url", f"sqlite://{d}/t.db",
    "--api-key", "api-key-0123456789abcdef", "--message-limit", "0", "--max-connections-per-ip", "0"],
    stdout=log, stderr=subprocess.STDOUT)
for _ in range(100):
    log.seek(0); m = re.search(r"listening on http://([0-9.:]+)", log.read())
    if m: break
    time.sleep(0.1)
host, port = m.group(1).rsplit(":", 1)
acked, codes, stop = [], {}, False
lock = threading.Lock()
def poster(k):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    i = 0
    while not stop:
        body = json.dumps({"userId": "bot", "content": f"m-{k}-{i}"}); i += 1
        try:
            c.request("POST", "/api/conversations/drain/messages", body,
                      {"Authorization": "Bearer api-key-0123456789abcdef", "Content-Type": "application/json"})
            r = c.getresponse(); data = r.read()
        except Exception:
            return
        with lock:
            if r.status == 201: acked.append(json.loads(data)["messageId"])
            else:
                code = json.loads(data)["error"]["code"]; codes[code] = codes.get(code, 0) + 1
threads = [threading.Thread(target=poster, args=(k,)) for k in range(8)]
for t in threads: t.start()
time.sleep(3)
t0 = time.monotonic(); p.send_signal(signal.SIGTERM); rc = p.wait(timeout=300); took = time.monotonic() - t0
stop = True
for t in threads: t.join()
ids = [r[0] for r in sqlite3.connect(f"{d}/t.db").execute("SELECT id FROM messages")]
print(f"exit {rc} after {took*1000:.0f} ms; {len(acked)} acknowledged, refused {codes}; "
      f"{len(ids)} stored, {len(set(ids))} distinct, acknowledged and missing: {len(set(acked) - set(ids))}")
