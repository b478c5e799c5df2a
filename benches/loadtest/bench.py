#!/usr/bin/env python3
"""Side-by-side UDP benchmark of cellns against Knot DNS, NSD, a bare
recvmmsg/sendmmsg responder and (when built) hickory-dns. See README.md.

Adapted from the reference harness (../shared/bench/bench.py, same method):
cellns is a first-class server, fed a JSON map that serves the same names as
the zone file; the harness waits for a quiet machine before every run and
records how noisy each run was; an open-loop overload test (flood.c) and a
goals table were added.

Driven by run.sh; all knobs come from environment variables:
  WORK       scratch dir (zones, configs, logs)         [/tmp/cellns-loadtest]
  RESULTS    where results.json and table.md go        [$WORK/results]
  N          tenant names in the benchmark zone          [100000]
  CELLS      cells in the cellns map                     [1000]
  RSS_N2     second zone size for the memory/load phase  [1000000] (0 = skip)
  MEM_REPS   start-ups per server in that phase; median load time and memory [3]
  DURATION   seconds per dnsperf run                     [15]
  REPS       repetitions per (server, case); median kept [3]
  CLIENTS    dnsperf -c                                  [4]
  OUTST      dnsperf -q (max outstanding)                [200]
  SERVERS    space-separated subset of: ref cellns knot nsd hickory extra
             [all that are available]
  SERVER_CPU / CLIENT_CPU   taskset CPU lists            [0 / 1]
  BASE_PORT  first UDP port; servers get free ports from here [5300]
  CELLNS_BIN path to the cellns binary                   [target/release/cellns]
  CELLNS_WORKERS  cellns --udp-workers                   [1]
  HICKORY_BIN path to hickory-dns binary                 [/tmp/hickory/bin/hickory-dns]
  EXTRA_NAME / EXTRA_CMD  extra server under test, run with `bash -c` (use
             `exec`); sees $PORT, $ADDR, $ZONE, $ZONEFILE, $MAPFILE, $ZONEDIR, $RUNDIR.
  QUIET_WAIT max seconds to wait, before each run, for a quiet machine [600]
  QUIET_CPU  "quiet" = no rustc/cc/ld process and less than this many CPU-s/s
             busy outside the benchmark over 1 s        [0.25]
  NOISY_MAX  a run during which the machine spent more than this many CPU-s/s
             outside the server and the client is repeated [0.1]
  NOISY_RETRIES  at most this many times; then the last one is kept and
             counted as noisy                           [2]
  OVERLOAD   1 = run the open-loop overload test         [1]
  OVERLOAD_SERVERS  servers in the overload test         [ref cellns knot nsd]
  OVERLOAD_DURATION seconds per flood run                [5]
  OVERLOAD_STEPS    offered load as fractions of the server's peak [0.5 0.9 1.1 1.5 2]
  OVERLOAD_REPS     repetitions of the 2x point, median  [3]
  FLOOD_MODE        read | noread (see flood.c)          [noread]
  SIGNED     1 = DNSSEC mode: servers cellns-dnssec (serve --dnssec-keys, one
             ECDSA P-256 CSK) and knot-dnssec (mod-onlinesign, an ECDSA P-256
             CSK) next to the unsigned ones; cases hit and nxdomain without
             the DO bit (unsigned queries to signed servers must not change)
             and hit+do, nxdomain+do with it (dnsperf -D); default servers
             "cellns cellns-dnssec knot knot-dnssec", no overload or 1M phase [0]
  NX_DO_NAMES  names in each nxdomain+do query file: one file per rep, every
             name new, so each answer needs a fresh signature (the cost of a
             random-name flood) rather than a cache hit [1000000]
  RRL        1 = RRL mode: servers cellns and cellns-rrl (--rrl-rate RRL_RATE,
             high enough that nothing is limited: the cost of the
             bookkeeping alone); cases hit and nxdomain; no overload or 1M
             phase [0]
  RRL_RATE   --rrl-rate of cellns-rrl                    [1000000, the maximum]
  RELOAD     1 = reload-latency mode (only this): cellns alone serving a map
             of RELOAD_N tenants; an open-loop flood (flood.c lat:, reading
             answers, timing every query) at RELOAD_RATE q/s; RELOAD_REPS
             rounds of three RELOAD_SECS phases: steady; reloads of the map
             back to back (a file with other content is hard-linked and
             renamed over the map; the next one as soon as the server logs
             "map reloaded", waited for with inotify, not by polling, so the
             driver takes no CPU while it waits); and a control, an
             idle-priority busy loop pinned to the server's CPU (what any
             work on that core costs the tail on this machine, whoever does
             it). Percentiles pooled over the rounds (this machine's tail
             latency drifts by 10x from one minute to the next, so one pair
             of phases says little); steady VmRSS vs peak RSS during the
             reloads (VmHWM, reset with clear_refs before them) [0]
  RELOAD_N   tenants in the reloaded map                 [1000000]
  RELOAD_RATE  offered q/s (open loop)                   [50000]
  RELOAD_SECS  seconds per phase                         [5]
  RELOAD_REPS  rounds (steady, reloads, control)         [8]
"""
import json, os, random, re, resource, shutil, signal, socket, statistics, struct
import subprocess, sys, time

E = os.environ.get
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.abspath(E("WORK", "/tmp/cellns-loadtest"))
RESULTS = os.path.abspath(E("RESULTS", os.path.join(WORK, "results")))
N = int(E("N", "100000"))
CELLS = int(E("CELLS", "1000"))
RSS_N2 = int(E("RSS_N2", "1000000"))
MEM_REPS = int(E("MEM_REPS", "3"))
DURATION = int(E("DURATION", "15"))
REPS = int(E("REPS", "3"))
CLIENTS = int(E("CLIENTS", "4"))
OUTST = int(E("OUTST", "200"))
SCPU = E("SERVER_CPU", "0")
CCPU = E("CLIENT_CPU", "1")
BASE_PORT = int(E("BASE_PORT", "5300"))
CELLNS_BIN = E("CELLNS_BIN", os.path.join(REPO, "target", "release", "cellns"))
CELLNS_WORKERS = E("CELLNS_WORKERS", "1")
HICKORY_BIN = E("HICKORY_BIN", "/tmp/hickory/bin/hickory-dns")
QUIET_WAIT = float(E("QUIET_WAIT", "600"))
QUIET_CPU = float(E("QUIET_CPU", "0.25"))
NOISY_MAX = float(E("NOISY_MAX", "0.1"))
NOISY_RETRIES = int(E("NOISY_RETRIES", "2"))
OVERLOAD = E("OVERLOAD", "1") == "1"
OVERLOAD_SERVERS = E("OVERLOAD_SERVERS", "ref cellns knot nsd").split()
OVERLOAD_DURATION = float(E("OVERLOAD_DURATION", "5"))
OVERLOAD_STEPS = [float(x) for x in E("OVERLOAD_STEPS", "0.5 0.9 1.1 1.5 2").split()]
OVERLOAD_REPS = int(E("OVERLOAD_REPS", "3"))
FLOOD_MODE = E("FLOOD_MODE", "noread")
ZONE = "cells.example.test."
ADDR = "127.0.0.1"
SIGNED = E("SIGNED", "0") == "1"
NX_DO_NAMES = int(E("NX_DO_NAMES", "1000000"))
CASES = E("CASES", "hit nxdomain hit+do nxdomain+do" if SIGNED else "hit nxdomain refused").split()
RRL = E("RRL", "0") == "1"
RRL_RATE = int(E("RRL_RATE", "1000000"))
RELOAD = E("RELOAD", "0") == "1"
RELOAD_N = int(E("RELOAD_N", "1000000"))
RELOAD_RATE = int(E("RELOAD_RATE", "50000"))
RELOAD_SECS = float(E("RELOAD_SECS", "5"))
RELOAD_REPS = int(E("RELOAD_REPS", "8"))
if RRL:
    CASES = E("CASES", "hit nxdomain").split()
if SIGNED or RRL:
    OVERLOAD = E("OVERLOAD", "0") == "1"
    RSS_N2 = int(E("RSS_N2", "0"))
