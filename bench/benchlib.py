#!/usr/bin/python3
"""Helpers for bench/smtp-in.sh and bench/smtp-out.sh (Python 3 standard library only).

Subcommands:
  freeport                          print a free TCP port on 127.0.0.1
  dnsquery PORT NAME TYPE           ask the DNS server on 127.0.0.1:PORT, print the answers
  dnswatch OUT UNBOUND_PORT         count DNS packets on every interface until SIGTERM
  wait-port PORT SECONDS            wait until 127.0.0.1:PORT accepts connections
  rss PID                           RSS/PSS of PID and all its descendants (JSON)
  run ...                           one timed smtp-source run (see cmd_run)
  idle ...                          N idle connections, RSS before/after (see cmd_idle)
  report RESULTS.jsonl MD           print the results table and write it as Markdown
  outrun ...                        one outbound run: load, defer, flush to smtp-sinks
  outreport RESULTS.jsonl MD        the smtp-out table, printed and written as Markdown

Every loop is bounded by a deadline or a count.
"""

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time


# ---------------------------------------------------------------- processes

def _proc_table():
    """{pid: ppid} for every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        rest = data[data.rfind(b")") + 2:].split()
        try:
            table[int(name)] = int(rest[1])
        except (IndexError, ValueError):
            continue
    return table


def process_tree(root):
    """root and all its descendants that exist now."""
    table = _proc_table()
    if root not in table:
        return []
    children = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo, seen = [], [root], set()
    while todo and len(seen) < 1000000:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root):
    """user+system CPU of root and its descendants, plus that of the children they
    have reaped (cutime/cstime), in seconds."""
    ticks = 0
    for pid in process_tree(root):
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2:].split()
        ticks += sum(int(x) for x in rest[11:15])
    return ticks / CLK_TCK


def vmrss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return "?"


def tree_memory(root, with_pss=True):
    pids = process_tree(root)
    rss = {p: vmrss_kib(p) for p in pids}
    out = {"procs": len(pids), "rss_kib": sum(rss.values())}
    if with_pss:
        out["pss_kib"] = sum(pss_kib(p) for p in pids)
    by_name = {}
    for p in pids:
        n = comm(p)
        e = by_name.setdefault(n, [0, 0])
        e[0] += 1
        e[1] += rss[p]
    out["by_name"] = {k: {"procs": v[0], "rss_kib": v[1]} for k, v in sorted(by_name.items())}
    return out


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of a process tree every `interval` seconds."""

    def __init__(self, root, interval=0.1, pss_every=5):
        super().__init__(daemon=True)
        self.root, self.interval, self.pss_every = root, interval, max(1, pss_every)
        self.stop_event = threading.Event()
        self.peak_kib, self.peak_procs, self.samples = 0, 0, 0
        self.peak_pss_kib = 0
        self.peak_by_proc = {}

    def run(self):
        pids, last_scan = [], 0.0
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now - last_scan > 0.25 or not pids:
                pids, last_scan = process_tree(self.root), now
            total = 0
            for p in pids:
                r = vmrss_kib(p)
                total += r
                if r > self.peak_by_proc.get(p, (0, ""))[0]:
                    self.peak_by_proc[p] = (r, comm(p))
            if self.samples % self.pss_every == 0:
                self.peak_pss_kib = max(self.peak_pss_kib, sum(pss_kib(p) for p in pids))
            self.samples += 1
            self.peak_kib = max(self.peak_kib, total)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.stop_event.wait(self.interval)


# ---------------------------------------------------------------- small commands

