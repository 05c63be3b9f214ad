"""Limits and hostile input: recipients, SIZE, oversize data, SMTP smuggling, STARTTLS
injection, long lines, 10 MB without CRLF, many parallel connections, per-IP limit,
timeouts.  Over any bound: an error reply, never a crash, never a hang."""

import base64
import os
import socket
import threading
import time

import pytest

from conftest import (started, BOB, DEMO, T, Tern, RawSMTP, _finish, make_message,
                      message_id_of, run_threads, uniq, wait_for)

MAX_SIZE = 100 * 1024
MAX_RCPT = 10


@pytest.fixture(scope="module")
def tern(tern_bin):
    t = Tern(smtp={"max_message_size": "100K", "max_recipients": str(MAX_RCPT)})
    t.setup_accounts()
    for i in range(MAX_RCPT + 2):
        t.add_alias("r%d@example.test" % i, DEMO)
    started(t)
    yield t
    _finish(t)


def still_answers(t, role="smtp"):
    with t.raw(role) as c:
        assert c.greeting.code == 220
        c.ehlo()
        assert c.cmd("QUIT").code == 221


def assert_nothing_with(t, marker, settle=0.5):
    time.sleep(settle * T(1))
    m = marker.encode() if isinstance(marker, str) else marker
    for user in (DEMO, BOB):
        assert not t.find_messages(user, m), "message %r delivered to %s" % (marker, user)
    for path, data in t.queue_contents():
        assert m not in data, "message %r left in the queue (%s)" % (marker, path)


# -- recipients and size ----------------------------------------------------------------

