"""Harness for tern's integration tests: a real `tern serve` on free loopback ports,
driven by real clients (smtplib, raw sockets, swaks).

Environment:
  TERN_BIN        the binary (default: build/tern next to this tree)
  TERN_SANITIZED  1 for an ASan/UBSan build: every timeout is multiplied by 3
  TERN_KEEP       1 keeps the temporary directories (their paths are printed)
"""

import atexit
import base64
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

import dnsserver
import ports

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TERN_BIN = os.environ.get("TERN_BIN") or os.path.join(ROOT, "build", "tern")
SANITIZED = os.environ.get("TERN_SANITIZED") == "1"
FACTOR = 3 if SANITIZED else 1
KEEP = os.environ.get("TERN_KEEP") == "1"

HOSTNAME = "mx.test.local"
DOMAIN = "example.test"
DEMO = "demo@example.test"
BOB = "bob@example.test"

SANITIZER_MARKERS = ("AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
                     "LeakSanitizer")


def T(seconds):
    """A timeout scaled for sanitized builds."""
    return seconds * FACTOR


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns something truthy; returns it.  Raises
    AssertionError after timeout seconds (bounded in time and in count)."""
    deadline = time.monotonic() + timeout
    tries = 0
    max_tries = int(timeout / interval) + 100
    while True:
        value = predicate()
        if value:
            return value
        tries += 1
        if time.monotonic() > deadline or tries > max_tries:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port(host="127.0.0.1", family=socket.AF_INET):
    return ports.free_port(host, family)


def ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def client_ssl_context():
    """Accepts the self-signed certificate tern generates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def uniq(prefix="m"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:16])


def make_message(subject=None, body="Hello.\r\n", msgid=None, sender="x@y.test",
                 to=DEMO, extra_headers=(), date=True):
    """An RFC 5322 message as bytes, CRLF line ends, ending in CRLF."""
    subject = subject or uniq("subject")
    msgid = msgid or "<%s@test.local>" % uniq("id")
    lines = ["From: <%s>" % sender, "To: <%s>" % to, "Subject: %s" % subject]
    if date:
        lines.append("Date: Thu, 01 Jan 2026 00:00:00 +0000")
    if msgid:
        lines.append("Message-ID: %s" % msgid)
    lines.extend(extra_headers)
    head = "\r\n".join(lines) + "\r\n\r\n"
    if isinstance(body, str):
        body = body.encode("utf-8")
    return head.encode("utf-8") + body


def dot_stuff(msg):
    """SMTP transparency (RFC 5321 4.5.2) for a CRLF message ending in CRLF."""
    assert msg.endswith(b"\r\n")
    lines = msg[:-2].split(b"\r\n")
    out = [(b"." + l) if l.startswith(b".") else l for l in lines]
    return b"\r\n".join(out) + b"\r\n"


def message_id_of(data):
    m = re.search(rb"(?im)^Message-ID:\s*(<[^>\r\n]*>)", data)
    return m.group(1).decode("utf-8", "replace") if m else None


def header_block(data):
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end + 2]


def unfolded_headers(data):
    """[(name, value)] of the header block, folded lines joined."""
    block = header_block(data).decode("utf-8", "replace")
    out = []
    for line in block.split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        elif ":" in line:
            name, value = line.split(":", 1)
            out.append((name, value.strip()))
    return out


def split_prefix(data, sent):
    """The bytes the server put in front of the message it was given."""
    assert data.endswith(sent), "delivered file does not end with the bytes sent"
    return data[:len(data) - len(sent)]


def prefix_header_names(prefix):
    names = []
    for line in prefix.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            continue
        names.append(line.split(b":", 1)[0].decode())
    return names


# ---------------------------------------------------------------------------------
# Raw socket clients: what smtplib, imaplib and poplib refuse to do (pipelining by hand,
# broken line ends, BDAT, STARTTLS injection, oversize lines, byte-exact answers).

LITERAL_RE = re.compile(rb"~?\{(\d+)\}$")


