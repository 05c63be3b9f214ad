"""POP3 (RFC 1939, CAPA 2449, STLS 2595, AUTH 5034, implicit TLS 8314) against a real
`tern serve`, driven by Python's poplib, a raw socket and curl."""

import base64
import poplib
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from conftest import (DOMAIN, HOSTNAME, RawConn, T, client_ssl_context, make_message, uniq,
                      wait_for)


# ---------------------------------------------------------------------------------
# helpers

def new_user(t):
    addr = "%s@%s" % (uniq("pop"), DOMAIN)
    t.add_user(addr)
    return addr


def deliver(t, addr, body=None, subject=None, **kw):
    """Sends a message to addr by SMTP; returns (sent bytes, stored file bytes)."""
    marker = uniq("mark")
    subject = subject or marker
    if body is None:
        body = "Hello %s.\r\n" % marker
    msg = make_message(subject=subject, body=body, to=addr, **kw)
    assert marker.encode() in msg
    t.send(msg, to=(addr,))
    stored = t.wait_message(addr, marker, timeout=T(20))
    assert stored.endswith(msg)
    return msg, stored


def pop3(t, tls="stls", timeout=None):
    timeout = timeout or T(15)
    if tls == "pop3s":
        return poplib.POP3_SSL("127.0.0.1", t.pop3s_port, timeout=timeout,
                               context=client_ssl_context())
    p = poplib.POP3("127.0.0.1", t.pop3_port, timeout=timeout)
    if tls == "stls":
        p.stls(context=client_ssl_context())
    return p


def login(t, addr, tls="stls", retries=True):
    """USER/PASS; retried while a previous session's lock is being released (its
    store is closed on the pool after the disconnect)."""
    deadline = time.monotonic() + T(10)
    while True:
        p = pop3(t, tls)
        p.user(addr)
        try:
            r = p.pass_(t.passwords[addr])
            assert r.startswith(b"+OK"), r
            return p
        except poplib.error_proto as e:
            p.close()
            if not retries or b"[IN-USE]" not in e.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def err_of(fn, *args):
    with pytest.raises(poplib.error_proto) as ei:
        fn(*args)
    return ei.value.args[0]


def plain_token(user, password, authzid=""):
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password)).encode()).decode()


def retr_bytes(p, n):
    """RETR through poplib: (the message bytes, the octets in +OK)."""
    resp, lines, _ = p.retr(n)
    return b"\r\n".join(lines) + b"\r\n", int(resp.split()[1])


class RawPOP3(RawConn):
    """A raw client: pipelining by hand, byte-exact multi-line answers."""

    default_timeout = 15

    def multi(self):
        """The raw body of a multi-line answer, still dot-stuffed, up to the ".\\r\\n"."""
        while True:
            if self.buf.startswith(b".\r\n"):
                self.buf = self.buf[3:]
                return b""
            i = self.buf.find(b"\r\n.\r\n")
            if i >= 0:
                body, self.buf = self.buf[:i + 2], self.buf[i + 5:]
                return body
            self._fill()

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.read_line()

    def starttls(self):
        r = self.cmd("STLS")
        assert r.startswith(b"+OK"), r
        self.wrap_tls()


def unstuff(body):
    lines = body.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


# ---------------------------------------------------------------------------------
# greeting, CAPA, STLS, TLS rules

def test_greeting_and_capa_before_and_after_stls(tern):
    p = poplib.POP3("127.0.0.1", tern.pop3_port, timeout=T(10))
    assert p.getwelcome() == ("+OK %s POP3 ready" % HOSTNAME).encode()
    caps = p.capa()
    for c in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"):
        assert c in caps, caps
    assert caps["IMPLEMENTATION"] == ["tern"]
    # No login in the clear: neither USER nor SASL is offered.
    assert "USER" not in caps and "SASL" not in caps, caps
    p.stls(context=client_ssl_context())
    caps = p.capa()
    assert "STLS" not in caps
    assert "USER" in caps and caps["SASL"] == ["PLAIN"], caps
    p.quit()


def test_capa_on_pop3s(tern):
    p = pop3(tern, "pop3s")
    assert p.getwelcome().startswith(b"+OK")
    caps = p.capa()
    assert "USER" in caps and caps["SASL"] == ["PLAIN"] and "STLS" not in caps, caps
    p.quit()


