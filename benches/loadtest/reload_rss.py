#!/usr/bin/env python3
"""Peak RSS of `cellns serve` during reloads of a big map, against its steady RSS.

usage: reload_rss.py CELLNS_BIN MAP.json [RELOADS=3]

Serves a copy of MAP.json (nice 10, one UDP worker, --reload-debounce-ms 20,
RUST_LOG=info), waits until it answers, waits 2 s and takes VmRSS as the
steady size. Then RELOADS times: resets the peak (`echo 5 >
/proc/PID/clear_refs`, root), hard-links the other of two copies of the map
(differing only in `version`, or in trailing whitespace when it has none:
a new content that moves no tenant) and renames it over the map, samples
VmRSS every 2 ms until the server logs "map reloaded", and prints VmHWM (the
peak of that reload alone), its ratio to the steady VmRSS, the server's
build_ms/total_ms and a coarse RSS timeline. Memory does not depend on CPU
speed, so a busy machine changes the times, not the peak. Used for the
reload memory figures in BENCHMARKS.md; `RELOAD=1 run.sh` measures the same
peak under query load.
"""
import os, re, shutil, socket, struct, subprocess, sys, tempfile, time
BIN, SRC = sys.argv[1], sys.argv[2]
K = int(sys.argv[3]) if len(sys.argv) > 3 else 3
d = tempfile.mkdtemp(prefix="cellns-reload-rss-")
ext = os.path.splitext(SRC)[1]
text = open(SRC).read()
m = re.search(r'"version": "([^"]*)"', text)
var = []
for t in "ab":
    p = f"{d}/m-{t}{ext}"
    open(p, "w").write(text.replace(m.group(0), f'"version": "{m.group(1)}-{t}"', 1) if m else text + "\n" * (1 + "ab".index(t)))
    var.append(p)
del text
mp = f"{d}/map{ext}"
os.link(var[0], mp)
def freeport():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
port = freeport()
log = open(f"{d}/log", "w")
p = subprocess.Popen(["nice", "-n", "10", BIN, "serve", "--map", mp, "--dns-listen", f"127.0.0.1:{port}",
                      "--http-listen", "127.0.0.1:0", "--udp-workers", "1", "--reload-debounce-ms", "20"],
                     stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn,cellns=info"))
def st(k):
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith(k):
            return int(l.split()[1]) / 1024
def ready():
    q = struct.pack(">HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x07t000001\x05cells\x07example\x04test\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.1)
    try:
        s.sendto(q, ("127.0.0.1", port)); r = s.recv(512); return struct.unpack(">H", r[6:8])[0] > 0
    except OSError:
        return False
    finally:
        s.close()
t0 = time.time()
while not ready():
    if p.poll() is not None: sys.exit(open(f"{d}/log").read())
    time.sleep(0.02)
print(f"loaded in {time.time() - t0:.2f}s; start-up peak VmHWM {st('VmHWM:'):.1f} MiB")
time.sleep(2)
steady = st("VmRSS:")
print(f"steady VmRSS {steady:.1f} MiB")
def done():
    return open(f"{d}/log").read().count("map reloaded")
for k in range(K):
    open(f"/proc/{p.pid}/clear_refs", "w").write("5")
    base = st("VmHWM:")
    n0 = done()
    samples = []
    tmp = mp + ".next"
    os.link(var[(k + 1) % 2], tmp)
    ts = time.time()
    os.rename(tmp, mp)
    while done() == n0 and time.time() - ts < 120:
        samples.append((time.time() - ts, st("VmRSS:")))
        time.sleep(0.002)
    line = re.sub(r"\x1b\[[0-9;]*m", "", [l for l in open(f"{d}/log") if "map reloaded" in l][-1])
    bm = re.search(r"build_ms=(\d+)", line); tm = re.search(r"total_ms=(\d+)", line)
    hwm = st("VmHWM:")
    peak_at = max(samples, key=lambda x: x[1]) if samples else (0, 0)
    time.sleep(1.5)
    after = st("VmRSS:")
    print(f"reload {k + 1}: {time.time() - ts:.2f}s build_ms={bm and bm.group(1)} total_ms={tm and tm.group(1)} "
          f"HWM after clear {base:.1f} -> peak {hwm:.1f} MiB = {hwm / steady:.2f}x steady; "
          f"sampled max {peak_at[1]:.1f} at {peak_at[0]*1000:.0f} ms; RSS after {after:.1f}")
    tl = samples[::max(1, len(samples) // 25)]
    print("   timeline ms:MiB " + " ".join(f"{t*1000:.0f}:{r:.0f}" for t, r in tl))
p.terminate(); p.wait()
shutil.rmtree(d)
