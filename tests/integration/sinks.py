"""Remote SMTP servers for outbound tests: Postfix's smtp-sink (dumping each message to
a file, rejecting commands on request) and a misbehaving server of our own (garbage or
silence).  All on loopback addresses 127.0.0.x, stopped by the tests that start them."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

SMTP_SINK = "/usr/sbin/smtp-sink"


def free_port_on(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free_on(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


class SmtpSink:
    """smtp-sink on HOST:PORT; each message lands in a file of its own."""

    def __init__(self, host, port, args=(), name="sink.test"):
        self.host, self.port = host, port
        self.dir = tempfile.mkdtemp(prefix="tern-sink-")
        os.chmod(self.dir, 0o777)
        cmd = [SMTP_SINK, "-h", name, "-d", os.path.join(self.dir, "%Y%m%d%H%M%S.")]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += list(args) + ["%s:%d" % (host, port), "100"]
        self.log = open(os.path.join(self.dir, "sink.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((host, port), timeout=1) as s:
                    s.recv(100)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("smtp-sink did not start: %r" % cmd)
                time.sleep(0.05)

    def messages(self):
        out = []
        for p in sorted(glob.glob(os.path.join(self.dir, "2*"))):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def find(self, marker):
        if isinstance(marker, str):
            marker = marker.encode()
        return [m for m in self.messages() if marker in m]

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


class BadServer:
    """Accepts connections and then either sends garbage or says nothing at all."""

    def __init__(self, host, port, mode):
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.stopping = False
        self.held = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + 600
        while not self.stopping and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            if self.mode == "garbage":
                try:
                    conn.sendall(b"\x00\xffHELLO THIS IS NOT SMTP\r\n" + b"x" * 5000 + b"\r\n")
                except OSError:
                    pass
            self.held.append(conn)  # "hang": keep it open, say nothing

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()