def test_login_refused_before_tls(tern):
    addr = new_user(tern)
    p = pop3(tern, tls=None)
    e = err_of(p.user, addr)
    assert e.startswith(b"-ERR [AUTH]") and b"STLS" in e, e
    e = err_of(p._shortcmd, "PASS " + tern.passwords[addr])
    assert e.startswith(b"-ERR [AUTH]"), e
    e = err_of(p._shortcmd, "AUTH PLAIN " + plain_token(addr, tern.passwords[addr]))
    assert e.startswith(b"-ERR [AUTH]"), e
    # Transaction commands before login.
    e = err_of(p.stat)
    assert e.startswith(b"-ERR"), e
    p.quit()
    assert tern.passwords[addr] not in tern.log_text()


def test_user_pass_over_stls(tern):
    addr = new_user(tern)
    p = pop3(tern, "stls")
    assert p.user(addr).startswith(b"+OK")
    assert p.pass_(tern.passwords[addr]) == b"+OK Logged in"
    assert p.stat() == (0, 0)
    # Not in AUTHORIZATION any more.
    e = err_of(p._shortcmd, "STLS")
    assert e.startswith(b"-ERR")
    e = err_of(p.user, addr)
    assert e.startswith(b"-ERR")
    assert p.quit().startswith(b"+OK")
    ev = tern.events("login", user=addr)
    assert ev, "no event=login user=%s in the log" % addr


def test_user_pass_over_pop3s(tern):
    addr = new_user(tern)
    msg, stored = deliver(tern, addr)
    p = login(tern, addr, "pop3s")
    assert p.stat() == (1, len(stored))
    p.quit()


def test_auth_plain_initial_response(tern):
    addr = new_user(tern)
    for tls in ("stls", "pop3s"):
        p = pop3(tern, tls)
        r = p._shortcmd("AUTH PLAIN " + plain_token(addr, tern.passwords[addr]))
        assert r == b"+OK Logged in"
        p.quit()


def test_auth_plain_continuation_and_cancel(tern):
    addr = new_user(tern)
    p = pop3(tern, "stls")
    p._putcmd("AUTH PLAIN")
    assert p._getline()[0] == b"+ "
    p._putcmd("*")
    e = err_of(p._getresp)
    assert e.startswith(b"-ERR")
    p._putcmd("AUTH PLAIN")
    assert p._getline()[0] == b"+ "
    p._putcmd(plain_token(addr, tern.passwords[addr]))
    assert p._getresp() == b"+OK Logged in"
    assert p.stat() == (0, 0)
    p.quit()


def test_auth_plain_garbage_and_bad_mechanism(tern):
    p = pop3(tern, "stls")
    e = err_of(p._shortcmd, "AUTH PLAIN !!!notbase64")
    assert e.startswith(b"-ERR")
    e = err_of(p._shortcmd, "AUTH CRAM-MD5")
    assert e.startswith(b"-ERR")
    assert p.noop is not None
    assert p.capa()  # still in sync
    p.quit()


def test_wrong_password_same_reply_as_unknown_user(tern):
    addr = new_user(tern)
    replies = []
    for user, pw in ((addr, "wrong-password"), ("nobody-%s@%s" % (uniq(), DOMAIN), "x"),
                     ("nodomain", "y")):
        p = pop3(tern, "stls")
        p.user(user)
        replies.append(err_of(p.pass_, pw))
        e = err_of(p._shortcmd, "AUTH PLAIN " + plain_token(user, pw))
        replies.append(e)
        p.quit()
    assert set(replies) == {b"-ERR [AUTH] Invalid user name or password"}, replies
    # A correct login still works afterwards (below the throttle).
    login(tern, addr).quit()


def test_pass_without_user(tern):
    p = pop3(tern, "stls")
    e = err_of(p._shortcmd, "PASS secret")
    assert e.startswith(b"-ERR")
    p.quit()


def test_login_throttle(make_tern):
    t = make_tern(smtp={"auth_max_failures": "3", "auth_failure_window": "300"})
    addr = new_user(t)
    p = pop3(t, "stls")
    for _ in range(3):
        p.user(addr)
        assert err_of(p.pass_, "bad") == b"-ERR [AUTH] Invalid user name or password"
    p.user(addr)
    e = err_of(p.pass_, t.passwords[addr])  # right password, still refused
    assert e == b"-ERR [AUTH] Too many failed logins, try again later", e
    p.quit()