CLK = os.sysconf("SC_CLK_TCK")
BUILD_NAMES = ("rustc", "cc1", "cc1plus", "ld", "ld.lld", "collect2", "cc", "gcc", "mold")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- zone data
def zonedir(n):
    d = os.path.join(WORK, f"z{n}")
    if not os.path.exists(os.path.join(d, "q_refused.txt")):
        log(f"[gen] zone + cellns map with N={n}, {CELLS} cells -> {d}")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_zone.py"), d, str(n), "200000",
                        "42", str(CELLS)], check=True)
    return d


# ---------------------------------------------------------------- servers
def conf_knot(rd, port, zfile, signed=False):
    os.makedirs(os.path.join(rd, "db"), exist_ok=True)
    c = os.path.join(rd, "knot.conf")
    # mod-onlinesign with one ECDSA P-256 CSK (as cellns-dnssec): it signs
    # every answer to a DO query when it is made (no signature cache) and
    # answers NXDOMAIN as NODATA with a minimally covering NSEC.
    sign = f"""policy:
  - id: csk
    algorithm: ecdsap256sha256
    single-type-signing: on
    ksk-lifetime: 0
    zsk-lifetime: 0
mod-onlinesign:
  - id: signer
    policy: csk
""" if signed else ""
    module = "    module: mod-onlinesign/signer\n" if signed else ""
    open(c, "w").write(f"""server:
    rundir: "{rd}"
    listen: {ADDR}@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{rd}/db"
control:
    listen: "{rd}/knot.sock"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{rd}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
{sign}zone:
  - domain: {ZONE}
    file: "{zfile}"
{module}""")
    return ["knotd", "-c", c]


def conf_nsd(rd, port, zfile):
    c = os.path.join(rd, "nsd.conf")
    open(c, "w").write(f"""server:
    ip-address: {ADDR}@{port}
    port: {port}
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{rd}"
    database: ""
    zonelistfile: "{rd}/zone.list"
    xfrdfile: "{rd}/xfrd.state"
    pidfile: "{rd}/nsd.pid"
    logfile: "{rd}/nsd.log"
    verbosity: 0
    hide-version: yes
    # Debian's nsd is built with RRL; its default (200 qps per netblock) would
    # rate-limit NXDOMAIN/REFUSED floods from 127.0.0.1. Disable for benchmarking.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
    # default 'no' adds NS + glue to every answer (110 B vs Knot's 76 B);
    # 'yes' makes responses byte-identical in size to Knot's. NSD_MINIMAL=no to revert.
    minimal-responses: {E("NSD_MINIMAL", "yes")}
remote-control:
    control-enable: no
zone:
    name: {ZONE}
    zonefile: "{zfile}"
""")
    return ["nsd", "-d", "-c", c]


def conf_hickory(rd, port, zfile):
    # hickory-dns 0.26 config schema; -q: no per-query INFO logging;
    # --workers 1: one tokio worker (parity with knot udp-workers:1 / nsd server-count:1)
    c = os.path.join(rd, "hickory.toml")
    open(c, "w").write(f"""listen_addrs_ipv4 = ["{ADDR}"]
listen_port = {port}
directory = "{rd}"
drop_privileges = false

[[zones]]
zone = "{ZONE}"
zone_type = "Primary"
stores = {{ type = "file", zone_path = "{zfile}" }}
""")
    return [HICKORY_BIN, "-q", "--workers", E("HICKORY_WORKERS", "1"), "-c", c, "-p", str(port)]


def conf_cellns(rd, port, mapfile, signed=False, rrl=False):
    # One UDP worker (parity with the others); HTTP on an ephemeral port (it
    # idles); RUST_LOG=warn is set in the environment (see Server).
    cmd = [CELLNS_BIN, "serve", "--map", mapfile, "--dns-listen", f"{ADDR}:{port}",
           "--http-listen", f"{ADDR}:0", "--udp-workers", CELLNS_WORKERS]
    if rrl:
        cmd += ["--rrl-rate", str(RRL_RATE)]
    if signed:
        # One ECDSA P-256 CSK (the keygen default); default signature cache.
        keys = os.path.join(rd, "keys")
        subprocess.run([CELLNS_BIN, "dnssec", "keygen", "--out", keys], check=True,
                       stdout=subprocess.DEVNULL)
        cmd += ["--dnssec-keys", keys]
    return cmd


def build_cmd(name, rd, port, zfile, mapfile):
    if name == "ref":
        return [os.path.join(WORK, "refresp"), ADDR, str(port)]
    if name == "cellns":
        return conf_cellns(rd, port, mapfile)
    if name == "cellns-dnssec":
        return conf_cellns(rd, port, mapfile, signed=True)
    if name == "cellns-rrl":
        return conf_cellns(rd, port, mapfile, rrl=True)
    if name == "cellns-reload":
        # Reloads as fast as the file changes (the default debounce is 100 ms).
        return conf_cellns(rd, port, mapfile) + ["--reload-debounce-ms", "20"]
    if name == "knot":
        return conf_knot(rd, port, zfile)
    if name == "knot-dnssec":
        return conf_knot(rd, port, zfile, signed=True)
    if name == "nsd":
        return conf_nsd(rd, port, zfile)
    if name == "hickory":
        return conf_hickory(rd, port, zfile)
    if name == "extra":
        return ["bash", "-c", E("EXTRA_CMD")]
    raise ValueError(name)


def label(name):
    return E("EXTRA_NAME", "extra") if name == "extra" else name


def proc_children():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open(f"/proc/{d}/stat").read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    return kids


class Server:
    def __init__(self, name, port, zdir, mapfile=None, rust_log="warn"):
        self.name, self.port, self.zdir = name, port, zdir
        self.mapfile, self.rust_log = mapfile, rust_log
        self.rd = os.path.join(WORK, "run", f"{name}-{os.path.basename(zdir)}")
        shutil.rmtree(self.rd, ignore_errors=True)
        os.makedirs(self.rd)
        zfile = os.path.join(zdir, "cells.example.test.zone")
        mapfile = mapfile or os.path.join(zdir, "cellns-map.json")
        cmd = ["taskset", "-c", SCPU] + build_cmd(name, self.rd, port, zfile, mapfile)
        env = dict(os.environ, PORT=str(port), ADDR=ADDR, ZONE=ZONE, ZONEFILE=zfile,
                   MAPFILE=mapfile, ZONEDIR=zdir, RUNDIR=self.rd, RUST_LOG=rust_log)
        self.logf = open(os.path.join(self.rd, "server.log"), "w")
        self.t0 = time.time()
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        self.load_s = None

    def wait_ready(self, timeout):
        q = "t000001." + ZONE
        while time.time() - self.t0 < timeout:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited rc={self.p.returncode}, see {self.rd}/server.log")
            r = dns_query(self.port, q, 1, 0.05)
            if r and r[0] == 0 and r[1] > 0:
                self.load_s = time.time() - self.t0
                return
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def pids(self):
        # the started process and all its descendants (NSD forks; bash -c)
        kids = proc_children()
        out, todo = [], [self.p.pid]
        while todo:
            x = todo.pop()
            out.append(x)
            todo += kids.get(x, [])
        return out

    def cpu_ticks(self):
        t = 0
        for pid in self.pids():
            try:
                f = open(f"/proc/{pid}/stat").read()
                f = f[f.rindex(")") + 2:].split()
                t += int(f[11]) + int(f[12])       # utime + stime (all threads)
            except OSError:
                pass
        return t

    def mem(self):
        """(max VmRSS of any process in tree, sum of Pss over tree, max VmHWM =
        peak RSS so far) in MiB"""
        rss, pss, hwm = 0, 0, 0
        for pid in self.pids():
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        rss = max(rss, int(line.split()[1]))
                    elif line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
                for line in open(f"/proc/{pid}/smaps_rollup"):
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                pass
        return rss / 1024, pss / 1024, hwm / 1024

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.logf.close()


_used_ports = set()


def free_port(start):
    """first port >= start free for UDP and TCP on ADDR (the box is shared; never
    collide with someone else's listener)"""
    p = start
    while True:
        if p not in _used_ports:
            ok = True
            for t in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                x = socket.socket(socket.AF_INET, t)
                try:
                    x.bind((ADDR, p))
                except OSError:
                    ok = False
                finally:
                    x.close()
            if ok:
                _used_ports.add(p)
                return p
        p += 1