def cmd_freeport(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_wait_port(args):
    deadline = time.monotonic() + args.seconds
    for _ in range(int(args.seconds / 0.1) + 10):
        try:
            socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
            return 0
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    print("port %d not accepting after %ss" % (args.port, args.seconds), file=sys.stderr)
    return 1


def cmd_pids(args):
    print("\n".join(str(p) for p in process_tree(args.pid)))


def cmd_rss(args):
    print(json.dumps(tree_memory(args.pid)))


# ---------------------------------------------------------------- DNS

QTYPES = {"A": 1, "MX": 15, "AAAA": 28, "TXT": 16}


def _dns_name(data, off, depth=0):
    labels = []
    for _ in range(128):
        n = data[off]
        if n == 0:
            return ".".join(labels), off + 1
        if n & 0xC0 == 0xC0:
            ptr = struct.unpack("!H", data[off:off + 2])[0] & 0x3FFF
            if depth > 10:
                raise ValueError("compression loop")
            name, _ = _dns_name(data, ptr, depth + 1)
            labels.append(name)
            return ".".join(labels), off + 2
        labels.append(data[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    raise ValueError("name too long")


def cmd_dnsquery(args):
    qtype = QTYPES[args.type.upper()]
    qid = os.getpid() & 0xFFFF
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in args.name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, ("127.0.0.1", args.port))
    data, _ = s.recvfrom(4096)
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if rid != qid:
        print("wrong id", file=sys.stderr)
        return 1
    off = 12
    for _ in range(qd):
        _, off = _dns_name(data, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _dns_name(data, off)
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", data[off:off + 10])
        off += 10
        rdata = data[off:off + rdlen]
        if rtype == 1:
            answers.append("A " + socket.inet_ntoa(rdata))
        elif rtype == 15:
            pref = struct.unpack("!H", rdata[:2])[0]
            answers.append("MX %d %s" % (pref, _dns_name(data, off + 2)[0]))
        else:
            answers.append("type%d" % rtype)
        off += rdlen
    print("rcode=%d %s" % (flags & 0xF, "; ".join(answers)))
    return 0 if answers else 1


# Classic BPF for an AF_PACKET/SOCK_DGRAM socket (data starts at the network header):
# accept IPv4/IPv6 TCP or UDP packets whose source or destination port is 53 or PORT.
def _bpf_program(port):
    LD_H_ABS, LD_B_ABS, LD_H_IND = 0x28, 0x30, 0x48
    LDX_B_MSH, JEQ_K, JSET_K, RET_K = 0xB1, 0x15, 0x45, 0x06
    nxt = None
    prog = [  # (label, code, k, jump-if-true, jump-if-false); None = next instruction
        (None, LD_H_ABS, -0x1000, nxt, nxt),     # A = skb->protocol (SKF_AD_PROTOCOL)
        (None, JEQ_K, 0x0800, nxt, "v6"),
        (None, LD_B_ABS, 9, nxt, nxt),           # IPv4 protocol
        (None, JEQ_K, 6, "v4ports", nxt),
        (None, JEQ_K, 17, nxt, "drop"),
        ("v4ports", LD_H_ABS, 6, nxt, nxt),      # fragment offset: only first fragments
        (None, JSET_K, 0x1FFF, "drop", nxt),
        (None, LDX_B_MSH, 0, nxt, nxt),          # X = IPv4 header length
        (None, LD_H_IND, 0, nxt, nxt),           # source port
        (None, JEQ_K, 53, "accept", nxt),
        (None, JEQ_K, port, "accept", nxt),
        (None, LD_H_IND, 2, nxt, nxt),           # destination port
        (None, JEQ_K, 53, "accept", nxt),
        (None, JEQ_K, port, "accept", "drop"),
        ("v6", JEQ_K, 0x86DD, nxt, "drop"),
        (None, LD_B_ABS, 6, nxt, nxt),           # IPv6 next header (no extension headers)
        (None, JEQ_K, 6, "v6ports", nxt),
        (None, JEQ_K, 17, nxt, "drop"),
        ("v6ports", LD_H_ABS, 40, nxt, nxt),
        (None, JEQ_K, 53, "accept", nxt),
        (None, JEQ_K, port, "accept", nxt),
        (None, LD_H_ABS, 42, nxt, nxt),
        (None, JEQ_K, 53, "accept", nxt),
        (None, JEQ_K, port, "accept", "drop"),
        ("accept", RET_K, 0x40000, nxt, nxt),
        ("drop", RET_K, 0, nxt, nxt),
    ]
    where = {p[0]: i for i, p in enumerate(prog) if p[0]}
    out = b""
    for i, (_label, code, k, jt, jf) in enumerate(prog):
        jt = 0 if jt is None else where[jt] - i - 1
        jf = 0 if jf is None else where[jf] - i - 1
        out += struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)
    return out, len(prog)


def _parse_ports(data, proto):
    if proto == 0x0800 and len(data) >= 20:
        ihl = (data[0] & 0xF) * 4
        l4 = data[9]
        src, dst = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
        sport, dport = struct.unpack("!HH", data[ihl:ihl + 4])
    elif proto == 0x86DD and len(data) >= 44:
        l4 = data[6]
        src = socket.inet_ntop(socket.AF_INET6, data[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, data[24:40])
        sport, dport = struct.unpack("!HH", data[40:44])
    else:
        return None
    return {"l4": {6: "tcp", 17: "udp"}.get(l4, str(l4)), "src": src, "sport": sport,
            "dst": dst, "dport": dport}


def cmd_dnswatch(args):
    """Counts packets to or from port 53 (any interface, any address) and to or from
    the test unbound's port until SIGTERM; writes JSON to args.out.  Only packets the
    machine sends (PACKET_OUTGOING) are counted, so loopback packets count once."""
    ETH_P_ALL, SOL_SOCKET, SO_ATTACH_FILTER, PACKET_OUTGOING = 0x0003, 1, 26, 4
    prog, n = _bpf_program(args.unbound_port)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    import ctypes
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", n, ctypes.addressof(buf))
    s.setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    s.settimeout(0.5)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    res = {"port53_out": 0, "unbound_port_out": 0, "events": [], "selftest": False}

    # Self-test: one datagram to 127.0.0.1:53 (loopback; nothing queries a resolver)
    # must be seen, else the watcher proves nothing.  It is not counted.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    probe_port = probe.getsockname()[1]
    probe.sendto(b"tern-bench-dnswatch-selftest", ("127.0.0.1", 53))
    probe.close()
    started = time.monotonic()
    with open(args.out + ".ready", "w"):
        pass
    for _ in range(100000000):
        if stop["flag"]:
            break
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if addr[2] != PACKET_OUTGOING:
            continue
        p = _parse_ports(data, addr[1])
        if p is None:
            continue
        if p["sport"] == probe_port and p["dport"] == 53 and p["dst"] == "127.0.0.1":
            res["selftest"] = True
            continue
        if p["dport"] == 53 or p["sport"] == 53:
            res["port53_out"] += 1
        if p["dport"] == args.unbound_port or p["sport"] == args.unbound_port:
            res["unbound_port_out"] += 1
        if len(res["events"]) < 100:
            p["t"] = round(time.monotonic() - started, 3)
            p["if"] = addr[0]
            res["events"].append(p)
    res["seconds"] = round(time.monotonic() - started, 1)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


# ---------------------------------------------------------------- timed run

def _count(d):
    try:
        return len(os.listdir(d))
    except FileNotFoundError:
        return 0


def _steal_seconds():
    """CPU time the hypervisor gave to others while this VM wanted it (all CPUs)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / CLK_TCK if len(fields) > 8 else 0.0


def _loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cmd_run(args):
    """Runs smtp-source against 127.0.0.1:PORT and times from its start until the
    Maildir new/ directory holds `messages` more files; samples the RSS of the server's
    process tree meanwhile.  Appends one JSON line to args.results."""
    newdir = os.path.join(args.maildir, "new")
    base = _count(newdir)
    load_before = _loadavg()
    want = base + args.messages
    cpu_before = tree_cpu_seconds(args.root_pid)
    steal_before = _steal_seconds()
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = RssSampler(args.root_pid, args.interval)
    sampler.start()
    cmd = [args.smtp_source, "-4", "-s", str(args.sessions), "-m", str(args.messages),
           "-l", str(args.length), "-M", "client.remote.test", "-f", args.sender,
           "-t", args.rcpt, "127.0.0.1:%d" % args.port]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def on_term(signum, _frame):
        proc.kill()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    out = {"server": args.name, "sessions": args.sessions, "messages": args.messages,
           "length": args.length, "round": args.round, "cmd": " ".join(cmd)}
    deadline = t0 + args.timeout
    done_at, source_done_at, count = None, None, base
    for _ in range(int(args.timeout / 0.02) + 100):
        now = time.monotonic()
        if source_done_at is None and proc.poll() is not None:
            source_done_at = now
        count = _count(newdir)
        if count >= want:
            done_at = now
            break
        if now > deadline:
            break
        if source_done_at is not None and proc.returncode != 0 and now - source_done_at > 30:
            break          # smtp-source failed: wait 30 s for what it got accepted, then stop
        time.sleep(0.02)
    try:
        stdout, stderr = proc.communicate(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    if source_done_at is None:
        source_done_at = time.monotonic()
    sampler.stop_event.set()
    sampler.join(5)
    # A second look after a pause shows duplicates (more files than messages sent).
    time.sleep(args.settle)
    final = _count(newdir)
    cpu = tree_cpu_seconds(args.root_pid) - cpu_before
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (client_after.ru_utime + client_after.ru_stime
                  - client_before.ru_utime - client_before.ru_stime)
    out.update({
        "ok": done_at is not None and proc.returncode == 0 and final == want,
        "smtp_source_rc": proc.returncode,
        "smtp_source_stderr": stderr.decode("utf-8", "replace")[-2000:],
        "delivered": count - base, "delivered_after_settle": final - base,
        "seconds": round((done_at or time.monotonic()) - t0, 3),
        "accept_seconds": round(source_done_at - t0, 3),
        "peak_rss_kib": sampler.peak_kib, "peak_procs": sampler.peak_procs,
        "peak_pss_kib": sampler.peak_pss_kib,
        "server_cpu_s": round(cpu, 2), "client_cpu_s": round(client_cpu, 2),
        "steal_s": round(_steal_seconds() - steal_before, 2),
        "loadavg_before": load_before, "loadavg_after": _loadavg(),
        "rss_samples": sampler.samples,
        "peak_rss_by_proc": sorted(((v[1], v[0]) for v in sampler.peak_by_proc.values()),
                                   key=lambda x: -x[1])[:12],
    })
    out["msgs_per_s"] = round(args.messages / out["seconds"], 1) if done_at else 0.0
    out["accept_msgs_per_s"] = round(args.messages / max(0.001, out["accept_seconds"]), 1)
    with open(args.results, "a") as f:
        f.write(json.dumps(out) + "\n")
    print("%-8s sessions=%-3d %s  %6.1f msg/s  (%.2f s; smtp-source done at %.2f s)  "
          "delivered=%d/%d  peak RSS %.1f MiB over %d procs  CPU %.1f s (client %.1f s, "
          "steal %.1f s)" % (
              args.name, args.sessions, "ok " if out["ok"] else "FAIL", out["msgs_per_s"],
              out["seconds"], out["accept_seconds"], out["delivered_after_settle"],
              args.messages, sampler.peak_kib / 1024, sampler.peak_procs, cpu, client_cpu,
              out["steal_s"]))
    if stderr:
        sys.stdout.write("  smtp-source stderr: %s\n" % stderr.decode("utf-8", "replace")
                         .strip().replace("\n", "\n  ")[:1500])
    return 0 if out["ok"] else 1


# ---------------------------------------------------------------- idle connections

def cmd_idle(args):
    """Opens up to N plaintext connections to 127.0.0.1:PORT, reads each greeting, keeps
    them all open and idle, and measures the server's process tree before and after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.n + 200
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    time.sleep(args.settle)
    before = tree_memory(args.root_pid)
    before["mem_available_kib"] = mem_available_kib()
    sel = selectors.DefaultSelector()
    established, pending = [], {}
    failures, greet_errors = {}, {}
    stop_reason = "reached target"
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    last_progress = t0
    last_mem_check = 0.0
    addr = ("127.0.0.1", args.port)

    def fail(key):
        failures[key] = failures.get(key, 0) + 1

    for _ in range(10000000):
        now = time.monotonic()
        if len(established) >= args.n:
            break
        if now > deadline:
            stop_reason = "deadline of %ds reached" % args.timeout
            break
        if now - last_progress > args.stall:
            stop_reason = "no new connection completed for %ds" % args.stall
            break
        if now - last_mem_check > 0.5:
            last_mem_check = now
            if mem_available_kib() < args.min_mem_mib * 1024:
                stop_reason = ("the machine's MemAvailable fell below %d MiB (safety stop)"
                               % args.min_mem_mib)
                break
        opening = True
        while (opening and len(pending) < args.inflight
               and len(established) + len(pending) < args.n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(addr)
            if err not in (0, 115):          # EINPROGRESS
                fail("connect: " + os.strerror(err))
                s.close()
                opening = False
                break
            sel.register(s, selectors.EVENT_READ)
            pending[s] = [time.monotonic(), b""]
        for key, _ev in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(512)
            except OSError as e:
                data, errname = None, "recv: " + os.strerror(e.errno)
            if data:
                pending[s][1] += data
                buf = pending[s][1]
                if b"\n" not in buf:
                    continue
                lines = buf.split(b"\n")[:-1]           # complete lines only
                final = [l for l in lines if l[3:4] != b"-"]
                if not final:
                    continue                             # multi-line greeting goes on
                line = final[0].decode("latin-1").strip()
                if line.startswith("220"):
                    sel.unregister(s)
                    del pending[s]
                    established.append(s)
                    last_progress = time.monotonic()
                    continue
                greet_errors[line[:80]] = greet_errors.get(line[:80], 0) + 1
                fail("greeting not 220")
            else:
                fail(errname if data is None else "closed before greeting")
            sel.unregister(s)
            del pending[s]
            s.close()
        now = time.monotonic()
        for s, (t, _) in list(pending.items()):
            if now - t > args.greet_timeout:
                fail("no greeting within %ds" % args.greet_timeout)
                sel.unregister(s)
                del pending[s]
                s.close()
    open_seconds = time.monotonic() - t0
    for s in list(pending):
        sel.unregister(s)
        s.close()
    pending.clear()

    # Let the server settle, then check the connections are still open and measure.
    time.sleep(args.settle)
    still_open = 0
    probe = selectors.DefaultSelector()
    for s in established:
        probe.register(s, selectors.EVENT_READ)
    closed = set()
    for key, _ in probe.select(timeout=0):
        try:
            if key.fileobj.recv(512, socket.MSG_PEEK) == b"":
                closed.add(key.fileobj)
        except OSError:
            closed.add(key.fileobj)
    probe.close()
    still_open = len(established) - len(closed)
    after = tree_memory(args.root_pid)
    after["mem_available_kib"] = mem_available_kib()
    for s in established:
        s.close()
    sel.close()
    n = max(1, still_open)
    out = {
        "server": args.name, "target": args.n, "established": len(established),
        "still_open_at_measure": still_open, "stop_reason": stop_reason,
        "failures": failures, "greeting_errors": greet_errors,
        "open_seconds": round(open_seconds, 1), "client_nofile": soft,
        "before": before, "after": after,
        "kib_per_conn_rss": round((after["rss_kib"] - before["rss_kib"]) / n, 2),
        "kib_per_conn_pss": round((after["pss_kib"] - before["pss_kib"]) / n, 2),
        "kib_per_conn_memavail": round(
            (before["mem_available_kib"] - after["mem_available_kib"]) / n, 2),
    }
    with open(args.results, "a") as f:
        f.write(json.dumps(dict(out, kind="idle")) + "\n")
    print("%-8s idle: %d/%d connections open (%s, %.1f s to open); RSS %0.1f -> %0.1f MiB "
          "(%d -> %d procs) = %.2f KiB/conn RSS, %.2f KiB/conn PSS, %.2f KiB/conn "
          "MemAvailable" % (
              args.name, still_open, args.n, stop_reason, open_seconds,
              before["rss_kib"] / 1024, after["rss_kib"] / 1024, before["procs"],
              after["procs"], out["kib_per_conn_rss"], out["kib_per_conn_pss"],
              out["kib_per_conn_memavail"]))
    if failures:
        print("  failures: %s %s" % (failures, greet_errors or ""))
    return 0


# ---------------------------------------------------------------- outbound (smtp-out.sh)

def _queue_files(kind, qdir):
    """(queued, deferred, other) message files of a server's queue right now.
    tern: the regular files directly in DATA_DIR/queue (tmp/, corrupt/, hold/ are
    directories; hold/ is counted as other) and those whose mtime, the next attempt, lies
    more than a minute ahead count as deferred.  Postfix: the files in its queue
    directories; those under deferred/ are the deferred ones."""
    now = time.time()
    queued = deferred = other = 0
    if kind == "tern":
        try:
            it = os.scandir(qdir)
        except FileNotFoundError:
            return 0, 0, 0
        with it:
            for e in it:
                if e.is_file(follow_symlinks=False) and not e.name.startswith("."):
                    queued += 1
                    try:
                        if e.stat(follow_symlinks=False).st_mtime > now + 60:
                            deferred += 1
                    except FileNotFoundError:
                        queued -= 1
        other = _count(os.path.join(qdir, "hold"))
        return queued, deferred, other
    for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
        n = 0
        for _root, _dirs, files in os.walk(os.path.join(qdir, sub)):
            n += len(files)
        queued += n
        if sub == "deferred":
            deferred = n
        elif sub == "hold":
            other = n
    return queued, deferred, other


def _port_open(ip, port):
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


_LIVE_SINKS = []


class Sinks:
    """One smtp-sink per destination (ip:port), started with -c: it writes running
    counters ("sess=N quit=N mesg=N", separated by CR) to its stdout, a pipe read here.
    mesg counts the messages whose final "." the sink has received."""

    def __init__(self, binary, ips, port, pidfile, errfile):
        self.ips, self.port, self.pidfile = ips, port, pidfile
        self.procs, self.bufs, self.mesg, self.sess = [], [], [], []
        for ip in ips:
            if _port_open(ip, port):
                raise RuntimeError("%s:%d already accepts connections" % (ip, port))
        self.err = open(errfile, "ab")
        self.base = [0] * len(ips)
        _LIVE_SINKS.append(self)
        try:
            self._start(binary)
        except BaseException:
            self.stop()
            raise

    def _start(self, binary):
        ips, port, pidfile = self.ips, self.port, self.pidfile
        for ip in ips:
            p = subprocess.Popen([binary, "-c", "-u", "nobody", "-4", "%s:%d" % (ip, port),
                                  "1024"], stdout=subprocess.PIPE, stderr=self.err,
                                 stdin=subprocess.DEVNULL)
            os.set_blocking(p.stdout.fileno(), False)
            self.procs.append(p)
            self.bufs.append(b"")
            self.mesg.append(0)
            self.sess.append(0)
        with open(pidfile, "w") as f:
            f.write("".join("%d\n" % p.pid for p in self.procs))
        deadline = time.monotonic() + 10
        for ip, p in zip(ips, self.procs):
            for _ in range(200):
                if _port_open(ip, port):
                    break
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("smtp-sink on %s:%d did not start" % (ip, port))
                time.sleep(0.05)
            else:
                raise RuntimeError("smtp-sink on %s:%d did not start" % (ip, port))
        self.poll()
        self.base = list(self.mesg)   # the start-up checks count sessions, not messages
        self.sess_base = list(self.sess)

    def poll(self):
        for i, p in enumerate(self.procs):
            for _ in range(1000):
                try:
                    data = os.read(p.stdout.fileno(), 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.bufs[i] += data
            buf = self.bufs[i]
            cut = buf.rfind(b"\r")
            if cut < 0:
                continue
            done, self.bufs[i] = buf[:cut], buf[cut + 1:]
            last = done[done.rfind(b"\r") + 1:]
            for field in last.split():
                key, _, num = field.partition(b"=")
                try:
                    if key == b"mesg":
                        self.mesg[i] = int(num)
                    elif key == b"sess":
                        self.sess[i] = int(num)
                except ValueError:
                    pass
        return [m - b for m, b in zip(self.mesg, self.base)]

    def sessions(self):
        """SMTP sessions (connections) each sink saw end since the start-up checks."""
        return [m - b for m, b in zip(self.sess, self.sess_base)]

    def cpu_seconds(self):
        out = []
        for p in self.procs:
            try:
                with open("/proc/%d/stat" % p.pid, "rb") as f:
                    data = f.read()
                rest = data[data.rfind(b")") + 2:].split()
                out.append(sum(int(x) for x in rest[11:13]) / CLK_TCK)
            except OSError:
                out.append(0.0)
        return out

    def alive(self):
        return all(p.poll() is None for p in self.procs)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs = []
        self.err.close()
        if self in _LIVE_SINKS:
            _LIVE_SINKS.remove(self)
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass


def _log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _log_read(path, start):
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _log_summary(kind, text):
    """Counts of the delivery lines in a piece of the server's log: sent (and the
    distinct queue ids among them), deferred, and warnings/errors."""
    import re
    if kind == "tern":
        sent = re.findall(r"event=sent qid=(\S+)", text)
        deferred = len(re.findall(r"event=deferred ", text))
        problems = [l for l in text.splitlines() if re.search(r"Z (warn|error) ", l)]
    else:
        sent = re.findall(r"\]: ([0-9A-Za-z]+): to=<[^>]*>,.* status=sent ", text)
        deferred = len(re.findall(r" status=deferred ", text))
        problems = [l for l in text.splitlines()
                    if re.search(r"(warning|fatal|panic|error): ", l)]
    return {"sent": len(sent), "sent_distinct": len(set(sent)), "deferred": deferred,
            "problems": len(problems), "problem_lines": problems[:5]}


def cmd_outrun(args):
    try:
        return _outrun(args)
    finally:
        for s in list(_LIVE_SINKS):
            s.stop()


def _outrun(args):
    """One outbound run against one server:
      1. load: MESSAGES messages of LENGTH bytes, MESSAGES/DOMAINS to each of dN.test, sent
         with smtp-source into the server's SMTP listener while no sink listens: every
         delivery attempt is refused and the message is deferred;
      2. wait until every message is in the queue and deferred (nothing else in it);
      3. start one smtp-sink per destination, run the flush command (clock starts),
         and wait until the sinks have received every message and the queue is empty;
      4. settle, check the counts per sink (nothing lost, nothing duplicated) and the
         server's log, stop the sinks.
    Appends one JSON line to args.results."""
    import shlex
    n, nd = args.messages, args.domains
    if n % nd:
        print("messages must be a multiple of domains", file=sys.stderr)
        return 2
    per = n // nd
    ips = ["127.0.0.%d" % (args.sink_first_ip + i) for i in range(nd)]
    out = {"server": args.name, "messages": n, "domains": nd, "length": args.length,
           "round": args.round, "flush_cmd": args.flush_cmd, "ok": False,
           "sample_interval": args.sample_interval, "pss_every": args.pss_every}
    sinks = None
    procs = []

    def on_term(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.kill()
        sys.exit(128 + signum)     # cmd_outrun stops the sinks
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def finish(msg):
        out["error"] = msg
        with open(args.results, "a") as f:
            f.write(json.dumps(out) + "\n")
        print("%-8s FAIL: %s" % (args.name, msg))
        return 1

    for ip in ips:
        if _port_open(ip, args.sink_port):
            return finish("something listens on %s:%d before the load" % (ip, args.sink_port))
    q0 = _queue_files(args.queue_kind, args.queue_dir)
    if q0[0]:
        return finish("the queue is not empty before the load: %s" % (q0,))

    # ---- 1. load
    log0 = _log_size(args.log)
    t_load = time.monotonic()
    for i in range(nd):
        cmd = [args.smtp_source, "-4", "-s", str(args.inject_sessions), "-m", str(per),
               "-l", str(args.length), "-M", "client.src.test", "-f", "sender@src.test",
               "-t", "rcpt@d%d.test" % i, "127.0.0.1:%d" % args.port]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    errs = []
    for p in procs:
        try:
            _o, e = p.communicate(timeout=max(1, t_load + args.timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            _o, e = p.communicate()
        if p.returncode != 0 or e.strip():
            errs.append("rc=%s %s" % (p.returncode, e.decode("utf-8", "replace").strip()[-300:]))
    procs = []
    out["inject_s"] = round(time.monotonic() - t_load, 2)
    out["inject_errors"] = errs
    if any(not e.startswith("rc=0 ") for e in errs):
        return finish("smtp-source failed: %s" % "; ".join(errs)[:1000])

    # ---- 2. everything queued and deferred
    last, stable_since = None, time.monotonic()
    for _ in range(int(args.timeout / 0.2) + 10):
        q = _queue_files(args.queue_kind, args.queue_dir)
        if q == (n, n, 0):
            break
        if q != last:
            last, stable_since = q, time.monotonic()
        # (Postfix moves files between its queue directories while they are walked,
        # so a file may be counted twice in passing: only a stable state counts.)
        if time.monotonic() - t_load > args.timeout or time.monotonic() - stable_since > 60:
            return finish("queue not fully deferred: (queued, deferred, held) = %s, want "
                          "(%d, %d, 0)" % (q, n, n))
        time.sleep(0.2)
    out["load_s"] = round(time.monotonic() - t_load, 2)
    time.sleep(args.quiet)            # let the load's last work finish
    log1 = _log_size(args.log)
    out["load_log"] = _log_summary(args.queue_kind, _log_read(args.log, log0)[:log1 - log0])

    # ---- 3. sinks up, flush, time
    try:
        sinks = Sinks(args.smtp_sink, ips, args.sink_port, args.sink_pidfile, args.sink_errors)
    except RuntimeError as e:
        return finish(str(e))
    log1 = _log_size(args.log)
    cpu0 = tree_cpu_seconds(args.root_pid)
    scpu0 = sinks.cpu_seconds()
    steal0 = _steal_seconds()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    sampler = RssSampler(args.root_pid, args.sample_interval, args.pss_every)
    sampler.start()
    t0 = time.monotonic()
    fl = subprocess.run(shlex.split(args.flush_cmd), stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, timeout=60)
    out["flush_s"] = round(time.monotonic() - t0, 3)
    out["flush_output"] = fl.stdout.decode("utf-8", "replace").strip()[-300:]
    t_sink = t_done = None
    deadline = t0 + args.timeout
    counts = sinks.poll()
    for _ in range(int(args.timeout / 0.01) + 100):
        now = time.monotonic()
        if now > deadline or not sinks.alive():
            break
        counts = sinks.poll()
        if t_sink is None and sum(counts) >= n:
            t_sink = now
        if t_sink is not None:
            if _queue_files(args.queue_kind, args.queue_dir)[0] == 0:
                t_done = time.monotonic()
                break
            time.sleep(0.02)
        else:
            time.sleep(0.01)
    end = t_done or time.monotonic()
    sampler.stop_event.set()
    sampler.join(5)
    # One more PSS look at the end, when Postfix has the most processes.
    sampler.peak_pss_kib = max(sampler.peak_pss_kib,
                               sum(pss_kib(p) for p in process_tree(args.root_pid)))
    cpu = tree_cpu_seconds(args.root_pid) - cpu0
    scpu = [b - a for a, b in zip(scpu0, sinks.cpu_seconds())]
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    steal = _steal_seconds() - steal0

    # ---- 4. settle and check
    time.sleep(args.settle)
    final = sinks.poll()
    qfinal = _queue_files(args.queue_kind, args.queue_dir)
    sinks_alive = sinks.alive()
    sessions = sinks.sessions()
    # The log is read before the sinks go: their closing of idle connections is not
    # part of the run.
    out["flush_log"] = _log_summary(args.queue_kind, _log_read(args.log, log1))
    sinks.stop()
    sinks = None
    elapsed = end - t0
    out.update({
        "seconds": round(elapsed, 3),
        "sink_seconds": round((t_sink or end) - t0, 3),
        "accepted": sum(counts), "accepted_after_settle": sum(final),
        "per_sink_after_settle": final, "queue_after_settle": list(qfinal),
        "sink_sessions": sum(sessions),
        "sinks_alive": sinks_alive,
        "peak_rss_kib": sampler.peak_kib, "peak_procs": sampler.peak_procs,
        "peak_pss_kib": sampler.peak_pss_kib,
        "peak_rss_by_proc": sorted(((v[1], v[0]) for v in sampler.peak_by_proc.values()),
                                   key=lambda x: -x[1])[:12],
        "server_cpu_s": round(cpu, 2),
        "sink_cpu_s": [round(x, 2) for x in scpu],
        "sink_cpu_max_pct": round(100.0 * max(scpu) / max(0.001, elapsed), 1),
        "sink_cpu_sum_pct": round(100.0 * sum(scpu) / max(0.001, elapsed), 1),
        "poller_cpu_s": round(self1.ru_utime + self1.ru_stime
                              - self0.ru_utime - self0.ru_stime, 2),
        "steal_s": round(steal, 2), "loadavg_after": _loadavg(),
    })
    problems = []
    if t_done is None:
        problems.append("not finished within %ds (sinks got %d of %d, queue %s)"
                        % (args.timeout, sum(counts), n, list(qfinal)))
    if final != [per] * nd:
        problems.append("per-sink counts after settle %s, want %d each" % (final, per))
    if qfinal[0]:
        problems.append("queue not empty after settle: %s" % (list(qfinal),))
    if fl.returncode != 0:
        problems.append("flush command failed: %s" % out["flush_output"])
    lg = out["flush_log"]
    if lg["sent"] != n or lg["sent_distinct"] != n:
        problems.append("log: %d sent lines, %d distinct queue ids, want %d"
                        % (lg["sent"], lg["sent_distinct"], n))
    out["problems"] = problems
    out["ok"] = not problems
    out["msgs_per_s"] = round(n / elapsed, 1) if t_done else 0.0
    out["sink_msgs_per_s"] = round(n / out["sink_seconds"], 1) if t_sink else 0.0
    with open(args.results, "a") as f:
        f.write(json.dumps(out) + "\n")
    print("%-8s %s %7.1f msg/s (%.2f s; all at the sinks at %.2f s; flush command %.2f s)  "
          "load %.1f s  %d connections  peak RSS %.1f MiB over %d procs  CPU %.1f s  sink CPU max %.0f%% "
          "sum %.0f%%  steal %.1f s  log sent=%d deferred=%d problems=%d" % (
              args.name, "ok  " if out["ok"] else "FAIL", out["msgs_per_s"], elapsed,
              out["sink_seconds"], out["flush_s"], out["load_s"], out["sink_sessions"],
              sampler.peak_kib / 1024,
              sampler.peak_procs, cpu, out["sink_cpu_max_pct"], out["sink_cpu_sum_pct"],
              steal, lg["sent"], lg["deferred"], lg["problems"]))
    for p in problems:
        print("  problem: " + p)
    return 0 if out["ok"] else 1


def cmd_outreport(args):
    runs = []
    with open(args.results) as f:
        for line in f:
            runs.append(json.loads(line))
    names = {"tern": "tern", "postfix": "Postfix"}
    by = {k: [r for r in runs if r["server"] == k] for k in names}
    med, cells = {}, {}
    for k, rs in by.items():
        good = [r for r in rs if r.get("ok")]
        if not good:
            cells[k] = ("no successful run", "-")
            continue
        rates = [r["msgs_per_s"] for r in good]
        med[k] = statistics.median(rates)
        txt = "%.0f (%.0f-%.0f)" % (med[k], min(rates), max(rates))
        if len(good) < len(rs):
            txt += " **%d of %d runs failed**" % (len(rs) - len(good), len(rs))
        cells[k] = (txt, _peak_cell(good))
    ratio = "-"
    if med.get("tern") and med.get("postfix"):
        ratio = "%.2fx" % (med["tern"] / med["postfix"])
    r0 = runs[0] if runs else {"messages": 0, "length": 0, "domains": 0}
    lines = [
        "| workload | tern msg/s | Postfix msg/s | tern / Postfix | tern peak RSS |"
        " Postfix peak RSS |", "|---|---:|---:|---:|---:|---:|",
        "| %d deferred msgs x %d B to %d domains: flush until all at smtp-sink, queue empty"
        " | %s | %s | %s | %s | %s |" % (
            r0["messages"], r0["length"], r0["domains"], cells["tern"][0],
            cells["postfix"][0], ratio, cells["tern"][1], cells["postfix"][1]),
        "",
        "msg/s: median over rounds (lowest-highest in parentheses), from the start of the"
        " flush command until the sinks counted every message and the server's queue was"
        " empty. Peak RSS: the highest sum of VmRSS over all the server's processes during"
        " that time, sampled every %.2f s (PSS every %d samples; lowest per-round peak"
        " first)." % (r0.get("sample_interval", 0.1), r0.get("pss_every", 5)),
        "",
        "| server | round | msg/s | s to all at sinks | s to queue empty | flush cmd s |"
        " server CPU ms/msg | peak PSS | connections | sink CPU max / sum |"
        " load (inject+defer) s | steal s | ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for k in names:
        for r in by[k]:
            if "seconds" not in r:
                lines.append("| %s | %d | - | - | - | - | - | - | - | - | - | - | FAIL: %s |" % (
                    names[k], r["round"], r.get("error", "?")[:200]))
                continue
            lines.append("| %s | %d | %.0f | %.2f | %.2f | %.2f | %.2f | %s | %d |"
                         " %.0f%% / %.0f%% | %.1f | %.1f | %s |" % (
                             names[k], r["round"], r["msgs_per_s"], r["sink_seconds"],
                             r["seconds"], r["flush_s"],
                             1000.0 * r["server_cpu_s"] / r["messages"],
                             _mib(r["peak_pss_kib"]), r.get("sink_sessions", -1),
                             r["sink_cpu_max_pct"],
                             r["sink_cpu_sum_pct"], r["load_s"], r["steal_s"],
                             "yes" if r["ok"] else "**no**: " + "; ".join(r["problems"])))
    goal = "- no verdict: a server had no successful run"
    if med.get("tern") and med.get("postfix"):
        x = med["tern"] / med["postfix"]
        goal = "- tern/Postfix = %.2fx, goal >= 2.0x: **%s**" % (
            x, "met" if x >= 2.0 else "NOT met")
    text = "\n".join(lines + ["", "Goal (issue 3):", "", goal]) + "\n"
    print(text)
    with open(args.md, "w") as f:
        f.write(text)
    return 0


# ---------------------------------------------------------------- report

def _mib(kib):
    return "%.1f MiB" % (kib / 1024.0)


def _peak_cell(rs, key="peak_rss_kib"):
    """Lowest per-round peak (with its process count), and the highest when it differs
    much: Postfix keeps idle processes of the previous run for max_idle (100 s)."""
    lo = min(rs, key=lambda r: r.get(key, 0))
    hi = max(rs, key=lambda r: r.get(key, 0))
    txt = _mib(lo.get(key, 0))
    if key == "peak_rss_kib":
        txt += " (%d procs)" % lo["peak_procs"]
    if hi.get(key, 0) > 1.2 * lo.get(key, 0):
        txt += "; up to %s" % _mib(hi.get(key, 0))
        if key == "peak_rss_kib":
            txt += " (%d procs)" % hi["peak_procs"]
    return txt


def cmd_report(args):
    runs, idle = [], {}
    with open(args.results) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == "idle":
                idle[r["server"]] = r
            else:
                runs.append(r)
    sessions = sorted({r["sessions"] for r in runs})
    names = {"tern": "tern", "postfix": "Postfix"}
    med = {}
    for s in sessions:
        for name in names:
            rs = [r for r in runs if r["sessions"] == s and r["server"] == name]
            if rs:
                med[s, name] = statistics.median(r["msgs_per_s"] for r in rs)
    lines = ["| workload | tern msg/s | Postfix msg/s | tern / Postfix | tern peak RSS |"
             " Postfix peak RSS |", "|---|---:|---:|---:|---:|---:|"]
    for s in sessions:
        cells = []
        for name in names:
            rs = [r for r in runs if r["sessions"] == s and r["server"] == name]
            if not rs:
                cells.append(("-", "-"))
                continue
            rates = [r["msgs_per_s"] for r in rs]
            txt = "%.0f" % med[s, name]
            if len(rates) > 1:
                txt += " (%.0f-%.0f)" % (min(rates), max(rates))
            fails = sum(1 for r in rs if not r["ok"])
            if fails:
                txt += " **%d of %d runs failed**" % (fails, len(rs))
            cells.append((txt, _peak_cell(rs)))
        ratio = "-"
        if med.get((s, "tern")) and med.get((s, "postfix")):
            ratio = "%.2fx" % (med[s, "tern"] / med[s, "postfix"])
        r0 = [r for r in runs if r["sessions"] == s][0]
        lines.append("| smtp-source -s %d, %d msgs x %d B | %s | %s | %s | %s | %s |" % (
            s, r0["messages"], r0["length"], cells[0][0], cells[1][0], ratio,
            cells[0][1], cells[1][1]))
    t, p = idle.get("tern"), idle.get("postfix")
    for key, label in (("rss", "RSS"), ("pss", "PSS")):
        if not (t or p):
            break

        def icell(r):
            if r is None:
                return "-"
            txt = "%.1f KiB/conn" % r["kib_per_conn_" + key]
            if r["still_open_at_measure"] < r["target"]:
                txt += " (%d of %d open: %s)" % (r["still_open_at_measure"], r["target"],
                                                r["stop_reason"])
            return txt

        def total(r):
            if r is None:
                return "-"
            return "%s -> %s (%d -> %d procs)" % (
                _mib(r["before"][key + "_kib"]), _mib(r["after"][key + "_kib"]),
                r["before"]["procs"], r["after"]["procs"])

        ratio = "-"
        if t and p and p["kib_per_conn_" + key] > 0:
            ratio = "%.4fx" % (t["kib_per_conn_" + key] / p["kib_per_conn_" + key])
        lines.append("| %d idle plaintext connections, %s sum per connection | %s | %s | %s"
                     " | %s | %s |" % ((t or p)["target"], label, icell(t), icell(p), ratio,
                                       total(t), total(p)))
    lines += [
        "",
        "msg/s: median over rounds (lowest-highest in parentheses), timed from the start of"
        " smtp-source until the last message is a file in the Maildir new/. Peak RSS: the"
        " highest sum of VmRSS over all the server's processes, sampled every 0.1 s; the"
        " lowest per-round peak is shown first. Idle rows: (after - before) / connections"
        " still open at the measurement; the peak columns show the totals before -> after.",
        "",
        "Detail (medians over rounds): accept rate = messages / time until smtp-source got"
        " its last reply; peak PSS (shared pages divided among the processes sharing them),"
        " sampled every 0.5 s; server CPU = user+system time of all the server's processes"
        " (and of the children they reaped) during the run, per message.",
        "",
        "| server | sessions | delivered msg/s | accept msg/s | peak PSS | server CPU ms/msg |"
        " per-round delivered msg/s |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name in names:
        for s in sessions:
            rs = [r for r in runs if r["sessions"] == s and r["server"] == name]
            if not rs:
                continue
            lines.append("| %s | %d | %.0f | %.0f | %s | %.2f | %s |" % (
                names[name], s, med[s, name],
                statistics.median(r.get("accept_msgs_per_s", 0) for r in rs),
                _peak_cell(rs, "peak_pss_kib"),
                statistics.median(1000.0 * r.get("server_cpu_s", 0) / r["messages"]
                                  for r in rs),
                ", ".join("%.0f" % r["msgs_per_s"] for r in rs)))
    goals = []
    for s, need in ((50, 2.0), (10, 1.5)):
        if med.get((s, "tern")) and med.get((s, "postfix")):
            r = med[s, "tern"] / med[s, "postfix"]
            goals.append("- %d sessions: tern/Postfix = %.2fx, goal >= %.1fx: **%s**" % (
                s, r, need, "met" if r >= need else "NOT met"))
    if t:
        ok = t["kib_per_conn_rss"] <= 16 and t["still_open_at_measure"] >= t["target"]
        goals.append("- idle: tern %.2f KiB per connection (%d of %d open), goal <= 16 KiB:"
                     " **%s**" % (t["kib_per_conn_rss"], t["still_open_at_measure"],
                                  t["target"], "met" if ok else "NOT met"))
    text = "\n".join(lines + ["", "Goals (issue 2):", ""] + goals) + "\n"
    print(text)
    with open(args.md, "w") as f:
        f.write(text)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeport")
    p = sub.add_parser("wait-port")
    p.add_argument("port", type=int)
    p.add_argument("seconds", type=float)
    p = sub.add_parser("pids")
    p.add_argument("pid", type=int)
    p = sub.add_parser("rss")
    p.add_argument("pid", type=int)
    p = sub.add_parser("dnsquery")
    p.add_argument("port", type=int)
    p.add_argument("name")
    p.add_argument("type")
    p = sub.add_parser("dnswatch")
    p.add_argument("out")
    p.add_argument("unbound_port", type=int)
    p = sub.add_parser("run")
    p.add_argument("--name", required=True)
    p.add_argument("--root-pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--sessions", type=int, required=True)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--sender", default="sender@remote.test")
    p.add_argument("--rcpt", default="demo@example.test")
    p.add_argument("--smtp-source", default="/usr/sbin/smtp-source")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--results", required=True)
    p = sub.add_parser("idle")
    p.add_argument("--name", required=True)
    p.add_argument("--root-pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--inflight", type=int, default=200)
    p.add_argument("--timeout", type=int, default=240)
    p.add_argument("--stall", type=int, default=60)
    p.add_argument("--greet-timeout", type=int, default=60)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--min-mem-mib", type=int, default=4096)
    p.add_argument("--results", required=True)
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("md")
    p = sub.add_parser("outrun")
    p.add_argument("--name", required=True)
    p.add_argument("--root-pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True, help="the server's SMTP listener")
    p.add_argument("--queue-kind", choices=("tern", "postfix"), required=True)
    p.add_argument("--queue-dir", required=True)
    p.add_argument("--log", required=True, help="the server's log file")
    p.add_argument("--flush-cmd", required=True)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--domains", type=int, default=10)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--inject-sessions", type=int, default=5, help="per domain")
    p.add_argument("--sink-port", type=int, required=True)
    p.add_argument("--sink-first-ip", type=int, default=2, help="dN.test: 127.0.0.(this+N)")
    p.add_argument("--sink-pidfile", required=True)
    p.add_argument("--sink-errors", required=True)
    p.add_argument("--smtp-source", default="/usr/sbin/smtp-source")
    p.add_argument("--smtp-sink", default="/usr/sbin/smtp-sink")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--quiet", type=float, default=2.0)
    p.add_argument("--sample-interval", type=float, default=0.5,
                   help="RSS sampling; reading /proc for Postfix's 200 processes costs CPU"
                   " that the servers share, so not too often")
    p.add_argument("--pss-every", type=int, default=4, help="PSS every Nth RSS sample")
    p.add_argument("--settle", type=float, default=6.0,
                   help="after the run: longer than tern's 5 s and Postfix's 2 s of keeping"
                   " an idle connection, so that the sinks have seen every session end")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--results", required=True)
    p = sub.add_parser("outreport")
    p.add_argument("results")
    p.add_argument("md")
    args = ap.parse_args()
    fn = {"freeport": cmd_freeport, "wait-port": cmd_wait_port, "rss": cmd_rss, "pids": cmd_pids,
          "dnsquery": cmd_dnsquery, "dnswatch": cmd_dnswatch, "run": cmd_run,
          "idle": cmd_idle, "report": cmd_report, "outrun": cmd_outrun,
          "outreport": cmd_outreport}[args.cmd]
    sys.exit(fn(args) or 0)


if __name__ == "__main__":
    main()
