"""The test DNS: Debian's unbound daemon on a free loopback port, answering everything
itself (`local-zone: "." static`, so it never recurses outward).  tern is pointed at
it with `[delivery] resolver`; no test queries the machine's own resolver.

Records are added at run time with unbound-control over a unix socket."""

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

import ports

UNBOUND = "/usr/sbin/unbound"
UNBOUND_CONTROL = "/usr/sbin/unbound-control"

# Names the tests use as "somewhere else": their MX is a loopback address where nothing
# listens on tern's delivery port, so outbound delivery is deferred and the message
# stays queued.
BASE_RECORDS = [
    'mx.dead.test. A 127.0.0.1',
] + ['%s. MX 10 mx.dead.test.' % d for d in
     ("other.test", "far.test", "elsewhere.test", "y.test", "remote.test")]


def _free_port(kind=socket.SOCK_DGRAM):
    return ports.free_port("127.0.0.1", socket.AF_INET, kind)


class DnsServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tern-dns-")
        os.chmod(self.dir, 0o755)
        # The same number free for UDP and TCP.
        for _ in range(50):
            self.port = _free_port()
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                continue
        self.address = "127.0.0.1@%d" % self.port
        # A port where nothing listens: tern's [delivery] port in the tests.
        self.dead_port = _free_port(socket.SOCK_STREAM)
        self.conf = os.path.join(self.dir, "unbound.conf")
        self.ctl = os.path.join(self.dir, "unbound.ctl")
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        self.log = open(os.path.join(self.dir, "unbound.out"), "ab")
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 15
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("unbound did not start: %s"
                                   % open(os.path.join(self.dir, "unbound.out")).read())
            time.sleep(0.05)

    def config_text(self):
        lines = [
            "server:",
            "  interface: 127.0.0.1",
            "  port: %d" % self.port,
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            '  directory: "%s"' % self.dir,
            '  pidfile: ""',
            "  use-syslog: no",
            "  verbosity: 1",
            "  do-ip6: no",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "iterator"',
            '  local-zone: "." static',
        ]
        lines += ['  local-data: "%s"' % r for r in BASE_RECORDS]
        lines += ["remote-control:", "  control-enable: yes",
                  "  control-interface: %s" % self.ctl, "  control-use-cert: no"]
        return "\n".join(lines) + "\n"

    def control(self, *args):
        p = subprocess.run([UNBOUND_CONTROL, "-c", self.conf] + list(args),
                           capture_output=True, text=True, timeout=15)
        if p.returncode != 0 or "error" in p.stdout.lower():
            raise RuntimeError("unbound-control %s: %s %s" % (args, p.stdout, p.stderr))
        return p.stdout

    def add(self, *records):
        """Adds resource records, e.g. add("a.test. MX 10 mx.a.test.", "mx.a.test. A 127.0.0.2")."""
        for r in records:
            self.control("local_data", r)

    def remove(self, name):
        self.control("local_data_remove", name)

    def _answers(self):
        """A bounded check that the server answers (a raw DNS query for mx.dead.test A)."""
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             b"\x02mx\x04dead\x04test\x00\x00\x01\x00\x01")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            try:
                s.sendto(q, ("127.0.0.1", self.port))
                data, _ = s.recvfrom(512)
                return data[:2] == b"\x12\x34"
            except OSError:
                return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_server = None


def get():
    """The one test DNS server of this test run, started on first use."""
    global _server
    if _server is None:
        _server = DnsServer()
        atexit.register(_server.stop)
    return _server