def test_stls_discards_pipelined_input(tern):
    c = RawPOP3(tern.pop3_port)
    c.send("STLS\r\nCAPA\r\n")
    r = c.read_line()
    assert r.startswith(b"+OK"), r
    c.wrap_tls()  # asserts that nothing answered CAPA in clear text
    # The CAPA sent in the clear is gone: the next answer is to NOOP's -ERR (not
    # logged in) and nothing before it.
    r = c.cmd("NOOP")
    assert r.startswith(b"-ERR"), r
    c.close()


def test_stls_on_pop3s_refused(tern):
    p = pop3(tern, "pop3s")
    e = err_of(p._shortcmd, "STLS")
    assert e.startswith(b"-ERR")
    p.quit()


def test_tls_client_hello_on_cleartext_port(tern):
    start = tern.log_size()
    s = socket.create_connection(("127.0.0.1", tern.pop3_port), timeout=T(10))
    ctx = client_ssl_context()
    with pytest.raises((ssl.SSLError, OSError)):
        ctx.wrap_socket(s, server_hostname=HOSTNAME)
    s.close()
    wait_for(lambda: "tls_mismatch" in tern.log_text(start), T(5), what="tls_mismatch log line")


def test_errors_unknown_syntax_long_line(tern):
    addr = new_user(tern)
    c = RawPOP3(tern.pop3_port)
    assert c.cmd("FOO") == b"-ERR Unknown command"
    c.starttls()
    assert c.cmd("USER " + addr).startswith(b"+OK")
    assert c.cmd("PASS " + tern.passwords[addr]) == b"+OK Logged in"
    assert c.cmd("LIST x").startswith(b"-ERR Syntax")
    assert c.cmd("LIST 99999999999").startswith(b"-ERR")
    assert c.cmd("RETR 1").startswith(b"-ERR")  # empty maildrop
    assert c.cmd("TOP 1").startswith(b"-ERR Syntax")
    r = c.cmd("NOOP " + "x" * 1000)
    assert r.startswith(b"-ERR Line too long"), r
    assert c.cmd("NOOP") == b"+OK"
    c.send("QUIT\r\n")
    assert c.read_line().startswith(b"+OK")
    assert c.is_closed()
    c.close()


def test_too_many_errors_closes(tern):
    c = RawPOP3(tern.pop3_port)
    for _ in range(19):
        assert c.cmd("BOGUS").startswith(b"-ERR")
    c.send("BOGUS\r\n")
    assert c.read_line().startswith(b"-ERR")
    assert c.read_line().startswith(b"-ERR Too many errors")
    assert c.is_closed()
    c.close()


# ---------------------------------------------------------------------------------
# the maildrop

def test_stat_list_uidl_retr_byte_exact(tern):
    addr = new_user(tern)
    body = ("First line.\r\n.starts with a dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n"
            "\xe9t\xe9 8-bit\r\n")
    sent = []
    for i in range(3):
        msg, stored = deliver(tern, addr, body=body if i == 1 else None)
        sent.append((msg, stored))
    p = login(tern, addr)
    sizes = [len(s) for _, s in sent]
    assert p.stat() == (3, sum(sizes))
    resp, lines, _ = p.list()
    assert [l.split() for l in lines] == [[str(i + 1).encode(), str(n).encode()]
                                          for i, n in enumerate(sizes)]
    assert p.list(2) == b"+OK 2 %d" % sizes[1]
    resp, uidls, _ = p.uidl()
    ids = [l.split()[1] for l in uidls]
    assert len(set(ids)) == 3 and all(len(i) == 16 for i in ids)
    assert p.uidl(3).split()[2] == ids[2]
    for i, (msg, stored) in enumerate(sent):
        data, octets = retr_bytes(p, i + 1)
        assert octets == len(stored)
        assert data == stored
        # What the delivery put in front of the message sent.
        prefix = data[:len(data) - len(msg)]
        assert b"Return-Path:" in prefix and b"Delivered-To:" in prefix, prefix
    p.quit()
    # The same through a raw socket: dot-stuffed on the wire, exact once unstuffed.
    c = RawPOP3(tern.pop3s_port, tls=True)
    c.cmd("USER " + addr)
    assert c.cmd("PASS " + tern.passwords[addr]) == b"+OK Logged in"
    r = c.cmd("RETR 2")
    assert r == b"+OK %d octets" % len(sent[1][1]), r
    wire = c.multi()
    assert b"\r\n..starts with a dot\r\n...two dots\r\n..\r\n" in wire
    assert unstuff(wire) == sent[1][1]
    c.cmd("QUIT")
    c.close()


