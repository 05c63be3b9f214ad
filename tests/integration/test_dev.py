"""`tern serve --dev`: data in ./var, loopback ports 2525/2587/2465 (SMTP), 2143/2993
(IMAP) and 2110/2995 (POP3), domain example.test,
a demo user whose password is printed once, a client settings table."""

import imaplib
import os
import poplib
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (DEMO, KEEP, SANITIZER_MARKERS, T, TERN_BIN, client_ssl_context,
                      make_message, message_id_of, wait_for)

DEV_PORTS = (2525, 2587, 2465, 2143, 2993, 2110, 2995)


def ports_free():
    for port in DEV_PORTS:
        s = socket.socket()
        # As a server binds: connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
        finally:
            s.close()
    return True


class DevServer:
    def __init__(self, cwd):
        self.cwd = cwd
        self.out = b""
        self.proc = subprocess.Popen([TERN_BIN, "serve", "--dev"], cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            self.out += chunk

    @property
    def text(self):
        return self.out.decode("utf-8", "replace")

    def wait_ready(self):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("tern serve --dev exited %s:\n%s"
                                     % (self.proc.returncode, self.text))
            for port in DEV_PORTS:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return False
            return True
        wait_for(up, T(20), interval=0.1, what="the --dev listeners")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(T(10))
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(T(10))
        self.reader.join(T(5))
        return self.proc.returncode


def find_password(text):
    """The value after "password ...:" or, failing that, the last password-looking token
    on a line that mentions a password."""
    m = re.search(r"(?im)password[^:\n]*:\s*(\S{6,})\s*$", text)
    if m:
        return m.group(1)
    for line in text.splitlines():
        if "password" not in line.lower():
            continue
        tokens = [tok for tok in re.findall(r"[A-Za-z0-9+/=_\-.!#$%^&*~]{8,}", line)
                  if "password" not in tok.lower() and "@" not in tok]
        if tokens:
            return tokens[-1]
    return None


@pytest.fixture
def devdir(tern_bin):
    if not ports_free():
        pytest.skip("the --dev ports %s are in use" % (DEV_PORTS,))
    d = tempfile.mkdtemp(prefix="tern-dev-")
    os.chmod(d, 0o755)
    yield d
    if not KEEP:
        shutil.rmtree(d, ignore_errors=True)


def test_serve_dev(devdir):
    srv = DevServer(devdir)
    try:
        srv.wait_ready()
        text = wait_for(lambda: srv.text if find_password(srv.text) and "2465" in srv.text
                        else None, T(10), what="the settings table with a password")
        for needle in ("2525", "2587", "2465", "2143", "2993", "2110", "2995", "IMAP", "POP3",
                       DEMO, "127.0.0.1"):
            assert needle in text, (needle, text)
        low = text.lower()
        for word in ("server", "port", "encryption", "authentication", "username",
                     "starttls"):
            assert word in low, (word, text)
        pw = find_password(text)
        assert len(pw) >= 8, "printed password too short: %r" % pw

        # The printed settings work: submission with STARTTLS and the printed password.
        msg = make_message(sender=DEMO, to=DEMO)
        with smtplib.SMTP("127.0.0.1", 2587, local_hostname="client.test",
                          timeout=T(15)) as c:
            c.starttls(context=client_ssl_context())
            c.login(DEMO, pw)
            c.sendmail(DEMO, [DEMO], msg)
        with smtplib.SMTP_SSL("127.0.0.1", 2465, local_hostname="client.test",
                              timeout=T(15), context=client_ssl_context()) as c:
            c.login(DEMO, pw)
        with smtplib.SMTP("127.0.0.1", 2525, local_hostname="client.test",
                          timeout=T(15)) as c:
            msg2 = make_message()
            c.sendmail("x@y.test", [DEMO], msg2)
        newdir = os.path.join(devdir, "var", "mail", "example.test", "demo", "new")

        def delivered(m):
            def check():
                for sub in ("new", "cur"):
                    d = os.path.join(os.path.dirname(newdir), sub)
                    for name in (os.listdir(d) if os.path.isdir(d) else []):
                        with open(os.path.join(d, name), "rb") as f:
                            if message_id_of(m).encode() in f.read():
                                return True
                return False
            return check
        wait_for(delivered(msg), T(10), what="the submitted message in ./var")
        wait_for(delivered(msg2), T(10), what="the smtp-role message in ./var")
        # ... and reading it: IMAP with STARTTLS and over TLS, POP3 over TLS.
        with imaplib.IMAP4("127.0.0.1", 2143, timeout=T(15)) as c:
            c.starttls(ssl_context=client_ssl_context())
            c.login(DEMO, pw)
            typ, data = c.select("INBOX")
            assert typ == "OK" and int(data[0]) == 2, data
        with imaplib.IMAP4_SSL("127.0.0.1", 2993, ssl_context=client_ssl_context(),
                               timeout=T(15)) as c:
            c.login(DEMO, pw)
            c.select("INBOX", readonly=True)
            typ, data = c.search(None, "HEADER", "Message-ID", message_id_of(msg))
            assert typ == "OK" and data[0].split(), data
        p = poplib.POP3_SSL("127.0.0.1", 2995, context=client_ssl_context(), timeout=T(15))
        try:
            p.user(DEMO)
            p.pass_(pw)
            assert p.stat()[0] == 2
        finally:
            p.quit()
        assert os.path.exists(os.path.join(devdir, "var", "tls", "cert.pem"))
        assert os.path.exists(os.path.join(devdir, "var", "tern.db"))
    finally:
        status = srv.stop()
    assert status == 0, "serve --dev exited %s after SIGTERM:\n%s" % (status, srv.text)
    for marker in SANITIZER_MARKERS:
        assert marker not in srv.text, srv.text

    # Second start in the same directory: the password is not printed again, and the
    # old one still works.
    time.sleep(0.2)
    srv2 = DevServer(devdir)
    try:
        srv2.wait_ready()
        time.sleep(0.5 * T(1))
        assert pw not in srv2.text, "the password was printed a second time"
        with smtplib.SMTP_SSL("127.0.0.1", 2465, local_hostname="client.test",
                              timeout=T(15), context=client_ssl_context()) as c:
            c.login(DEMO, pw)
    finally:
        srv2.stop()