class RawConn:
    """The socket plumbing the raw protocol clients share: a connection (TLS from the
    start when tls), a read buffer, CRLF lines read within the timeout, and probes for
    stray bytes and for the server closing.  Subclasses add the protocol: how the
    greeting reads (read_greeting), replies, commands, STARTTLS (wrap_tls)."""

    default_timeout = 10  # seconds, before T()

    def __init__(self, port, host="127.0.0.1", tls=False, timeout=None, source=None,
                 greeting=True):
        self.timeout = timeout or T(self.default_timeout)
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=self.timeout,
                                             source_address=src)
        self.local_port = self.sock.getsockname()[1]
        self.buf = b""
        self.tls = False
        if tls:
            self.wrap_tls()
        self.greeting = self.read_greeting() if greeting else None

    def read_greeting(self):
        return self.read_line()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def read_line(self, literals=False):
        """One line without its CRLF.  With literals (IMAP), a line ending in {n} or
        ~{n} goes on with those n bytes and the line after them."""
        out = b""
        while True:
            deadline = time.monotonic() + self.timeout
            while b"\r\n" not in self.buf:
                if time.monotonic() > deadline:
                    raise socket.timeout("no complete line")
                if len(self.buf) > 1 << 20:
                    raise AssertionError("reply line too long")
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line
            m = LITERAL_RE.search(line) if literals else None
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def wrap_tls(self):
        """TLS on the connection, from the start or after the server's go-ahead to
        STARTTLS/STLS: nothing may be buffered from the clear-text part."""
        assert self.buf == b"", "server sent bytes before the TLS handshake: %r" % self.buf
        self.sock = client_ssl_context().wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.tls = True

    def pending(self, wait=0.3):
        """Bytes that arrive within `wait` seconds (nothing expected)."""
        self.sock.settimeout(wait)
        data = self.buf
        self.buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ssl.SSLError, OSError):
            pass
        finally:
            self.sock.settimeout(self.timeout)
        return data

    def is_closed(self, wait=None):
        """True when the server closes (EOF or reset) within `wait` seconds."""
        wait = wait or T(5)
        deadline = time.monotonic() + wait
        self.sock.settimeout(0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except ssl.SSLError:
                    return True
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError, OSError):
            return True
        finally:
            try:
                self.sock.settimeout(self.timeout)
            except OSError:
                pass
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        m = re.match(r"(\d\.\d{1,3}\.\d{1,3})\b", self.lines[0] if self.lines else "")
        return m.group(1) if m else None

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class RawSMTP(RawConn):
    def read_greeting(self):
        return self.reply()

    def reply(self):
        lines = []
        for _ in range(1000):
            raw = self.read_line().decode("utf-8", "replace")
            m = re.match(r"^(\d{3})([ -]?)(.*)$", raw)
            assert m, "malformed reply line %r" % raw
            lines.append(m.group(3))
            if m.group(2) != "-":
                return Reply(int(m.group(1)), lines)
        raise AssertionError("endless multi-line reply")

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, r
        return r

    def starttls(self):
        r = self.cmd("STARTTLS")
        assert r.code == 220, r
        self.wrap_tls()
        return r

    def auth_plain(self, user, password):
        tok = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        return self.cmd("AUTH PLAIN " + tok)

    def send_data(self, msg):
        """DATA with dot-stuffing; returns the reply to the end of data."""
        r = self.cmd("DATA")
        assert r.code == 354, r
        self.send(dot_stuff(msg) + b".\r\n")
        return self.reply()


# ---------------------------------------------------------------------------------

LOG_RE = re.compile(r"^(\S+) (\w+) ([^\s\[]+)\[(\d+)\] ([^:\s]+): ?(.*)$")
KV_RE = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line):
    m = LOG_RE.match(line)
    if not m:
        return None
    ev = {"_ts": m.group(1), "_level": m.group(2), "_process": m.group(3),
          "_pid": int(m.group(4)), "_subsystem": m.group(5), "_raw": line}
    for k, v in KV_RE.findall(m.group(6)):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = v[1:-1]
        ev.setdefault(k, v)
    return ev