def test_top(tern):
    addr = new_user(tern)
    body = "".join("line %d\r\n" % i for i in range(1, 11))
    msg, stored = deliver(tern, addr, body=body)
    head_end = stored.index(b"\r\n\r\n") + 4
    p = login(tern, addr)
    resp, lines, _ = p.top(1, 0)
    assert b"\r\n".join(lines) + b"\r\n" == stored[:head_end]
    resp, lines, _ = p.top(1, 3)
    assert b"\r\n".join(lines) + b"\r\n" == stored[:head_end] + b"line 1\r\nline 2\r\nline 3\r\n"
    resp, lines, _ = p.top(1, 1000)
    assert b"\r\n".join(lines) + b"\r\n" == stored
    p.quit()


def test_dele_rset(tern):
    addr = new_user(tern)
    _, s1 = deliver(tern, addr)
    _, s2 = deliver(tern, addr)
    p = login(tern, addr)
    assert p.dele(1).startswith(b"+OK")
    assert p.stat() == (1, len(s2))
    for fn, args in ((p.retr, (1,)), (p.dele, (1,)), (p.list, (1,)), (p.uidl, (1,)),
                     (p.top, (1, 0))):
        e = err_of(fn, *args)
        assert e.startswith(b"-ERR"), (fn, e)
    resp, lines, _ = p.list()
    assert [l.split()[0] for l in lines] == [b"2"]
    assert p.rset().startswith(b"+OK")
    assert p.stat() == (2, len(s1) + len(s2))
    assert retr_bytes(p, 1)[0] == s1
    p.quit()
    p = login(tern, addr)
    assert p.stat()[0] == 2
    p.quit()


def test_dele_quit_removes_only_on_quit(tern):
    addr = new_user(tern)
    _, s1 = deliver(tern, addr)
    _, s2 = deliver(tern, addr)
    p = login(tern, addr)
    uids = [l.split()[1] for l in p.uidl()[1]]
    p.dele(1)
    # Still on disk until QUIT.
    assert len(tern.messages(addr)) == 2
    r = p.quit()
    assert r.startswith(b"+OK"), r
    assert tern.messages(addr) == [s2]
    p = login(tern, addr)
    assert p.stat() == (1, len(s2))
    assert [l.split()[1] for l in p.uidl()[1]] == [uids[1]]
    assert retr_bytes(p, 1)[0] == s2
    p.quit()


def test_drop_without_quit_keeps_messages(tern):
    addr = new_user(tern)
    deliver(tern, addr)
    deliver(tern, addr)
    p = login(tern, addr)
    p.dele(1)
    p.dele(2)
    p.close()  # no QUIT: no UPDATE state
    p = login(tern, addr)
    assert p.stat()[0] == 2
    p.quit()
    assert len(tern.messages(addr)) == 2


def test_lock_second_session_in_use(tern):
    addr = new_user(tern)
    deliver(tern, addr)
    p1 = login(tern, addr)
    p2 = pop3(tern, "pop3s")
    p2.user(addr)
    e = err_of(p2.pass_, tern.passwords[addr])
    assert e == b"-ERR [IN-USE] Mailbox is locked by another session", e
    # The refused session may try again once the first is gone.
    p1.quit()
    p2.user(addr)
    deadline = time.monotonic() + T(10)
    while True:
        try:
            assert p2.pass_(tern.passwords[addr]) == b"+OK Logged in"
            break
        except poplib.error_proto as ex:
            assert b"[IN-USE]" in ex.args[0] and time.monotonic() < deadline
            time.sleep(0.1)
            p2.user(addr)
    assert p2.stat()[0] == 1
    p2.quit()


def test_snapshot_fixed_at_login(tern):
    addr = new_user(tern)
    deliver(tern, addr)
    p = login(tern, addr)
    deliver(tern, addr)  # arrives during the session
    assert p.stat()[0] == 1
    p.quit()
    p = login(tern, addr)
    assert p.stat()[0] == 2
    p.quit()