# ---------------------------------------------------------------- dns helpers
def dns_query(port, qname, qtype, timeout, dnssec_ok=False):
    """-> (rcode, ancount, aa, response length) or None; with the DO bit (EDNS
    1232) when dnssec_ok"""
    qid = random.randint(0, 65535)
    pkt = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1 if dnssec_ok else 0)
    for l in qname.rstrip(".").split("."):
        pkt += bytes([len(l)]) + l.encode()
    pkt += b"\0" + struct.pack(">HH", qtype, 1)
    if dnssec_ok:
        pkt += b"\0" + struct.pack(">HHIH", 41, 1232, 0x8000, 0)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(pkt, (ADDR, port))
        d, _ = s.recvfrom(4096)
        _, fl, _, an, _, _ = struct.unpack(">HHHHHH", d[:12])
        return fl & 15, an, bool(fl & 0x400), len(d)
    except (socket.timeout, OSError):
        return None
    finally:
        s.close()


RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def qfile(zdir, case, rep=None):
    """the query file of a case; a measured nxdomain+do run (rep given) gets a
    file of fresh names per rep"""
    if case == "nxdomain+do" and rep is not None:
        return nx_do_file(zdir, rep)
    return os.path.join(zdir, f"q_{case.replace('+do', '')}.txt")


def nx_do_file(zdir, rep):
    """NX_DO_NAMES names that do not exist, none seen before in this run: a
    random-name flood, so each signed answer needs a new signature"""
    path = os.path.join(zdir, f"q_nxdomain_do_{NX_DO_NAMES}_{rep}.txt")
    if not os.path.exists(path):
        rnd = random.Random(1000 + rep)
        with open(path + ".tmp", "w") as f:
            for k in range(NX_DO_NAMES):
                f.write(f"r{rep}-{k:07d}-{rnd.randrange(1 << 30):08x}.{ZONE} A\n")
        os.rename(path + ".tmp", path)
    return path


def serves(name, case):
    """which (server, case) pairs run: ref only hits; DO cases only on the signed servers"""
    if name == "ref":
        return case == "hit"
    if case.endswith("+do"):
        return name.endswith("-dnssec")
    return True


def probe_ms(srv, zdir, case, k=5):
    """median wall ms of k sequential single queries (unloaded server)"""
    names = [l.split()[0] for l, _ in zip(open(qfile(zdir, case)), range(k))]
    ts = []
    for q in names:
        t = time.perf_counter()
        r = dns_query(srv.port, q, 1, 5.0, case.endswith("+do"))
        ts.append((time.perf_counter() - t) * 1000 if r else float("inf"))
    return statistics.median(ts)


def probe_last(srv):
    """the answer for the last tenant of the big zone (proves it all loaded)"""
    r = dns_query(srv.port, f"t{RSS_N2:06d}.{ZONE}", 1, 1.0)
    return "timeout" if r is None else f"{RCODES.get(r[0], r[0])}/an={r[1]}"


def sample_answers(srv, zdir):
    out = {}
    for case in CASES:
        if not serves(srv.name, case):
            continue
        q = open(qfile(zdir, case)).readline().split()[0]
        r = dns_query(srv.port, q, 1, 1.0, case.endswith("+do"))
        out[case] = ("timeout" if r is None else
                     f"{RCODES.get(r[0], r[0])}/an={r[1]}{'/aa' if r[2] else ''}/{r[3]}B")
    return out


# ---------------------------------------------------------------- machine noise
def cpu_busy_all():
    """busy ticks of all CPUs (all but idle, iowait) and of SERVER_CPU"""
    tot, one = 0, 0
    for line in open("/proc/stat"):
        if line.startswith("cpu"):
            f = line.split()
            v = list(map(int, f[1:9]))
            b = sum(v) - v[3] - v[4]
            if f[0] == "cpu":
                tot = b
            elif f[0] == f"cpu{SCPU}":
                one = b
    return tot, one


def builds_running():
    """names of compiler/linker processes on the machine (others' builds)"""
    seen = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                c = open(f"/proc/{d}/comm").read().strip()
            except OSError:
                continue
            if c in BUILD_NAMES or c.startswith("e2e-"):
                seen.add(c)
    return sorted(seen)


ALL = []   # every running server shares SERVER_CPU, so all must be idle


def foreign_busy(window=1.0):
    """CPU-s/s used on the machine outside the benchmark's servers over `window`"""
    b0, s0 = cpu_busy_all()[0], sum(x.cpu_ticks() for x in ALL)
    time.sleep(window)
    b1, s1 = cpu_busy_all()[0], sum(x.cpu_ticks() for x in ALL)
    return max(0, (b1 - b0) - (s1 - s0)) / CLK / window


def quiet_wait():
    """wait (up to QUIET_WAIT s) until nobody else builds or burns CPU.
    -> (seconds waited, reached quiet?, foreign CPU-s/s at the end, builds seen)"""
    t0 = time.time()
    while True:
        b = builds_running()
        f = foreign_busy()
        if not b and f < QUIET_CPU:
            return time.time() - t0, True, f, b
        if time.time() - t0 > QUIET_WAIT:
            log(f"[noise] not quiet after {QUIET_WAIT:.0f}s (foreign {f:.2f} CPU-s/s, builds {b}); running anyway")
            return time.time() - t0, False, f, b
        time.sleep(2)


NOISE = []   # one record per measured run


def settle(max_s=180):
    """wait until every running server has drained its socket backlog (CPU idle),
    so a slow case cannot leak queued queries/CPU into the next measurement"""
    t0 = time.time()
    last = sum(x.cpu_ticks() for x in ALL)
    while time.time() - t0 < max_s:
        time.sleep(0.5)
        c = sum(x.cpu_ticks() for x in ALL)
        if c - last <= 2:
            return time.time() - t0
        last = c
    log(f"[warn] servers still busy after {max_s}s")
    return time.time() - t0


DEATHS = []  # servers found dead before a run (and restarted)


def ensure_alive(srv):
    """On a shared machine someone may kill our server (e.g. `pkill cellns`):
    record it and start it again on the same port, rather than measure nothing."""
    if srv.p.poll() is None:
        return srv
    rc = srv.p.returncode
    why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
    log(f"[dead] {label(srv.name)} is gone ({why}); restarting it, see {srv.rd}/server.log")
    DEATHS.append(dict(server=srv.name, why=why, at=time.time()))
    srv.logf.close()
    shutil.copy(os.path.join(srv.rd, "server.log"), os.path.join(WORK, f"dead-{srv.name}-{int(time.time())}.log"))
    new = Server(srv.name, srv.port, srv.zdir, srv.mapfile, srv.rust_log)
    new.wait_ready(600)
    srv.__dict__.update(new.__dict__)
    return srv


def measured(srv, cmd, what):
    """runs the client `cmd` after settle + quiet_wait, again (up to NOISY_RETRIES
    times) when something else ran meanwhile; -> (CompletedProcess, stats)"""
    for attempt in range(NOISY_RETRIES + 1):
        r, st = measured_once(srv, cmd, what)
        noisy = st["other_cpu_s"] > NOISY_MAX * st["wall"]
        st.update(retries=attempt, noisy=noisy)
        NOISE[-1].update(retries=attempt, noisy=noisy)
        if not noisy:
            break
        if attempt < NOISY_RETRIES:
            log(f"[noise] {label(srv.name)} {what}: {st['other_cpu_s']:.2f} CPU-s elsewhere during "
                f"the run; repeating it")
    return r, st


def measured_once(srv, cmd, what):
    ensure_alive(srv)
    w = settle()
    if w > 5:
        log(f"[settle] waited {w:.0f}s for backlog to drain")
    qw, quiet, fb, builds = quiet_wait()
    ensure_alive(srv)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, (a0, b0), t0 = srv.cpu_ticks(), cpu_busy_all(), time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    c1, (a1, b1), t1 = srv.cpu_ticks(), cpu_busy_all(), time.time()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    cpu_s = (c1 - c0) / CLK
    builds_after = builds_running()
    st = dict(cpu_s=cpu_s, cpu0_busy_s=(b1 - b0) / CLK, wall=t1 - t0, client_cpu_s=client_cpu,
              # everything busy on the machine that is neither the server nor the
              # client process (other people's work, and softirq time the kernel
              # did not charge to either process)
              other_cpu_s=max(0.0, (a1 - a0) / CLK - cpu_s - client_cpu),
              quiet_waited_s=qw, quiet=quiet, foreign_before=fb,
              builds=sorted(set(builds) | set(builds_after)))
    NOISE.append(dict(server=srv.name, what=what, **{k: st[k] for k in
                 ("quiet_waited_s", "quiet", "foreign_before", "other_cpu_s", "builds", "wall")}))
    return r, st