class Tern:
    """One tern instance: a temporary directory (0755, so the unprivileged workers can
    traverse it), its config, CLI calls, and a `tern serve` process."""

    running = set()

    def __init__(self, smtp=None, server=None, workers=2, listeners=None, own_cert=None,
                 extra_config="", ipv6=False, delivery=None):
        self.base = tempfile.mkdtemp(prefix="tern-test-")
        os.chmod(self.base, 0o755)
        self.data_dir = os.path.join(self.base, "data")
        self.log_file = os.path.join(self.base, "tern.log")
        self.conf = os.path.join(self.base, "tern.conf")
        self.out_file = os.path.join(self.base, "serve.out")
        self.err_file = os.path.join(self.base, "serve.err")
        self.proc = None
        self.passwords = {}
        self.killed_pids = set()
        self.allow_worker_exits = False
        self.stop_log_offset = None
        self.shutdown_ranges = []
        self.workers = workers
        self.server_opts = {"hostname": HOSTNAME, "data_dir": self.data_dir,
                            "workers": str(workers), "log_file": self.log_file,
                            "log_level": "debug"}
        self.server_opts.update(server or {})
        self.smtp_opts = {"max_message_size": "1M", "max_recipients": "100",
                          "auth_plaintext_loopback": "no"}
        self.smtp_opts.update(smtp or {})
        self.dns = dnsserver.get()
        # Outbound delivery asks the test DNS only; "other" domains point at a port
        # where nothing listens, so their mail is deferred and stays queued.
        self.delivery_opts = {"resolver": self.dns.address, "port": str(self.dns.dead_port)}
        self.delivery_opts.update(delivery or {})
        if listeners is None:
            listeners = [("mx", "smtp", "127.0.0.1:%d" % free_port()),
                         ("sub", "submission", "127.0.0.1:%d" % free_port()),
                         ("subs", "submissions", "127.0.0.1:%d" % free_port()),
                         ("imap", "imap", "127.0.0.1:%d" % free_port()),
                         ("imaps", "imaps", "127.0.0.1:%d" % free_port()),
                         ("pop3", "pop3", "127.0.0.1:%d" % free_port()),
                         ("pop3s", "pop3s", "127.0.0.1:%d" % free_port())]
            if ipv6:
                listeners.append(("mx6", "smtp",
                                  "[::1]:%d" % free_port("::1", socket.AF_INET6)))
        self.listeners = listeners
        self.ports = {}
        for name, proto, addr in listeners:
            self.ports.setdefault(proto, int(addr.rsplit(":", 1)[1]))
        self.tls_opts = {}
        if own_cert:
            self.tls_opts = {"cert": own_cert[0], "key": own_cert[1]}
        self.extra_config = extra_config
        self.write_config()
        if KEEP:
            print("tern test dir:", self.base)

    # -- configuration and CLI ------------------------------------------------------

    def config_text(self):
        out = ["[server]"]
        out += ["%s = %s" % kv for kv in self.server_opts.items()]
        if self.tls_opts:
            out.append("[tls]")
            out += ["%s = %s" % kv for kv in self.tls_opts.items()]
        out.append("[smtp]")
        out += ["%s = %s" % kv for kv in self.smtp_opts.items()]
        out.append("[delivery]")
        out += ["%s = %s" % kv for kv in self.delivery_opts.items()]
        for name, proto, addr in self.listeners:
            out += ["[listener %s]" % name, "protocol = %s" % proto, "address = %s" % addr]
        return "\n".join(out) + "\n" + self.extra_config

    def write_config(self, text=None):
        with open(self.conf, "w") as f:
            f.write(text if text is not None else self.config_text())
        os.chmod(self.conf, 0o644)

    @property
    def smtp_port(self):
        return self.ports["smtp"]

    @property
    def sub_port(self):
        return self.ports["submission"]

    @property
    def subs_port(self):
        return self.ports["submissions"]

    @property
    def imap_port(self):
        return self.ports["imap"]

    @property
    def imaps_port(self):
        return self.ports["imaps"]

    @property
    def pop3_port(self):
        return self.ports["pop3"]

    @property
    def pop3s_port(self):
        return self.ports["pop3s"]

    def cli(self, *args, input=None, check=True, timeout=None, conf=True):
        cmd = [TERN_BIN] + (["-c", self.conf] if conf else []) + list(args)
        p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout or T(30),
                           text=True, encoding="utf-8", errors="replace",
                           stdin=None if input is not None else subprocess.DEVNULL)
        for marker in SANITIZER_MARKERS:
            assert marker not in p.stderr, "sanitizer report from %r:\n%s" % (cmd, p.stderr)
        if check and p.returncode != 0:
            raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
        return p

    def add_domain(self, domain):
        self.cli("domain", "add", domain)

    def add_user(self, address, password=None):
        password = password or "pw-" + uuid.uuid4().hex[:20]
        self.cli("user", "add", address, input=password + "\n")
        self.passwords[address] = password
        return password

    def add_alias(self, address, target):
        self.cli("alias", "add", address, target)

    def setup_accounts(self):
        self.add_domain(DOMAIN)
        self.add_user(DEMO)
        self.add_user(BOB)

    # -- serve ------------------------------------------------------------------------

    def start(self, args=(), wait=True):
        assert self.proc is None or self.proc.poll() is not None
        self.out = open(self.out_file, "ab")
        self.err = open(self.err_file, "ab")
        self.proc = subprocess.Popen([TERN_BIN, "-c", self.conf, "serve"] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.err, start_new_session=True, cwd=self.base)
        if self.stop_log_offset is not None:
            self.shutdown_ranges.append((self.stop_log_offset, self.log_size()))
        self.stop_log_offset = None
        Tern.running.add(self)
        if wait:
            self.wait_ready()
        return self.proc

    def describe_failure(self):
        return "\n--- serve stderr (tail) ---\n%s\n--- log (tail) ---\n%s" % (
            self.read(self.err_file)[-3000:], self.log_text()[-4000:])

    @staticmethod
    def read(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout=None):
        """Ready when every listener accepts and the smtp role greets."""
        deadline = time.monotonic() + (timeout or T(15))
        pending = [addr for _, _, addr in self.listeners]
        while pending:
            if self.proc.poll() is not None:
                raise AssertionError("tern serve exited with %s during start-up%s"
                                     % (self.proc.returncode, self.describe_failure()))
            if time.monotonic() > deadline:
                raise AssertionError("tern serve not ready: %s%s"
                                     % (pending, self.describe_failure()))
            host, port = pending[0].rsplit(":", 1)
            host = host.strip("[]")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.05)
        if "smtp" in self.ports:
            left = max(1.0, deadline - time.monotonic())
            with RawSMTP(self.smtp_port, timeout=left) as c:
                assert c.greeting.code == 220, c.greeting
                c.cmd("QUIT")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10):
        """SIGTERM, wait up to `timeout` s, then SIGKILL the process group.  Returns the
        exit status (None when it had to be killed)."""
        if self.proc is None:
            return None
        status = self.proc.poll()
        if status is None:
            self.stop_log_offset = self.log_size()
            try:
                self.proc.send_signal(signal.SIGTERM)
                status = self.proc.wait(timeout=T(timeout))
            except subprocess.TimeoutExpired:
                status = None
        self.kill_group()
        self.out.close()
        self.err.close()
        Tern.running.discard(self)
        return status

    def terminate(self, sig=signal.SIGTERM):
        """Sends sig to the master and marks the shutdown as requested."""
        if self.stop_log_offset is None:
            self.stop_log_offset = self.log_size()
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """The master's exit status, or None if it is still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def group_members(self):
        """Pids still in the server's process group (workers left behind).  A process
        counts until every one of its threads is gone: a killed worker's main thread
        can be a zombie while its pool threads still exit, and until the last of them
        does, its listening sockets stay open and take (then reset) new connections."""
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = self._stat_fields(f.read())
                if int(fields[2]) != self.proc.pid:
                    continue
                states = [fields[0]]
                for tid in os.listdir("/proc/%s/task" % name):
                    with open("/proc/%s/task/%s/stat" % (name, tid)) as f:
                        states.append(self._stat_fields(f.read())[0])
            except OSError:
                continue
            if any(s not in ("Z", "X") for s in states):
                out.append(int(name))
        return out

    @staticmethod
    def _stat_fields(stat):
        """The fields of a /proc stat line after the command name (state first)."""
        return stat[stat.rindex(")") + 2:].split()

    def kill_group(self):
        """SIGKILL to the whole group; returns once no member is left (killed workers
        still hold their SO_REUSEPORT sockets until they are really gone)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=T(10))
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + T(10)
        while self.group_members() and time.monotonic() < deadline:
            time.sleep(0.02)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill_group()
        # Workers may have left descendants in the group even after the master exited.
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        Tern.running.discard(self)
        if not KEEP:
            shutil.rmtree(self.base, ignore_errors=True)

    def password_leaks(self):
        """Known passwords found in the log or the server's stderr."""
        text = self.log_text() + self.read(self.err_file) + self.read(self.out_file)
        return [a for a, pw in self.passwords.items() if pw in text]

    def sanitizer_report(self, start=0):
        text = self.read(self.err_file)[start:]
        for marker in SANITIZER_MARKERS:
            if marker in text:
                return text[max(0, text.find(marker) - 200):][:6000]
        return None

    # -- log --------------------------------------------------------------------------

    def log_size(self):
        try:
            return os.path.getsize(self.log_file)
        except FileNotFoundError:
            return 0

    def log_text(self, start=0):
        return self.read(self.log_file)[start:] if start == 0 else self._log_from(start)

    def _log_from(self, start):
        try:
            with open(self.log_file, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def events(self, name=None, start=0, **match):
        out = []
        for line in self._log_from(start).splitlines():
            ev = parse_log_line(line)
            if ev is None:
                continue
            if name is not None and ev.get("event") != name:
                continue
            if all(ev.get(k) == str(v) for k, v in match.items()):
                out.append(ev)
        return out

    def worker_pids(self, kind):
        """{index: pid} of the live workers of `kind` ("session", "delivery") as the
        master's worker_started / worker_exited lines tell."""
        live = {}
        for ev in self.events():
            if ev.get("kind") != kind or "pid" not in ev:
                continue
            try:
                pid = int(ev["pid"])
            except ValueError:
                continue
            if ev.get("event") == "worker_started":
                live[ev.get("index", str(pid))] = pid
            elif ev.get("event") == "worker_exited":
                for k in [k for k, v in live.items() if v == pid]:
                    del live[k]
        return {k: p for k, p in live.items() if os.path.exists("/proc/%d" % p)}

    def wait_workers(self, kind, count, timeout=None, exclude=(), interval=0.05):
        def ok():
            pids = self.worker_pids(kind)
            good = [p for p in pids.values() if p not in exclude]
            return pids if len(good) >= count else None
        return wait_for(ok, timeout or T(10), interval=interval,
                        what="%d %s worker(s) in the log" % (count, kind))

    def unexpected_worker_exits(self, start):
        """worker_exited lines logged since byte offset `start`, except for workers the
        test killed and exits while a requested shutdown was under way."""
        if self.allow_worker_exits:
            return []
        ranges = list(self.shutdown_ranges)
        if self.stop_log_offset is not None:
            ranges.append((self.stop_log_offset, float("inf")))
        try:
            with open(self.log_file, "rb") as f:
                f.seek(start)
                blob = f.read()
        except FileNotFoundError:
            return []
        bad = []
        pos = start
        for raw in blob.split(b"\n"):
            here = pos
            pos += len(raw) + 1
            if b"event=worker_exited" not in raw:
                continue
            if any(a <= here < b for a, b in ranges):
                continue
            line = raw.decode("utf-8", "replace")
            ev = parse_log_line(line) or {}
            try:
                pid = int(ev.get("pid", "0"))
            except ValueError:
                pid = 0
            if pid not in self.killed_pids:
                bad.append(line)
        return bad

    # -- mailboxes and queue ----------------------------------------------------------

    def maildir(self, address):
        local, domain = address.rsplit("@", 1)
        return os.path.join(self.data_dir, "mail", domain, local)

    def message_files(self, address):
        out = []
        base = self.maildir(address)
        for sub in ("new", "cur"):
            d = os.path.join(base, sub)
            try:
                names = sorted(os.listdir(d))
            except FileNotFoundError:
                continue
            out += [os.path.join(d, n) for n in names if not n.startswith(".")]
        return out

    def messages(self, address):
        out = []
        for path in self.message_files(address):
            try:
                with open(path, "rb") as f:
                    out.append(f.read())
            except FileNotFoundError:
                pass  # moved new/ -> cur/ under our feet
        return out

    def find_messages(self, address, marker):
        if isinstance(marker, str):
            marker = marker.encode("utf-8")
        return [m for m in self.messages(address) if marker in m]

    def wait_message(self, address, marker, count=1, timeout=None):
        """Polls the Maildir until `count` messages containing marker are there."""
        found = wait_for(lambda: (lambda ms: ms if len(ms) >= count else None)(
            self.find_messages(address, marker)), timeout or T(10),
            what="%d message(s) with %r in %s" % (count, marker, self.maildir(address)))
        return found[0] if count == 1 else found

    def queue_files(self):
        """The queue's message files (not the dot-files, such as the flush mark)."""
        out = []
        for root, _, files in os.walk(os.path.join(self.data_dir, "queue")):
            out += [os.path.join(root, f) for f in files if not f.startswith(".")]
        return out

    def queue_contents(self):
        out = []
        for p in self.queue_files():
            try:
                with open(p, "rb") as f:
                    out.append((p, f.read()))
            except FileNotFoundError:
                pass
        return out

    # -- clients ----------------------------------------------------------------------

    def raw(self, role="smtp", **kw):
        port = self.ports[role]
        return RawSMTP(port, tls=(role == "submissions"), **kw)

    def smtp(self, role="smtp", login=None, starttls=None, timeout=None):
        """An smtplib client after EHLO; STARTTLS by default on submission; AUTH when
        login is an address with a known password."""
        port = self.ports[role]
        timeout = timeout or T(15)
        if role == "submissions":
            c = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test",
                                 timeout=timeout, context=client_ssl_context())
        else:
            c = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=timeout)
        c.ehlo()
        if starttls is None:
            starttls = role == "submission"
        if starttls:
            c.starttls(context=client_ssl_context())
            c.ehlo()
        if login:
            c.login(login, self.passwords[login])
        return c

    def send(self, msg, to=(DEMO,), sender="x@y.test", role="smtp", login=None, **kw):
        with self.smtp(role, login=login, **kw) as c:
            refused = c.sendmail(sender, list(to), msg)
            assert not refused, refused
            return c


