#   python3 bench/hardening/handshakes.py HOST PORT SERVER_PID
# 1,000 engine.io handshakes from one address that never join a namespace:
# how many get a session, and the server's RSS before, after, and once the
# connect timeout has passed.
import http.client, sys, time, re
host, port, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024
print(f"before: RSS {rss():.1f} MiB")
opened = refused = 0
conn = http.client.HTTPConnection(host, port)
for _ in range(1000):
    conn.request("GET", "/socket.io/?EIO=4&transport=polling")
    r = conn.getresponse(); r.read()
    if r.status == 200: opened += 1
    else: refused += 1
print(f"after 1,000 handshakes: {opened} sessions, {refused} refused; RSS {rss():.1f} MiB")
previous = 0
for wait in (12, 50):
    time.sleep(wait - previous)
    previous = wait
    print(f"t+{wait}s: RSS {rss():.1f} MiB")