# ---------------------------------------------------------------- dnsperf
def dnsperf(srv, qfile, dur, what="run", dnssec_ok=False):
    cmd = ["taskset", "-c", CCPU, "dnsperf", "-s", ADDR, "-p", str(srv.port), "-d", qfile,
           "-l", str(dur), "-c", str(CLIENTS), "-T", "1", "-q", str(OUTST), "-t", "2"]
    if dnssec_ok:
        cmd.append("-D")    # EDNS with the DO bit
    r, st = measured(srv, cmd, what)
    o = r.stdout

    def g(pat, cast=float, default=None):
        m = re.search(pat, o)
        return cast(m.group(1)) if m else default
    res = dict(
        sent=g(r"Queries sent:\s+(\d+)", int, 0),
        completed=g(r"Queries completed:\s+(\d+)", int, 0),
        lost=g(r"Queries lost:\s+(\d+)", int, 0),
        qps=g(r"Queries per second:\s+([\d.]+)", float, 0.0),
        lat_avg=g(r"Average Latency \(s\):\s+([\d.]+)"),
        lat_max=g(r"Average Latency \(s\):.*max ([\d.]+)"),
        lat_sd=g(r"Latency StdDev \(s\):\s+([\d.]+)"),
        rcodes=(re.search(r"Response codes:\s+(.*)", o) or [None, ""])[1].strip(),
        resp_size=g(r"Average packet size:.*response (\d+)", int),
        runtime=g(r"Run time \(s\):\s+([\d.]+)", float, dur),
        **st,
    )
    res["lost_pct"] = 100.0 * res["lost"] / res["sent"] if res["sent"] else 100.0
    res["q_per_cpus"] = res["completed"] / res["cpu_s"] if res["cpu_s"] > 0 else 0.0
    if not res["sent"]:
        log(r.stdout, r.stderr)
    return res


# ---------------------------------------------------------------- overload
def flood(srv, qfile, rate, dur):
    cmd = ["taskset", "-c", CCPU, os.path.join(WORK, "flood"), ADDR, str(srv.port), qfile,
           str(int(rate)), str(dur)] + (["noread"] if FLOOD_MODE == "noread" else [])
    r, st = measured(srv, cmd, f"flood {int(rate)}")
    kv = dict(x.split("=") for x in r.stdout.split())
    res = {k: float(v) for k, v in kv.items()}
    res.update(st, offered=rate)
    res["busy"] = st["cpu_s"] / dur
    res["q_per_cpus"] = res["ans_qps"] * dur / st["cpu_s"] if st["cpu_s"] > 0 else 0.0
    return res


def overload(servers, zdir):
    """open-loop flood at fractions of each server's peak.

    peak = answered q/s when flooded as fast as one client core can send;
    that is the load at which the server saturates, so "twice the saturating
    load" is an offered rate of 2 x peak."""
    out = {}
    for s in servers:
        if s.name not in OVERLOAD_SERVERS:
            continue
        for case in ("hit", "nxdomain"):
            if s.name == "ref" and case != "hit":
                continue
            qf = os.path.join(zdir, f"q_{case}.txt")
            pts = []
            mx = flood(s, qf, 0, OVERLOAD_DURATION)
            pts.append(mx)
            peak = mx["ans_qps"]
            log(f"[overload] {label(s.name):8s} {case:8s} max offered {mx['send_qps']:9.0f} -> "
                f"answered {peak:9.0f} busy {mx['busy']:.2f}")
            for f in OVERLOAD_STEPS:
                if f == 2:
                    continue
                p = flood(s, qf, f * peak, OVERLOAD_DURATION)
                pts.append(p)
                log(f"[overload] {label(s.name):8s} {case:8s} offered {p['send_qps']:9.0f} "
                    f"({f:.2f}x) -> answered {p['ans_qps']:9.0f} busy {p['busy']:.2f}")
            peak = max(p["ans_qps"] for p in pts)
            twice = []
            for _ in range(OVERLOAD_REPS):
                p = flood(s, qf, 2 * peak, OVERLOAD_DURATION)
                twice.append(p)
                pts.append(p)
                log(f"[overload] {label(s.name):8s} {case:8s} offered {p['send_qps']:9.0f} "
                    f"(2x peak {peak:.0f}) -> answered {p['ans_qps']:9.0f} busy {p['busy']:.2f}")
            peak = max(p["ans_qps"] for p in pts)
            # The saturated plateau: points below 2x where the server was busy
            # and could not answer everything. `peak` (the best single run)
            # is biased upwards by run-to-run noise; the plateau's median is not.
            sat = [p["ans_qps"] for p in pts[:len(pts) - len(twice)]
                   if p["busy"] >= 0.97 and p["ans_qps"] < 0.98 * p["send_qps"]]
            out[f"{s.name}/{case}"] = dict(
                peak=peak, points=pts, plateau=med(sat) if sat else peak,
                twice_offered=med([p["send_qps"] for p in twice]),
                twice_answered=med([p["ans_qps"] for p in twice]),
                twice_q_per_cpus=med([p["q_per_cpus"] for p in twice]),
                twice_busy=med([p["busy"] for p in twice]))
    return out


# ---------------------------------------------------------------- main
def available(names):
    ok = []
    for n in names:
        if n == "ref":
            ok.append(n)
        elif n in ("cellns", "cellns-dnssec", "cellns-rrl") and os.access(CELLNS_BIN, os.X_OK):
            ok.append(n)
        elif n in ("knot", "knot-dnssec") and shutil.which("knotd"):
            ok.append(n)
        elif n == "nsd" and shutil.which("nsd"):
            ok.append(n)
        elif n == "hickory" and os.access(HICKORY_BIN, os.X_OK):
            ok.append(n)
        elif n == "extra" and E("EXTRA_CMD"):
            ok.append(n)
        else:
            log(f"[skip] {n}: not available")
    return ok


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else float("nan")