def _kill_leftovers():
    """Servers run in their own session (no terminal signal reaches them): an
    interrupted run must not leave them behind."""
    for t in list(Tern.running):
        if t.proc is not None:
            try:
                os.killpg(t.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


atexit.register(_kill_leftovers)


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")  # pytest then runs the teardowns


if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _sigterm)


@pytest.fixture(autouse=True)
def no_worker_crash():
    """After every test: no worker of a running server died unexpectedly, and no
    sanitizer report appeared on its stderr."""
    offsets = {t: (t.log_size(), len(Tern.read(t.err_file))) for t in list(Tern.running)}
    yield
    problems = []
    for t, (log_off, err_off) in offsets.items():
        rep = t.sanitizer_report(err_off)
        if rep:
            problems.append("sanitizer report:\n" + rep)
        exits = t.unexpected_worker_exits(log_off)
        if exits:
            problems.append("worker(s) died:\n" + "\n".join(exits))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def tern_bin():
    if not os.access(TERN_BIN, os.X_OK):
        pytest.fail("tern binary not found at %s (set TERN_BIN)" % TERN_BIN)
    return TERN_BIN


@pytest.fixture(scope="session")
def own_cert(tern_bin):
    """A certificate made with the openssl CLI, for servers configured with [tls]."""
    d = tempfile.mkdtemp(prefix="tern-cert-")
    os.chmod(d, 0o755)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=" + HOSTNAME, "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    os.chmod(cert, 0o644)
    os.chmod(key, 0o600)  # as an admin keeps it: the master reads it before dropping root
    yield cert, key
    shutil.rmtree(d, ignore_errors=True)


