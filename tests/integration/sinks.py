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

import ports

SMTP_SINK = "/usr/sbin/smtp-sink"


def free_port_on(host):
    return ports.free_port(host)


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


class PostfixServer:
    """A private Postfix instance (its own config, queue and data directories) whose
    smtpd listens on HOST:PORT and delivers mail for `domain` into Maildirs through its
    virtual agent.  It does no DNS at all.  Needs root (Postfix's master does)."""

    def __init__(self, host, port, domain, users):
        self.dir = tempfile.mkdtemp(prefix="tern-postfix-")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "etc")
        self.mail = os.path.join(self.dir, "mail")
        for d in ("etc", "spool", "data", "mail"):
            os.makedirs(os.path.join(self.dir, d))
        nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout.strip()
        nogroup = subprocess.run(["id", "-g", "nobody"], capture_output=True, text=True).stdout.strip()
        subprocess.run(["chown", "nobody:%s" % nogroup, self.mail], check=True)
        subprocess.run(["chown", "postfix", os.path.join(self.dir, "data")], check=True)
        self.domain = domain
        with open(os.path.join(self.conf, "vmailbox"), "w") as f:
            for u in users:
                f.write("%s@%s %s/%s/\n" % (u, domain, domain, u))
        main = {
            "compatibility_level": "3.6",
            "config_directory": self.conf,
            "queue_directory": os.path.join(self.dir, "spool"),
            "data_directory": os.path.join(self.dir, "data"),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": "postfix-tern-test",
            "maillog_file_prefixes": self.dir,
            "maillog_file": os.path.join(self.dir, "maillog"),
            "myhostname": "pf." + domain,
            "mydestination": "",
            "inet_interfaces": host,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "virtual_mailbox_domains": domain,
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": "texthash:" + os.path.join(self.conf, "vmailbox"),
            "virtual_uid_maps": "static:" + nobody,
            "virtual_gid_maps": "static:" + nogroup,
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "lmtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtputf8_enable": "yes",
        }
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("".join("%s = %s\n" % kv for kv in main.items()))
        services = [
            ("%s:%d" % (host, port), "inet", "n", "-", "n", "-", "20", "smtpd"),
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write("".join(" ".join(s) + "\n" for s in services))
        self._postfix("check")
        self._postfix("start")
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((host, port), timeout=1) as s:
                    if s.recv(100).startswith(b"220"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("postfix did not start: %s" % self.log())
            time.sleep(0.1)

    def _postfix(self, verb):
        p = subprocess.run(["/usr/sbin/postfix", "-c", self.conf, verb], capture_output=True,
                           text=True, timeout=60)
        if p.returncode != 0 and verb != "stop":
            raise RuntimeError("postfix %s: %s %s" % (verb, p.stdout, p.stderr))

    def log(self):
        try:
            with open(os.path.join(self.dir, "maillog")) as f:
                return f.read()
        except OSError:
            return ""

    def messages(self, user):
        out = []
        for p in sorted(glob.glob(os.path.join(self.mail, self.domain, user, "new", "*"))):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def stop(self):
        self._postfix("stop")
        shutil.rmtree(self.dir, ignore_errors=True)