def main():
    default = ("cellns cellns-dnssec knot knot-dnssec" if SIGNED else "cellns cellns-rrl" if RRL
               else "ref cellns knot nsd hickory extra")
    names = available(E("SERVERS", default).split())
    os.makedirs(RESULTS, exist_ok=True)
    zdir = zonedir(N)
    servers, started = [], []
    runs, over = {}, {}
    t_start = time.time()
    try:
        for i, n in enumerate(names):
            s = Server(n, free_port(BASE_PORT), zdir)
            started.append(s)
            s.wait_ready(float(E("EXTRA_READY_TIMEOUT", "600")) if n == "extra" else 600)
            log(f"[up] {label(n)} port {s.port} ready in {s.load_s:.2f}s, answers: {sample_answers(s, zdir)}")
            servers.append(s)
            ALL.append(s)
        info = {s.name: dict(load_s=s.load_s, mem=s.mem(), answers=sample_answers(s, zdir),
                             nx_ms=probe_ms(s, zdir, "nxdomain"), hit_ms=probe_ms(s, zdir, "hit"))
                for s in servers}
        # warm-up
        for s in servers if REPS else []:
            dnsperf(s, os.path.join(zdir, "q_hit.txt"), 2, "warm-up")
        for rep in range(REPS):
            for case in CASES:
                for s in servers:
                    if not serves(s.name, case):
                        continue
                    r = dnsperf(s, qfile(zdir, case, rep), DURATION, f"{case} rep {rep + 1}",
                                case.endswith("+do"))
                    runs.setdefault((s.name, case), []).append(r)
                    log(f"[run {rep+1}/{REPS}] {label(s.name):8s} {case:8s} qps={r['qps']:9.0f} "
                        f"lost={r['lost_pct']:.2f}% srvcpu={r['cpu_s']:.2f}s cpu0={r['cpu0_busy_s']:.2f}s "
                        f"q/cpu-s={r['q_per_cpus']:9.0f} lat={r['lat_avg']} resp={r['resp_size']}B "
                        f"rc={r['rcodes']} other={r['other_cpu_s']:.2f}s quiet={r['quiet']}")
        if OVERLOAD:
            over = overload(servers, zdir)
        for s in servers:
            info[s.name]["mem_after"] = s.mem()
    finally:
        for s in started:
            s.stop()
        ALL.clear()

    mem2 = {}
    if RSS_N2:
        z2 = zonedir(RSS_N2)
        # interleaved (rep -> server), each server alone on the machine
        samples = {}
        for rep in range(MEM_REPS):
            for n in names:
                if n == "ref":
                    continue
                quiet_wait()
                s = Server(n, free_port(BASE_PORT), z2)
                try:
                    s.wait_ready(1800)
                    ALL.append(s)
                    settle(30)
                    m = dict(load_s=s.load_s, mem=s.mem(), nx_ms=probe_ms(s, z2, "nxdomain"),
                             hit_ms=probe_ms(s, z2, "hit"), last=probe_last(s))
                    samples.setdefault(n, []).append(m)
                    log(f"[rss N={RSS_N2} {rep + 1}/{MEM_REPS}] {label(n)}: load {s.load_s:.2f}s "
                        f"rss/pss MiB {m['mem'][0]:.1f}/{m['mem'][1]:.1f}, t{RSS_N2:06d}: {m['last']}")
                except RuntimeError as e:
                    log(f"[rss N={RSS_N2}] {label(n)}: {e}")
                finally:
                    ALL.clear()
                    s.stop()
        for n, ms in samples.items():
            mem2[n] = dict(load_s=med([m["load_s"] for m in ms]),
                           mem=tuple(med([m["mem"][i] for m in ms]) for i in range(3)),
                           nx_ms=med([m["nx_ms"] for m in ms]), hit_ms=med([m["hit_ms"] for m in ms]),
                           samples=ms)

    params = dict(N=N, CELLS=CELLS, SIGNED=SIGNED, CASES=CASES, NX_DO_NAMES=NX_DO_NAMES, RRL=RRL,
                  RRL_RATE=RRL_RATE, RSS_N2=RSS_N2, DURATION=DURATION, REPS=REPS, CLIENTS=CLIENTS,
                  OUTST=OUTST, MEM_REPS=MEM_REPS, SERVER_CPU=SCPU, CLIENT_CPU=CCPU, CELLNS_WORKERS=CELLNS_WORKERS,
                  OVERLOAD_DURATION=OVERLOAD_DURATION, OVERLOAD_STEPS=OVERLOAD_STEPS,
                  OVERLOAD_REPS=OVERLOAD_REPS, FLOOD_MODE=FLOOD_MODE,
                  started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
                  minutes=(time.time() - t_start) / 60)
    json.dump(dict(runs={f"{k[0]}/{k[1]}": v for k, v in runs.items()}, info=info, mem2=mem2,
                   overload=over, noise=NOISE, deaths=DEATHS, params=params,
                   labels={s.name: label(s.name) for s in servers}),
              open(os.path.join(RESULTS, "results.json"), "w"), indent=1)
    report(runs, info, mem2, over, servers)