def started(t):
    """Starts t; if that fails, stops and removes it before re-raising."""
    try:
        t.start()
    except BaseException:
        t.stop()
        t.cleanup()
        raise
    return t


def _running(t):
    try:
        t.setup_accounts()
    except BaseException:
        t.cleanup()
        raise
    return started(t)


def _finish(t):
    status = t.stop()
    rep = t.sanitizer_report()
    leaks = t.password_leaks()
    t.cleanup()
    assert rep is None, rep
    assert not leaks, "passwords in the log/stderr: %s" % leaks
    return status


@pytest.fixture(scope="module")
def tern(tern_bin):
    """A started server shared by a module: example.test with demo@ and bob@."""
    t = _running(Tern())
    yield t
    _finish(t)


@pytest.fixture
def make_tern(tern_bin):
    """Factory for servers a single test owns: make_tern(start=True, accounts=True,
    **Tern kwargs).  All are stopped at teardown."""
    made = []

    def make(start=True, accounts=True, **kw):
        t = Tern(**kw)
        made.append(t)
        if accounts:
            t.setup_accounts()
        if start:
            t.start()
        return t

    yield make
    problems = []
    for t in made:
        exits = t.unexpected_worker_exits(0) if t.proc is not None else []
        t.stop()
        if exits:
            problems.append("worker(s) died:\n" + "\n".join(exits))
        rep = t.sanitizer_report()
        if rep:
            problems.append("sanitizer report:\n" + rep)
        if t.password_leaks():
            problems.append("passwords in the log: %s" % t.password_leaks())
    for t in made:
        t.cleanup()
    assert not problems, "\n".join(problems)


def run_threads(fn, args_list, timeout):
    """Runs fn(*args) in one thread each; returns [(result, exception)]."""
    results = [None] * len(args_list)

    def wrap(i, args):
        try:
            results[i] = (fn(*args), None)
        except BaseException as e:  # reported to the test
            results[i] = (None, e)

    threads = [threading.Thread(target=wrap, args=(i, a), daemon=True)
               for i, a in enumerate(args_list)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    for i, th in enumerate(threads):
        if th.is_alive() and results[i] is None:
            results[i] = (None, TimeoutError("thread still running"))
    return results