def test_uidl_stable_across_sessions(tern):
    addr = new_user(tern)
    for _ in range(3):
        deliver(tern, addr)
    p = login(tern, addr)
    first = p.uidl()[1]
    p.quit()
    p = login(tern, addr, "pop3s")
    assert p.uidl()[1] == first
    p.dele(2)
    p.quit()
    p = login(tern, addr)
    after = p.uidl()[1]
    p.quit()
    assert [l.split()[1] for l in after] == [first[0].split()[1], first[2].split()[1]]


def test_pipelining(tern):
    addr = new_user(tern)
    _, s1 = deliver(tern, addr)
    c = RawPOP3(tern.pop3s_port, tls=True)
    c.send("USER %s\r\nPASS %s\r\nSTAT\r\nLIST\r\nRETR 1\r\nNOOP\r\nQUIT\r\n"
           % (addr, tern.passwords[addr]))
    assert c.read_line().startswith(b"+OK")
    assert c.read_line() == b"+OK Logged in"
    assert c.read_line() == b"+OK 1 %d" % len(s1)
    assert c.read_line().startswith(b"+OK")
    assert c.multi() == b"1 %d\r\n" % len(s1)
    assert c.read_line() == b"+OK %d octets" % len(s1)
    assert unstuff(c.multi()) == s1
    assert c.read_line() == b"+OK"
    assert c.read_line().startswith(b"+OK")
    assert c.is_closed()
    c.close()


def test_large_message_intact(make_tern):
    t = make_tern(smtp={"max_message_size": "20M"})
    addr = new_user(t)
    lines = []
    for i in range(5 * 1024 * 1024 // 70):
        lines.append(b"%07d .dot-%s\r\n" % (i, b"y" * 56) if i % 97 == 0
                     else b"%07d %s\r\n" % (i, b"x" * 60))
    body = b"".join(lines)
    assert len(body) >= 5 * 1024 * 1024 - 100
    msg, stored = deliver(t, addr, body=body)
    p = login(t, addr, "pop3s", retries=True)
    data, octets = retr_bytes(p, 1)
    assert octets == len(stored)
    assert data == stored
    p.quit()
    # And a slow reader over STLS: the server streams in steps without losing bytes.
    c = RawPOP3(t.pop3_port)
    c.starttls()
    c.cmd("USER " + addr)
    assert c.cmd("PASS " + t.passwords[addr]) == b"+OK Logged in"
    c.send("RETR 1\r\n")
    time.sleep(1)
    assert c.read_line() == b"+OK %d octets" % len(stored)
    assert unstuff(c.multi()) == stored
    c.cmd("QUIT")
    c.close()


def test_shutdown_says_goodbye(make_tern):
    t = make_tern()
    addr = new_user(t)
    c = RawPOP3(t.pop3s_port, tls=True)
    c.cmd("USER " + addr)
    assert c.cmd("PASS " + t.passwords[addr]) == b"+OK Logged in"
    t.terminate()
    r = c.read_line()
    assert r == b"-ERR [SYS/TEMP] Server shutting down", r
    assert c.is_closed()
    c.close()
    assert t.wait_exit(T(30)) is not None


# ---------------------------------------------------------------------------------
# curl, a client nobody here wrote

@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_pop3s_and_stls(tern):
    addr = new_user(tern)
    msg, stored = deliver(tern, addr)
    pw = tern.passwords[addr]
    out = subprocess.run(["curl", "-sS", "-k", "--user", "%s:%s" % (addr, pw),
                          "pop3s://127.0.0.1:%d/1" % tern.pop3s_port],
                         capture_output=True, timeout=T(30))
    assert out.returncode == 0, out.stderr
    assert out.stdout == stored
    out = subprocess.run(["curl", "-sS", "-k", "--ssl-reqd", "--user", "%s:%s" % (addr, pw),
                          "pop3://127.0.0.1:%d/" % tern.pop3_port],
                         capture_output=True, timeout=T(30))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [b"1", str(len(stored)).encode()]
    # AUTH PLAIN through curl's SASL.
    out = subprocess.run(["curl", "-sS", "-k", "--login-options", "AUTH=PLAIN",
                          "--user", "%s:%s" % (addr, pw),
                          "pop3s://127.0.0.1:%d/1" % tern.pop3s_port],
                         capture_output=True, timeout=T(30))
    assert out.returncode == 0, out.stderr
    assert out.stdout == stored