# ---------------------------------------------------------------- report
def report(runs, info, mem2, over, servers):
    P = print
    P(f"\nN={N} names ({CELLS} cells in the cellns map), {DURATION}s x {REPS} reps (median), "
      f"dnsperf -c {CLIENTS} -q {OUTST} -T 1 on CPU {CCPU}, server on CPU {SCPU}\n")
    P("| server | case | qps | lost % | avg lat ms (sd) | server CPU s | CPU0 busy s | "
      "**q / server CPU-s** | resp B | sample answer |")
    P("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    Q = {}
    for s in servers:
        for case in CASES:
            rr = runs.get((s.name, case))
            if not rr:
                continue
            lat = med([r["lat_avg"] for r in rr]) * 1000
            sd = med([r["lat_sd"] for r in rr]) * 1000
            Q[(s.name, case)] = dict(q=med([r["q_per_cpus"] for r in rr]), qps=med([r["qps"] for r in rr]))
            P(f"| {label(s.name)} | {case} | {med([r['qps'] for r in rr]):,.0f} | "
              f"{med([r['lost_pct'] for r in rr]):.2f} | {lat:.3f} ({sd:.3f}) | "
              f"{med([r['cpu_s'] for r in rr]):.2f} | {med([r['cpu0_busy_s'] for r in rr]):.2f} | "
              f"**{Q[(s.name, case)]['q']:,.0f}** | {rr[0]['resp_size']} | {info[s.name]['answers'][case]} |")

    def ratio(a, b, key="q"):
        x, y = Q.get(a), Q.get(b)
        return x[key] / y[key] if x and y and y[key] else None

    def paired(a, b):
        """median over reps of the ratio of two runs of the same rep: the reps are
        interleaved (rep -> case -> server), so this cancels slow drift of the machine"""
        x, y = runs.get(a), runs.get(b)
        if not x or not y:
            return None
        rs = [u["q_per_cpus"] / v["q_per_cpus"] for u, v in zip(x, y) if v["q_per_cpus"]]
        return med(rs) if rs else None

    def fr(x):
        return "–" if x is None else f"{x:.2f}×"
    subjects = [x for x in ("cellns", "extra") if any(k[0] == x for k in Q)]
    if subjects and "cellns" in subjects and not (SIGNED or RRL):
        P("\nRatios to the others: q / server CPU-s, ratio of the medians above; "
          "[median of the per-rep paired ratios]; (qps). `ref` answers only the hit case; its hit "
          f"figure is the bar for every case. {label('extra')} = the extra server, if any.\n")
        others = ("knot", "nsd", "ref", "hickory", "extra")
        P("| server | case | q/CPU-s | " + " | ".join(f"/{label(o)}" for o in others) + " |")
        P("|---|---|---:|" + "---:|" * len(others))
        for who in subjects:
            for case in CASES:
                c = Q.get((who, case))
                if not c:
                    continue
                cols = []
                for o in others:
                    oc = "hit" if o == "ref" else case
                    cols.append(f"{fr(ratio((who, case), (o, oc)))} "
                                f"[{fr(paired((who, case), (o, oc)))}] "
                                f"({fr(ratio((who, case), (o, oc), 'qps'))})"
                                if (o, oc) in Q and o != who else "–")
                P(f"| {label(who)} | {case} | {c['q']:,.0f} | " + " | ".join(cols) + " |")

    P(f"\n| server | load s (N={N}) | VmRSS MiB | PSS sum MiB | 1-query ms hit / nx "
      f"| load s (N={RSS_N2}) | VmRSS MiB | PSS sum MiB | peak RSS MiB | 1-query ms hit / nx |")
    P("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in servers:
        i = info[s.name]
        m2 = mem2.get(s.name)
        tail = (f"{m2['load_s']:.2f} | {m2['mem'][0]:.1f} | {m2['mem'][1]:.1f} | {m2['mem'][2]:.1f} | "
                f"{m2['hit_ms']:.2f} / {m2['nx_ms']:.2f}" if m2 else "- | - | - | - | -")
        P(f"| {label(s.name)} | {i['load_s']:.2f} | {i['mem_after'][0]:.1f} | {i['mem_after'][1]:.1f} | "
          f"{i['hit_ms']:.2f} / {i['nx_ms']:.2f} | {tail} |")

    if mem2:
        P(f"\nN={RSS_N2}: each server started alone, {MEM_REPS} time(s), median; load = from exec "
          f"to the first correct answer.")

    if over:
        P(f"\nOverload (open-loop flood.c on CPU {CCPU}, {OVERLOAD_DURATION:g} s per point, mode "
          f"{FLOOD_MODE}; peak = most answered q/s at any offered rate; 2× = offered 2 × peak, "
          f"median of {OVERLOAD_REPS})\n")
        P("| server | case | peak answered q/s | saturated plateau q/s | offered at 2× | answered at 2× | "
          "% of peak | % of plateau | server busy at 2× | q/CPU-s at 2× |")
        P("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k, o in over.items():
            name, case = k.split("/")
            pl = o.get("plateau", o["peak"])
            P(f"| {label(name)} | {case} | {o['peak']:,.0f} | {pl:,.0f} | {o['twice_offered']:,.0f} | "
              f"{o['twice_answered']:,.0f} | {100 * o['twice_answered'] / o['peak']:.1f} | "
              f"{100 * o['twice_answered'] / pl:.1f} | "
              f"{100 * o['twice_busy']:.0f}% | {o['twice_q_per_cpus']:,.0f} |")
        P("\n(plateau = median answered q/s of the saturated points below 2×: server ≥ 97 % busy "
          "and more than 2 % unanswered.)")

    if SIGNED:
        report_signed(runs, Q, fr, paired)
    if RRL:
        P(f"\nRRL bookkeeping (--rrl-rate {RRL_RATE}: nothing limited): q / server CPU-s of "
          f"cellns-rrl against cellns without RRL, ratio of the medians [median of the per-rep "
          f"paired ratios] (qps); 1.00× = free.\n")
        P("| case | cellns | cellns-rrl | rrl/off |")
        P("|---|---:|---:|---:|")
        for case in CASES:
            a, b = ("cellns-rrl", case), ("cellns", case)
            if a in Q and b in Q:
                P(f"| {case} | {Q[b]['q']:,.0f} | {Q[a]['q']:,.0f} | {fr(ratio(a, b))} "
                  f"[{fr(paired(a, b))}] ({fr(ratio(a, b, 'qps'))}) |")

    # ------------------------------------------------------------ goals
    if any(k[0] == "cellns" for k in Q) and not (SIGNED or RRL):
        P("\nGoals (issue 8)\n")
        P("| goal | measured | verdict |")
        P("|---|---|---|")

        def row(goal, val, ok):
            P(f"| {goal} | {val} | {'met' if ok else ('MISSED' if ok is not None else 'not measured')} |")
        def both(a, b):
            return f"{fr(ratio(a, b))} (paired {fr(paired(a, b))})"
        for case in ("hit", "nxdomain"):
            for o in ("knot", "nsd"):
                r = ratio(("cellns", case), (o, case))
                row(f"q/CPU-s {case} ≥ 1.1× {o}", both(("cellns", case), (o, case)),
                    None if r is None else r >= 1.1)
        r = ratio(("cellns", "hit"), ("ref", "hit"))
        row("q/CPU-s hit ≥ 0.9× bare responder", both(("cellns", "hit"), ("ref", "hit")),
            None if r is None else r >= 0.9)
        r = ratio(("cellns", "nxdomain"), ("ref", "hit"))
        row("q/CPU-s nxdomain ≥ 0.9× bare responder (hit)", both(("cellns", "nxdomain"), ("ref", "hit")),
            None if r is None else r >= 0.9)
        c, k = mem2.get("cellns"), mem2.get("knot")
        if c and k:
            r = c["mem"][0] / k["mem"][0]
            row(f"VmRSS at {RSS_N2:,} tenants ≤ 0.25× knot",
                f"{c['mem'][0]:.1f} / {k['mem'][0]:.1f} MiB = {r:.2f}×", r <= 0.25)
            r = k["load_s"] / c["load_s"]
            row(f"load {RSS_N2:,} tenants ≥ 4× faster than knot",
                f"{c['load_s']:.2f} s vs {k['load_s']:.2f} s = {r:.1f}× faster", r >= 4)
        for case in ("hit", "nxdomain"):
            o = over.get(f"cellns/{case}")
            if o:
                r = o["twice_answered"] / o["peak"]
                rp = o["twice_answered"] / o.get("plateau", o["peak"])
                row(f"{case}: answered at 2× saturating load ≥ 90% of peak",
                    f"{100 * r:.1f}% of the best run, {100 * rp:.1f}% of the plateau (offered "
                    f"{o['twice_offered']:,.0f} = {o['twice_offered'] / o['peak']:.2f}× peak)", r >= 0.9)
        h, x = Q.get(("cellns", "hit")), Q.get(("cellns", "nxdomain"))
        if h and x:
            row("NXDOMAIN no costlier than hits (q/CPU-s nx ≥ hit, 5% noise allowed)",
                f"{x['q']:,.0f} vs {h['q']:,.0f} ({x['q'] / h['q']:.2f}×, paired "
                f"{fr(paired(('cellns', 'nxdomain'), ('cellns', 'hit')))})", x["q"] >= 0.95 * h["q"])
        oh, ox = over.get("cellns/hit"), over.get("cellns/nxdomain")
        if oh and ox:
            P(f"\nUnder flood: NXDOMAIN peak {ox['peak']:,.0f} vs hit peak {oh['peak']:,.0f} answered q/s "
              f"({ox['peak'] / oh['peak']:.2f}×).")

    # ------------------------------------------------------------ noise
    if NOISE:
        nq = [n for n in NOISE if not n["quiet"]]
        waited = sum(n["quiet_waited_s"] for n in NOISE)
        oth = [n["other_cpu_s"] / n["wall"] for n in NOISE if n["wall"] > 0]
        with_builds = [n for n in NOISE if n["builds"]]
        repeats = sum(1 for n in NOISE if n.get("retries", 0) > 0)
        still = sum(1 for n in NOISE if n.get("noisy") and n.get("retries") == NOISY_RETRIES)
        P(f"\nNoise: {len(NOISE)} runs, of which {repeats} were repeats of a run during which something "
          f"else used more than {NOISY_MAX} CPU-s/s; {still} result(s) kept although still noisy; waited {waited:.0f} s in total for a quiet machine; "
          f"{len(nq)} run(s) started without reaching quiet; {len(with_builds)} run(s) saw a "
          f"compiler/test process at start or end; CPU busy outside server+client during runs: "
          f"median {med(oth):.2f}, max {max(oth):.2f} CPU-s/s.")
    for d in DEATHS:
        P(f"\nNote: {label(d['server'])} was found dead before a run ({d['why']}) at "
          f"{time.strftime('%H:%M:%S', time.gmtime(d['at']))} UTC and restarted.")


def report_signed(runs, Q, fr, paired):
    """DNSSEC mode: signed cellns against Knot's mod-onlinesign, and what
    signing changes for queries without the DO bit"""
    P = print

    def q(name, case):
        x = Q.get((name, case))
        return None if x is None else x["q"]

    def rat(a, b):
        x, y = q(*a), q(*b)
        return None if x is None or not y else x / y

    def num(x):
        return "–" if x is None else f"{x:,.0f}"
    P("\nSigned (DO bit set): q / server CPU-s, cellns-dnssec against knot-dnssec "
      "(mod-onlinesign); ratio of the medians [median of the per-rep paired ratios].\n")
    P("| case | cellns-dnssec | knot-dnssec | cellns/knot |")
    P("|---|---:|---:|---:|")
    for case in ("hit+do", "nxdomain+do"):
        a, b = ("cellns-dnssec", case), ("knot-dnssec", case)
        P(f"| {case} | {num(q(*a))} | {num(q(*b))} | {fr(rat(a, b))} [{fr(paired(a, b))}] |")
    P("\nUnsigned queries (no DO bit): the signed server against the same server unsigned, "
      "in the same run (1.00× = unaffected).\n")
    P("| case | cellns | cellns-dnssec | ratio | knot | knot-dnssec | ratio |")
    P("|---|---:|---:|---:|---:|---:|---:|")
    for case in ("hit", "nxdomain"):
        c, cs = ("cellns", case), ("cellns-dnssec", case)
        k, ks = ("knot", case), ("knot-dnssec", case)
        P(f"| {case} | {num(q(*c))} | {num(q(*cs))} | {fr(rat(cs, c))} [{fr(paired(cs, c))}] | "
          f"{num(q(*k))} | {num(q(*ks))} | {fr(rat(ks, k))} [{fr(paired(ks, k))}] |")


def report_only(path):
    """prints the tables again from a results.json (bench.py --report FILE)"""
    global N, CELLS, RSS_N2, DURATION, REPS, CLIENTS, OUTST, SCPU, CCPU, MEM_REPS
    global OVERLOAD_DURATION, OVERLOAD_REPS, FLOOD_MODE, SIGNED, CASES, RRL, RRL_RATE
    d = json.load(open(path))
    p = d["params"]
    if p.get("RELOAD"):
        report_reload(d)
        return
    SIGNED = p.get("SIGNED", False)
    RRL, RRL_RATE = p.get("RRL", False), p.get("RRL_RATE", RRL_RATE)
    CASES = p.get("CASES", CASES)
    N, CELLS, RSS_N2, DURATION, REPS = p["N"], p["CELLS"], p["RSS_N2"], p["DURATION"], p["REPS"]
    CLIENTS, OUTST, SCPU, CCPU = p["CLIENTS"], p["OUTST"], p["SERVER_CPU"], p["CLIENT_CPU"]
    MEM_REPS = p.get("MEM_REPS", 1)
    OVERLOAD_DURATION, OVERLOAD_REPS = p["OVERLOAD_DURATION"], p["OVERLOAD_REPS"]
    FLOOD_MODE = p["FLOOD_MODE"]
    NOISE.extend(d.get("noise", []))
    DEATHS.extend(d.get("deaths", []))

    class S:
        def __init__(self, name):
            self.name = name
    if "extra" in d["labels"]:
        os.environ["EXTRA_NAME"] = d["labels"]["extra"]
    runs = {tuple(k.split("/")): v for k, v in d["runs"].items()}
    servers = [S(n) for n in d["labels"]]
    report(runs, d["info"], d["mem2"], d["overload"], servers)


# ---------------------------------------------------------------- reload latency
def read_lat(path):
    """flood.c's lat: file -> (send times, latencies in s; -1 = unanswered)"""
    import array
    with open(path, "rb") as f:
        n = struct.unpack("Q", f.read(8))[0]
        t, l = array.array("d"), array.array("f")
        t.fromfile(f, n)
        l.fromfile(f, n)
    return t, l


def lat_stats(lats):
    """percentiles in µs over queries; an unanswered query counts as slower than
    any answer (so losses cannot make the tail look better)"""
    n = len(lats)
    if not n:
        return dict(n=0, lost=0, p50=None, p99=None, p999=None, max=None)
    lost = sum(1 for x in lats if x < 0)
    v = sorted(x if x >= 0 else float("inf") for x in lats)

    def pct(p):
        x = v[min(n - 1, int(p * (n - 1)))]
        return None if x == float("inf") else x * 1e6
    return dict(n=n, lost=lost, p50=pct(0.5), p99=pct(0.99), p999=pct(0.999), max=pct(1.0))


def proc_status(pid):
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


class LogTail:
    """counts "map reloaded" lines (and failures) in a growing server log; `wait`
    blocks on inotify until the file grows, so the driver sleeps while it waits
    (it shares the client's CPU with the flood)"""

    def __init__(self, path):
        import ctypes
        self.f = open(path, errors="replace")
        self.buf = ""
        self.done, self.failed, self.lines = 0, [], []
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.ino = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.ino < 0 or self.libc.inotify_add_watch(self.ino, path.encode(), 0x2) < 0:  # IN_MODIFY
            raise OSError(ctypes.get_errno(), "inotify on the server log")

    def poll(self):
        self.buf += self.f.read()
        *full, self.buf = self.buf.split("\n")
        for line in full:
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)   # the server colours its log
            if "map reloaded" in line:
                self.done += 1
                self.lines.append(line)
            elif " ERROR " in line or ("reload" in line and ("failed" in line or "rejected" in line)):
                self.failed.append(line)

    def wait(self, timeout):
        """until the log grows (or `timeout` s), then poll"""
        import select
        r, _, _ = select.select([self.ino], [], [], timeout)
        if r:
            try:
                os.read(self.ino, 65536)
            except BlockingIOError:
                pass
        self.poll()


SPINNER = ("import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
           "while True:\n    pass\n")


def reload_phase(srv, qf, tail, variants, mapfile, what, kind):
    """one flood run of RELOAD_SECS; kind "steady", "reloads" (back to back while
    it runs) or "control" (an idle-priority busy loop on the server's CPU).
    -> dict (latency stats, windows, RSS; "lat" = the latencies to pool)"""
    reloads = kind == "reloads"
    ensure_alive(srv)
    settle()
    qw, quiet, fb, builds = quiet_wait()
    out = os.path.join(WORK, f"lat-{what}.bin")
    cmd = ["taskset", "-c", CCPU, os.path.join(WORK, "flood"), ADDR, str(srv.port), qf,
           str(RELOAD_RATE), str(RELOAD_SECS), f"lat:{out}"]
    pid = srv.p.pid
    if reloads:
        # Peak RSS of the reloads alone, not of the start-up load.
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    rss0 = proc_status(pid)
    spinner = None
    if kind == "control":
        spinner = subprocess.Popen(["taskset", "-c", SCPU, sys.executable, "-c", SPINNER])
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, (a0, _), t0 = srv.cpu_ticks(), cpu_busy_all(), time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    windows = []
    tail.poll()
    if reloads:
        # This loop (not the flood) is what reloads: it runs on the client's
        # CPU and sleeps on inotify between log lines, so it takes nothing
        # from CPU 0 and next to nothing from the flood.
        end = time.monotonic() + RELOAD_SECS
        while p.poll() is None and time.monotonic() < end:
            # The variant not in place now (hard links: same inode), so that
            # every rename is new content, across rounds too.
            src = variants[1 if os.stat(mapfile).st_ino == os.stat(variants[0]).st_ino else 0]
            tmp = mapfile + ".next"
            if os.path.exists(tmp):
                os.unlink(tmp)
            os.link(src, tmp)
            before = tail.done
            ts = time.monotonic()
            os.rename(tmp, mapfile)
            deadline = ts + 60
            while tail.done == before and time.monotonic() < deadline:
                tail.wait(max(0.0, deadline - time.monotonic()))
                if tail.failed:
                    raise RuntimeError(f"reload failed: {tail.failed[-1]}")
            if tail.done == before:
                raise RuntimeError("no \"map reloaded\" within 60 s of the rename")
            windows.append((ts, time.monotonic()))
    stdout, _ = p.communicate()
    if spinner:
        spinner.kill()
        spinner.wait()
    c1, (a1, _), t1 = srv.cpu_ticks(), cpu_busy_all(), time.time()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss1 = proc_status(pid)
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    cpu_s = (c1 - c0) / CLK
    other = max(0.0, (a1 - a0) / CLK - cpu_s - client_cpu)
    NOISE.append(dict(server=srv.name, what=what, quiet_waited_s=qw, quiet=quiet, foreign_before=fb,
                      other_cpu_s=other, builds=builds, wall=t1 - t0, retries=0, noisy=False))
    kv = dict(x.split("=") for x in stdout.split())
    sent_at, lat = read_lat(out)
    os.unlink(out)
    res = dict(flood={k2: float(v) for k2, v in kv.items()}, all=lat_stats(lat), cpu_s=cpu_s,
               busy=cpu_s / RELOAD_SECS, other_cpu_s=other, wall=t1 - t0,
               rss_before=rss0.get("VmRSS"), rss_after=rss1.get("VmRSS"),
               hwm_after=rss1.get("VmHWM"), lat=list(lat))
    if reloads:
        # Queries sent while a reload was in progress: from the rename to the
        # server's "map reloaded" line.
        inside, j = [], 0
        for ts, x in zip(sent_at, lat):
            while j < len(windows) and windows[j][1] < ts:
                j += 1
            if j < len(windows) and windows[j][0] <= ts:
                inside.append(x)
        w0 = windows[0][0] if windows else 0.0
        res.update(windows=[(a - w0, b - w0) for a, b in windows],
                   in_windows=lat_stats(inside), lat=inside,
                   reload_s=[b - a for a, b in windows],
                   server_lines=tail.lines[-len(windows):] if windows else [])
        for key in ("build_ms", "total_ms"):
            res[key] = [int(m.group(1)) for m in
                        (re.search(key + r"=(\d+)", x) for x in res["server_lines"]) if m]
    return res


def reload_main():
    """RELOAD=1: p99/p99.9 query latency under an open-loop load, steady vs while
    reloads of a RELOAD_N-tenant map run back to back, and the peak RSS ratio"""
    os.makedirs(RESULTS, exist_ok=True)
    os.sched_setaffinity(0, {int(CCPU)})
    z = zonedir(RELOAD_N)
    md = os.path.join(WORK, "reload-map")
    shutil.rmtree(md, ignore_errors=True)
    os.makedirs(md)
    # Two files of the same tenants that differ in their version: each
    # rename is a new content (a reload does all its work: parse, validate,
    # compile, diff, publish) that moves no tenant, so no safety gate stops it.
    text = open(os.path.join(z, "cellns-map.json")).read()
    m = re.search(r'"version": "([^"]*)"', text)
    if not m:
        raise RuntimeError("no version in the generated map")
    variants = []
    for tag in ("a", "b"):
        path = os.path.join(md, f"map-{tag}.json")
        open(path, "w").write(text.replace(m.group(0), f'"version": "{m.group(1)}-{tag}"', 1))
        variants.append(path)
    del text
    mapfile = os.path.join(md, "map.json")
    os.link(variants[0], mapfile)
    t_start = time.time()
    srv = Server("cellns-reload", free_port(BASE_PORT), z, mapfile=mapfile,
                 rust_log="warn,cellns=info")
    phases = []
    try:
        srv.wait_ready(600)
        ALL.append(srv)
        log(f"[up] cellns {RELOAD_N:,} tenants, port {srv.port}, ready in {srv.load_s:.2f}s")
        tail = LogTail(os.path.join(srv.rd, "server.log"))
        qf = os.path.join(z, "q_hit.txt")
        # warm-up (page in the index, the flood's socket buffers)
        subprocess.run(["taskset", "-c", CCPU, os.path.join(WORK, "flood"), ADDR, str(srv.port), qf,
                        str(RELOAD_RATE), "2"], capture_output=True)
        pool = {"steady": [], "reloads": [], "control": []}
        for rep in range(RELOAD_REPS):
            for kind in ("steady", "reloads", "control"):
                reloads = kind == "reloads"
                what = f"{kind}-{rep + 1}"
                r = reload_phase(srv, qf, tail, variants, mapfile, what, kind)
                pool[kind].extend(r.pop("lat"))
                r.update(what=what, reloads=reloads, kind=kind)
                phases.append(r)
                a = r["all"]
                def us(x):
                    return "-" if x is None else f"{x:.0f}"
                log(f"[reload {what}] sent {r['flood']['sent']:.0f} lost {a['lost']} "
                    f"p50/p99/p99.9/max µs {us(a['p50'])}/{us(a['p99'])}/{us(a['p999'])}/"
                    f"{us(a['max'])} busy {r['busy']:.2f} VmRSS {r['rss_before']:.1f} MiB"
                    + (f"; {len(r['windows'])} reloads, peak RSS {r['hwm_after']:.1f} MiB, p99 of "
                       f"queries sent during one {us(r['in_windows']['p99'])} µs" if reloads else ""))
        info = dict(load_s=srv.load_s, mem=srv.mem())
        pooled = {k: lat_stats(v) for k, v in pool.items()}
        del pool
    finally:
        srv.stop()
        ALL.clear()
    d = dict(pooled=pooled, params=dict(RELOAD=True, RELOAD_N=RELOAD_N, RELOAD_RATE=RELOAD_RATE,
                         RELOAD_SECS=RELOAD_SECS, RELOAD_REPS=RELOAD_REPS, CELLS=CELLS,
                         SERVER_CPU=SCPU, CLIENT_CPU=CCPU, CELLNS_WORKERS=CELLNS_WORKERS,
                         started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
                         minutes=(time.time() - t_start) / 60),
             phases=phases, info=info, noise=NOISE, deaths=DEATHS)
    json.dump(d, open(os.path.join(RESULTS, "results-reload.json"), "w"), indent=1)
    report_reload(d)


def report_reload(d):
    P = print
    p = d["params"]
    P(f"\nReload latency: cellns ({p['CELLNS_WORKERS']} UDP worker) serving {p['RELOAD_N']:,} "
      f"tenants on CPU {p['SERVER_CPU']}; open-loop flood.c on CPU {p['CLIENT_CPU']} at "
      f"{p['RELOAD_RATE']:,} q/s (random listed tenants, A), {p['RELOAD_SECS']:g} s steady, then "
      f"{p['RELOAD_SECS']:g} s with reloads of the whole map back to back. Latency = from the "
      f"send call to the receive call that returned the answer; an unanswered query counts as "
      f"slower than any answer.\n")
    P("| phase | queries | lost | p50 µs | p99 µs | p99.9 µs | max µs | server busy | reloads | "
      "reload s, rename → logged (median) | server build / total ms (median) | VmRSS before MiB | "
      "peak RSS MiB |")
    P("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def f1(x):
        return "–" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"

    def rs(r):
        return f"{med(r['reload_s']):.2f}" if r["reloads"] and r.get("reload_s") else "–"

    def bt(r):
        if not (r["reloads"] and r.get("build_ms")):
            return "–"
        return f"{med(r['build_ms']):.0f} / {med(r['total_ms']):.0f}"
    for r in d["phases"]:
        for key, name in (("all", r["what"]), ("in_windows", f"{r['what']}: queries sent during a reload")):
            s = r.get(key)
            if not s:
                continue
            nrel = len(r.get("windows", [])) if r["reloads"] else 0
            P(f"| {name} | {s['n']:,} | {s['lost']} | {f1(s['p50'])} | {f1(s['p99'])} | "
              f"{f1(s['p999'])} | {f1(s['max'])} | {100 * r['busy']:.0f}% | "
              f"{nrel if r['reloads'] else '–'} | "
              f"{rs(r)} | "
              f"{bt(r)} | {f1(r['rss_before'])} | {f1(r['hwm_after']) if r['reloads'] else '–'} |")
    steady = [r for r in d["phases"] if not r["reloads"] and r.get("kind", "steady") == "steady"]
    rel = [r for r in d["phases"] if r["reloads"]]
    rss = med([b["hwm_after"] / a["rss_before"] for a, b in zip(steady, rel)]) if steady and rel else None
    pooled = d.get("pooled")
    if pooled:
        P(f"\nPooled over {p['RELOAD_REPS']} rounds (reloads: the queries sent during a reload):\n")
        P("| phase | queries | lost | p50 µs | p99 µs | p99.9 µs | max µs | p99 / steady | p99.9 / steady |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        st = pooled["steady"]
        for kind, name in (("steady", "steady"), ("reloads", "during reloads"),
                           ("control", "control: idle-priority busy loop on the server's CPU")):
            s = pooled[kind]
            P(f"| {name} | {s['n']:,} | {s['lost']} | {f1(s['p50'])} | {f1(s['p99'])} | {f1(s['p999'])} | "
              f"{f1(s['max'])} | {s['p99'] / st['p99']:.2f}× | {s['p999'] / st['p999']:.2f}× |")
        rl, ct = pooled["reloads"], pooled["control"]
        P("\n| goal (issue 16) | measured | verdict |")
        P("|---|---|---|")
        r99 = rl["p99"] / st["p99"]
        P(f"| p99 during reloads ≤ 1.5× steady | {r99:.2f}× (p99.9 {rl['p999'] / st['p999']:.2f}×); "
          f"the control alone: {ct['p99'] / st['p99']:.2f}× (p99.9 {ct['p999'] / st['p999']:.2f}×); "
          f"reloads / control {rl['p99'] / ct['p99']:.2f}× | {'met' if r99 <= 1.5 else 'MISSED'} |")
        if rss is not None:
            P(f"| peak RSS during reloads ≤ 2.2× steady | {rss:.2f}× | {'met' if rss <= 2.2 else 'MISSED'} |")
    elif steady and rel:
        def ratio(key, stat):
            xs = [(b[key][stat] / a["all"][stat]) for a, b in zip(steady, rel)
                  if a["all"][stat] and b.get(key) and b[key][stat] is not None]
            return med(xs) if xs else None
        r99, r999 = ratio("in_windows", "p99"), ratio("in_windows", "p999")
        a99 = ratio("all", "p99")
        P("\n| goal (issue 16) | measured | verdict |")
        P("|---|---|---|")
        P(f"| p99 during reloads ≤ 1.5× steady | {r99:.2f}× (queries sent during a reload); "
          f"{a99:.2f}× (whole reload phase); p99.9 {r999:.2f}× | "
          f"{'met' if r99 <= 1.5 else 'MISSED'} |")
        P(f"| peak RSS during reloads ≤ 2.2× steady | {rss:.2f}× | {'met' if rss <= 2.2 else 'MISSED'} |")
    nz = d.get("noise", [])
    if nz:
        oth = [n["other_cpu_s"] / n["wall"] for n in nz if n["wall"] > 0]
        P(f"\nNoise: CPU busy outside server+client during the phases: median {med(oth):.2f}, "
          f"max {max(oth):.2f} CPU-s/s; {sum(1 for n in nz if not n['quiet'])} phase(s) started "
          f"without reaching quiet.")


def _terminate(signum, _frame):
    # run.sh starts us in the background, where SIGINT may be ignored: make
    # SIGTERM/SIGINT unwind through main's `finally`, which stops the servers.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report_only(sys.argv[2])
    elif RELOAD:
        reload_main()
    else:
        main()