def test_too_many_recipients(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        for i in range(MAX_RCPT):
            r = c.cmd("RCPT TO:<r%d@example.test>" % i)
            assert r.code == 250, (i, r)
        r = c.cmd("RCPT TO:<r%d@example.test>" % MAX_RCPT)
        assert r.code == 452 and r.enhanced == "4.5.3", r
        r = c.cmd("RCPT TO:<%s>" % BOB)
        assert r.code == 452, r
        # The transaction with the first recipients goes on.
        msg = make_message()
        assert c.send_data(msg).code == 250
        assert c.cmd("RSET").code == 250
    tern.wait_message(DEMO, message_id_of(msg))
    assert not tern.find_messages(BOB, message_id_of(msg))


def test_size_parameter(tern):
    with tern.raw("smtp") as c:
        kw = [l for l in c.ehlo().lines if l.upper().startswith("SIZE")]
        assert kw and int(kw[0].split()[1]) in (MAX_SIZE, 100000), kw
        r = c.cmd("MAIL FROM:<x@y.test> SIZE=%d" % (MAX_SIZE * 2))
        assert r.code == 552 and r.enhanced == "5.3.4", r
        r = c.cmd("MAIL FROM:<x@y.test> SIZE=99999999999999999999999")
        assert r.code in (552, 501), r
        r = c.cmd("MAIL FROM:<x@y.test> SIZE=abc")
        assert r.code in (501, 555), r
        r = c.cmd("MAIL FROM:<x@y.test> SIZE=1000")
        assert r.code == 250, r


def test_oversize_data_refused_after_end_of_data(tern):
    marker = uniq("oversize")
    body = ("y" * 70 + "\r\n") * (2 * MAX_SIZE // 72)
    msg = make_message(subject=marker, body=body)
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        r = c.send_data(msg)
        assert r.code == 552 and r.enhanced == "5.3.4", r
        assert c.pending(0.2) == b"", "extra bytes after the 552"
        assert c.cmd("RSET").code == 250
        small = make_message()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        assert c.send_data(small).code == 250
    tern.wait_message(DEMO, message_id_of(small))
    assert_nothing_with(tern, marker)


@pytest.mark.parametrize("chunks", [[2 * MAX_SIZE], [60000, 60000]])
def test_oversize_bdat(tern, chunks):
    marker = uniq("bigbdat").encode()
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        replies = []
        for i, n in enumerate(chunks):
            data = (marker + b"\r\n" + b"z" * n)[:n]
            last = b" LAST" if i == len(chunks) - 1 else b""
            c.send(b"BDAT %d%s\r\n" % (n, last) + data)
            replies.append(c.reply())
        assert any(r.code == 552 and r.enhanced == "5.3.4" for r in replies), replies
        assert all(r.code != 250 for r in replies[-1:]), replies
        if not c.is_closed(0.3):
            assert c.cmd("RSET").code == 250
    assert_nothing_with(tern, marker)


# -- SMTP smuggling ---------------------------------------------------------------------

SMUGGLE_VARIANTS = {"lf-dot-lf": b"\n.\n", "crlf-dot-lf": b"\r\n.\n", "lf-dot-crlf": b"\n.\r\n",
                    "cr-dot-crlf": b"\r.\r\n", "cr-dot-cr": b"\r.\r", "crlf-dot-cr": b"\r\n.\r"}


@pytest.mark.parametrize("variant", list(SMUGGLE_VARIANTS))
@pytest.mark.parametrize("role", ["smtp", "submission"])
def test_no_smuggling(tern, variant, role):
    outer, inner = uniq("outer"), uniq("smuggled")
    seq = SMUGGLE_VARIANTS[variant]
    payload = (b"From: <x@y.test>\r\nTo: <demo@example.test>\r\nSubject: " + outer.encode() +
               b"\r\n\r\nfirst body line" + seq +
               b"MAIL FROM:<evil@y.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
               b"From: <evil@y.test>\r\nSubject: " + inner.encode() +
               b"\r\n\r\nsmuggled body\r\n.\r\n")
    if role == "smtp":
        c = tern.raw("smtp")
        c.ehlo()
        sender = "x@y.test"
    else:
        c = tern.raw("submission")
        c.ehlo()
        c.starttls()
        c.ehlo()
        tok = base64.b64encode(b"\0%s\0%s" % (DEMO.encode(), tern.passwords[DEMO].encode()))
        assert c.cmd("AUTH PLAIN " + tok.decode()).code == 235
        sender = DEMO
    with c:
        assert c.cmd("MAIL FROM:<%s>" % sender).code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        assert c.cmd("DATA").code == 354
        c.send(payload)
        r = c.reply()
        assert 500 <= r.code < 600, "end of data with bare CR/LF inside got %r" % r
        # In sync: exactly one reply for the data, then RSET's.
        assert c.cmd("RSET").code == 250
        assert c.pending(0.3) == b"", "extra replies: the smuggled commands ran"
        assert c.cmd("NOOP").code == 250
    assert_nothing_with(tern, inner)
    assert_nothing_with(tern, outer, settle=0)


@pytest.mark.parametrize("body", [b"bare\nLF in the middle\r\n", b"bare\rCR in the middle\r\n",
                                  b"ends with bare LF\n"])
def test_bare_cr_or_lf_in_data_refused(tern, body):
    marker = uniq("bare")
    with tern.raw("smtp") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        c.cmd("RCPT TO:<%s>" % DEMO)
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: " + marker.encode() + b"\r\n\r\n" + body + b"\r\n.\r\n")
        r = c.reply()
        assert 500 <= r.code < 600, r
        assert c.cmd("RSET").code == 250
    assert_nothing_with(tern, marker)


# -- STARTTLS injection -----------------------------------------------------------------

@pytest.mark.parametrize("role", ["smtp", "submission"])
@pytest.mark.parametrize("injected", ["RSET", "NOOP", "MAIL FROM:<x@y.test>"])
def test_starttls_injection_discarded(tern, role, injected):
    with tern.raw(role) as c:
        c.ehlo()
        c.send("STARTTLS\r\n%s\r\n" % injected)
        r = c.reply()
        assert r.code == 220, r
        # Nothing may answer the injected command in clear text.
        assert c.buf == b"", "plaintext reply to the injected command: %r" % c.buf
        c.wrap_tls()
        # The first reply over TLS must be the one to HELP (214), not to the injection.
        r = c.cmd("HELP")
        assert r.code == 214, "first reply over TLS is %r: the injected %r ran" % (r, injected)
        c.ehlo()
        if role == "smtp":
            # No MAIL transaction leaked across the handshake.
            assert c.cmd("RCPT TO:<%s>" % DEMO).code == 503


def test_starttls_twice_and_with_argument(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        r = c.cmd("STARTTLS now")
        assert r.code == 501, r
        c.starttls()
        c.ehlo()
        r = c.cmd("STARTTLS")
        assert 500 <= r.code < 600, r
        assert c.cmd("NOOP").code == 250


def test_starttls_then_garbage_handshake(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("STARTTLS").code == 220
        c.send(b"this is not a TLS client hello\r\n" * 10)
        assert c.is_closed(T(10))
    still_answers(tern)


# -- long lines -------------------------------------------------------------------------

def test_command_line_limit(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        ok = "NOOP " + "a" * (512 - 2 - 5)
        assert len(ok) + 2 == 512
        assert c.cmd(ok).code == 250, "a 512-octet command line is legal"
        r = c.cmd("NOOP " + "a" * 600)
        assert r.code == 500, r
        assert r.enhanced in (None, "5.5.2", "5.5.0", "5.5.1", "5.5.6"), r
        assert c.cmd("NOOP").code == 250
        r = c.cmd("MAIL FROM:<%s@y.test>" % ("a" * 700))
        assert r.code in (500, 501, 553), r
        assert c.cmd("RSET").code == 250
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250


def test_text_line_over_1000_octets(tern):
    marker = uniq("longline")
    msg = make_message(subject=marker, body="k" * 5000 + "\r\nshort\r\n")
    with tern.raw("smtp") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        c.cmd("RCPT TO:<%s>" % DEMO)
        r = c.send_data(msg)
        assert r.code == 250 or 500 <= r.code < 600, r
        assert c.cmd("RSET").code == 250
    if r.code == 250:
        data = tern.wait_message(DEMO, marker)
        assert data.endswith(msg)
    else:
        assert_nothing_with(tern, marker)


def blast(c, payload_len, tail=b"", piece=65536):
    """Sends payload_len bytes of 'A' (no CRLF) then tail while another thread collects
    whatever the server says; returns (received bytes, whether the send was cut)."""
    received = bytearray()
    stop = threading.Event()
    c.sock.settimeout(0.5)

    def reader():
        while not stop.is_set():
            try:
                chunk = c.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            received.extend(chunk)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    cut = False
    data = b"A" * piece
    sent = 0
    deadline = time.monotonic() + T(60)
    try:
        while sent < payload_len and time.monotonic() < deadline:
            if error_lines(bytes(received)):
                break  # answered already; no need to push the rest
            try:
                c.sock.sendall(data)
                sent += len(data)
            except socket.timeout:
                if th.is_alive():
                    continue  # the server is not reading: is it still alive?
                raise
        if tail:
            c.sock.sendall(tail)
    except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
        cut = True
    # Wait for an error reply (or the end of the connection), then a little more to
    # catch anything the server says after it.
    end = time.monotonic() + T(10)
    while time.monotonic() < end and th.is_alive() and not error_lines(bytes(received)):
        th.join(0.1)
    time.sleep(0.3)
    stop.set()
    th.join(T(2))
    return bytes(received), cut


def error_lines(received):
    return [l for l in received.split(b"\r\n") if l[:1] in (b"4", b"5")]


def test_10mb_command_line_without_crlf(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        received, cut = blast(c, 10 * 1024 * 1024)
        assert error_lines(received), "no error reply to a 10 MB line (got %r)" % received[:200]
    still_answers(tern)


def test_10mb_data_line_without_crlf(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        c.cmd("RCPT TO:<%s>" % DEMO)
        assert c.cmd("DATA").code == 354
        received, cut = blast(c, 10 * 1024 * 1024, tail=b"\r\n.\r\n")
        errs = error_lines(received)
        assert errs, "no error reply to 10 MB of data without CRLF (got %r)" % received[:200]
        assert all(not l.startswith(b"250") for l in received.split(b"\r\n")), received[:300]
    still_answers(tern)


def test_10mb_line_on_submission_before_tls(tern):
    with tern.raw("submission") as c:
        received, cut = blast(c, 10 * 1024 * 1024)
        assert error_lines(received), received[:200]
    still_answers(tern, "submission")


# -- connections ------------------------------------------------------------------------

def test_200_parallel_connections(tern):
    n = 200
    barrier = threading.Barrier(n, timeout=T(30))

    def one(i):
        src = "127.0.%d.%d" % (1 + i // 250, 1 + i % 250)
        with RawSMTP(tern.smtp_port, source=src, timeout=T(30)) as c:
            g = c.greeting.code
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            e = c.cmd("EHLO c%d.test" % i).code
            q = c.cmd("QUIT").code
            return (g, e, q)

    results = run_threads(one, [(i,) for i in range(n)], timeout=T(90))
    errors = [(i, e) for i, (_, e) in enumerate(results) if e is not None]
    assert not errors, errors[:5]
    bad = [(i, r) for i, (r, _) in enumerate(results) if r != (220, 250, 221)]
    assert not bad, bad[:5]
    msg = make_message()
    tern.send(msg)
    tern.wait_message(DEMO, message_id_of(msg))


def test_connections_per_ip_limit(make_tern):
    t = make_tern(workers=1, smtp={"max_connections_per_ip": "3"})
    held = [t.raw("smtp", source="127.0.0.20") for _ in range(3)]
    try:
        assert all(c.greeting.code == 220 for c in held)
        with RawSMTP(t.smtp_port, source="127.0.0.20", greeting=False) as extra:
            try:
                r = extra.reply()
                assert r.code == 421 and r.enhanced == "4.7.0", r
            except EOFError:
                pytest.fail("4th connection closed without a 421")
            assert extra.is_closed()
        # Another address is not affected.
        with RawSMTP(t.smtp_port, source="127.0.0.21") as other:
            assert other.greeting.code == 220
        held.pop().close()

        def fresh():
            with RawSMTP(t.smtp_port, source="127.0.0.20") as c:
                return c.greeting.code == 220
        wait_for(fresh, T(5), interval=0.2, what="a slot after closing one connection")
    finally:
        for c in held:
            c.close()


def test_max_connections_per_worker(make_tern):
    t = make_tern(workers=1, smtp={"max_connections": "3"})
    held = [RawSMTP(t.smtp_port, source="127.0.0.%d" % (30 + i)) for i in range(3)]
    try:
        assert all(c.greeting.code == 220 for c in held)
        with RawSMTP(t.smtp_port, source="127.0.0.40", greeting=False) as extra:
            try:
                r = extra.reply()
                assert r.code == 421, r
            except EOFError:
                pytest.fail("connection over max_connections closed without a 421")
    finally:
        for c in held:
            c.close()
    def answers():
        try:
            still_answers(t)
            return True
        except (AssertionError, OSError, EOFError):
            return False
    wait_for(answers, T(5), interval=0.2, what="a slot again")


def test_queue_unwritable_answers_4xx(make_tern):
    """An I/O error while queueing answers 451/452, leaves nothing half-written, and the
    server recovers once the queue is writable again."""
    t = make_tern()  # (as root, the workers run as user tern: mode bits stop them)
    qdir = os.path.join(t.data_dir, "queue")
    dirs = [qdir] + [os.path.join(qdir, d) for d in os.listdir(qdir)
                     if os.path.isdir(os.path.join(qdir, d))]
    modes = {d: os.stat(d).st_mode & 0o7777 for d in dirs}
    marker = uniq("ioerr")
    try:
        for d in dirs:
            os.chmod(d, 0o500)
        with t.raw("smtp") as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<x@y.test>").code == 250
            assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
            r = c.cmd("DATA")
            if r.code == 354:
                c.send(make_message(subject=marker) + b".\r\n")
                r = c.reply()
            assert r.code in (451, 452), "queue not writable, got %r" % r
            assert c.cmd("RSET").code == 250
    finally:
        for d, m in modes.items():
            os.chmod(d, m)
    assert_nothing_with(t, marker)
    msg = make_message()
    t.send(msg)
    t.wait_message(DEMO, message_id_of(msg))


def test_command_timeout(make_tern):
    t = make_tern(smtp={"command_timeout": "2s"})
    with t.raw("smtp") as c:
        c.ehlo()
        start = time.monotonic()
        assert c.is_closed(T(15)), "idle session not closed after command_timeout"
        assert time.monotonic() - start >= 1.0
        assert c.buf == b"" or c.buf.startswith(b"421"), c.buf


def test_data_timeout(make_tern):
    t = make_tern(smtp={"data_timeout": "2s"})
    marker = uniq("stalled")
    with t.raw("smtp") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        c.cmd("RCPT TO:<%s>" % DEMO)
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: " + marker.encode() + b"\r\n\r\nhalf a message")
        assert c.is_closed(T(15)), "stalled DATA not closed after data_timeout"
    time.sleep(0.5)
    assert not t.find_messages(DEMO, marker)
    still_answers(t)
