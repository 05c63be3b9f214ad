"""SMTP on the three roles: greetings, EHLO, delivery with smtplib and swaks, byte-exact
Maildir content, BDAT, 8BITMIME and SMTPUTF8, the small commands."""

import base64
import os
import re
import smtplib
import ssl
import subprocess

import pytest

from conftest import (started, BOB, DEMO, HOSTNAME, T, Tern, _finish, dot_stuff, ipv6_loopback_available, make_message,
                      message_id_of, parse_log_line, prefix_header_names, split_prefix,
                      uniq, unfolded_headers, wait_for)

UTF8_ALIAS = "jörg@example.test"


@pytest.fixture(scope="module")
def tern(tern_bin):
    t = Tern(ipv6=ipv6_loopback_available())
    t.setup_accounts()
    t.add_alias("postmaster@example.test", DEMO)
    t.add_alias(UTF8_ALIAS, BOB)
    t.add_domain("catch.test")
    t.add_alias("@catch.test", BOB)
    started(t)
    yield t
    _finish(t)


def ehlo_keywords(reply):
    """{KEYWORD: params} from an EHLO reply (first line is the greeting)."""
    out = {}
    for line in reply.lines[1:]:
        parts = line.split()
        if parts:
            out[parts[0].upper()] = parts[1:]
    return out


def assert_delivered_exact(t, rcpt, sent, sender="x@y.test"):
    data = t.wait_message(rcpt, message_id_of(sent))
    prefix = split_prefix(data, sent)
    assert prefix.startswith(b"Return-Path: <%s>\r\n" % sender.encode()), prefix[:200]
    names = prefix_header_names(prefix)
    assert names == ["Return-Path", "Delivered-To", "Received"], names
    hdrs = dict(unfolded_headers(prefix + b"\r\n"))
    assert rcpt in hdrs["Delivered-To"], hdrs
    assert hdrs["Received"].lower().startswith("from"), hdrs["Received"]
    assert prefix.endswith(b"\r\n")
    return data, hdrs


# -- greetings and EHLO -----------------------------------------------------------------

@pytest.mark.parametrize("role", ["smtp", "submission", "submissions"])
def test_greeting(tern, role):
    with tern.raw(role) as c:
        assert c.greeting.code == 220
        assert c.greeting.lines[0].startswith("%s ESMTP tern" % HOSTNAME), c.greeting
        assert c.cmd("QUIT").code == 221
        assert c.is_closed()


def test_ehlo_smtp_role(tern):
    with tern.raw("smtp") as c:
        r = c.ehlo()
        assert r.lines[0].startswith(HOSTNAME), r
        kw = ehlo_keywords(r)
        for k in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
                  "DSN", "STARTTLS", "SIZE"):
            assert k in kw, (k, r)
        assert int(kw["SIZE"][0]) in (1000000, 1048576), kw["SIZE"]
        assert "AUTH" not in kw, "AUTH offered on the smtp role"
        c.starttls()
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw
        assert "AUTH" not in kw, "AUTH offered on the smtp role after TLS"
        assert "PIPELINING" in kw and "SIZE" in kw


def test_ehlo_submission_offers_auth_only_after_tls(tern):
    with tern.raw("submission") as c:
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" in kw
        assert "AUTH" not in kw, "AUTH offered before TLS"
        c.starttls()
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw
        assert {"PLAIN", "LOGIN"} <= {m.upper() for m in kw.get("AUTH", [])}, kw


def test_ehlo_submissions(tern):
    with tern.raw("submissions") as c:
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw
        assert {"PLAIN", "LOGIN"} <= {m.upper() for m in kw.get("AUTH", [])}, kw


def test_helo_and_session_reset(tern):
    with tern.raw("smtp") as c:
        r = c.cmd("HELO client.test")
        assert r.code == 250, r
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 503


def test_served_certificate_is_the_generated_one(tern):
    pem_path = os.path.join(tern.data_dir, "tls", "cert.pem")
    key_path = os.path.join(tern.data_dir, "tls", "key.pem")
    assert os.path.exists(pem_path) and os.path.exists(key_path)
    assert os.stat(key_path).st_mode & 0o077 == 0, "private key readable by group/others"
    with open(pem_path) as f:
        pem = f.read()
    first = pem[:pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    der = ssl.PEM_cert_to_DER_cert(first + "\n")
    with tern.raw("submissions") as c:
        assert c.sock.getpeercert(binary_form=True) == der


# -- delivery with smtplib --------------------------------------------------------------

def test_smtp_role_delivers_byte_exact(tern):
    body = ("Plain line\r\n"
            ".starts with a dot\r\n"
            "..two dots\r\n"
            ".\r\n"
            " . space dot\r\n"
            "trailing spaces   \r\n"
            "\ttab\r\n"
            "\r\n"
            "\r\n"
            "last line\r\n")
    msg = make_message(body=body, extra_headers=["X-Folded: first", "\tsecond part"])
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        r = c.send_data(msg)
        assert r.code == 250 and r.enhanced == "2.0.0", r
        assert re.search(r"queued as \S+", r.text), r
        c.cmd("QUIT")
    assert_delivered_exact(tern, DEMO, msg)


def test_smtp_role_smtplib_multiple_recipients(tern):
    msg = make_message(to=BOB)
    with tern.smtp("smtp") as c:
        refused = c.sendmail("x@y.test", [DEMO, BOB], msg)
        assert refused == {}
    for rcpt in (DEMO, BOB):
        assert_delivered_exact(tern, rcpt, msg)


def test_accepted_and_delivered_are_logged(tern):
    msg = make_message()
    with tern.raw("smtp") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        c.cmd("RCPT TO:<%s>" % DEMO)
        r = c.send_data(msg)
        assert r.code == 250, r
    qid = re.search(r"queued as (\S+)", r.text).group(1)
    tern.wait_message(DEMO, message_id_of(msg))
    acc = [e for e in tern.events("accepted") if qid in e["_raw"]]
    assert acc, "no event=accepted line with queue id %s" % qid
    wait_for(lambda: [e for e in tern.events("delivered")
                      if qid in e["_raw"] and DEMO in e["_raw"]], T(10),
             what="an event=delivered line with %s and %s" % (qid, DEMO))
    assert tern.events("connect"), "no event=connect lines"


def test_received_header_names_tls_on_smtp_role(tern):
    msg = make_message()
    with tern.smtp("smtp", starttls=True) as c:
        version = c.sock.version()
        cipher = c.sock.cipher()[0]
        c.sendmail("x@y.test", [DEMO], msg)
    data, hdrs = assert_delivered_exact(tern, DEMO, msg)
    assert version in hdrs["Received"], hdrs["Received"]
    assert cipher in hdrs["Received"], hdrs["Received"]
    assert [e for e in tern.events("tls") if version in e["_raw"]], "no event=tls log line"


def test_submission_starttls_auth_plain(tern):
    msg = make_message(sender=DEMO, to=BOB)
    with tern.smtp("submission", login=DEMO) as c:
        version = c.sock.version()
        c.sendmail(DEMO, [BOB], msg)
    data = tern.wait_message(BOB, message_id_of(msg))
    assert data.startswith(b"Return-Path: <%s>\r\n" % DEMO.encode())
    hdrs = dict(unfolded_headers(data))
    assert version in hdrs["Received"], hdrs["Received"]


def test_submission_auth_login_adds_date_and_message_id(tern):
    marker = uniq("nodate")
    msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nno date, no id\r\n"
           % (DEMO, BOB, marker)).encode()
    with tern.smtp("submission") as c:
        code, _ = c.docmd("AUTH", "LOGIN")
        assert code == 334
        code, _ = c.docmd(base64.b64encode(DEMO.encode()).decode())
        assert code == 334
        code, resp = c.docmd(base64.b64encode(tern.passwords[DEMO].encode()).decode())
        assert code == 235, resp
        c.sendmail(DEMO, [BOB], msg)
    data = tern.wait_message(BOB, marker)
    names = [n.lower() for n, _ in unfolded_headers(data)]
    assert "date" in names, names
    assert "message-id" in names, names
    assert names.count("date") == 1 and names.count("message-id") == 1
    assert data.endswith(b"\r\n\r\nno date, no id\r\n")


def test_submission_keeps_existing_date_and_message_id(tern):
    msg = make_message(sender=DEMO, to=BOB)
    with tern.smtp("submission", login=DEMO) as c:
        c.sendmail(DEMO, [BOB], msg)
    data = tern.wait_message(BOB, message_id_of(msg))
    names = [n.lower() for n, _ in unfolded_headers(data)]
    assert names.count("date") == 1 and names.count("message-id") == 1, names
    assert data.endswith(msg)


def test_submissions_implicit_tls(tern):
    msg = make_message(sender=DEMO, to=BOB)
    with tern.smtp("submissions", login=BOB) as c:
        version = c.sock.version()
        c.sendmail(BOB, [DEMO], msg)
    data = tern.wait_message(DEMO, message_id_of(msg))
    assert version in dict(unfolded_headers(data))["Received"]


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_listener(tern):
    port = int([a for n, p, a in tern.listeners if n == "mx6"][0].rsplit(":", 1)[1])
    msg = make_message()
    with smtplib.SMTP("::1", port, local_hostname="client.test", timeout=T(15)) as c:
        c.sendmail("x@y.test", [DEMO], msg)
    tern.wait_message(DEMO, message_id_of(msg))


def test_several_messages_in_one_session(tern):
    msgs = [make_message() for _ in range(5)]
    with tern.smtp("smtp") as c:
        for m in msgs:
            c.sendmail("x@y.test", [DEMO], m)
    for m in msgs:
        assert_delivered_exact(tern, DEMO, m)


def test_null_sender_accepted(tern):
    msg = make_message(sender="MAILER-DAEMON@y.test")
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<>").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        assert c.send_data(msg).code == 250
    assert_delivered_exact(tern, DEMO, msg, sender="")


def test_aliases_plus_and_catch_all(tern):
    cases = [("postmaster@example.test", DEMO), ("POSTMASTER@Example.Test", DEMO),
             ("demo+news@example.test", DEMO), ("anything@catch.test", BOB),
             ("Demo@EXAMPLE.test", DEMO)]
    sent = []
    with tern.smtp("smtp") as c:
        for rcpt, _ in cases:
            msg = make_message(to=rcpt)
            assert c.sendmail("x@y.test", [rcpt], msg) == {}
            sent.append(msg)
    for (rcpt, mailbox), msg in zip(cases, sent):
        data = tern.wait_message(mailbox, message_id_of(msg))
        assert data.endswith(msg), rcpt


def test_unknown_user_550_511(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        r = c.cmd("RCPT TO:<nobody@example.test>")
        assert r.code == 550 and r.enhanced == "5.1.1", r
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        assert c.cmd("NOOP").code == 250


def test_dsn_parameters_accepted(tern):
    msg = make_message()
    with tern.raw("smtp") as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<x@y.test> RET=HDRS ENVID=abc+2Bdef SIZE=%d" % len(msg))
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<%s> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;%s" % (DEMO, DEMO))
        assert r.code == 250, r
        assert c.send_data(msg).code == 250
        r = c.cmd("MAIL FROM:<x@y.test> RET=BOGUS")
        assert 500 <= r.code < 600, r
    assert_delivered_exact(tern, DEMO, msg)


def test_pipelined_transaction_replies_in_order(tern):
    msg = make_message()
    with tern.raw("smtp") as c:
        c.ehlo()
        c.send("MAIL FROM:<x@y.test>\r\nRCPT TO:<%s>\r\nRCPT TO:<nobody@example.test>\r\n"
               "RCPT TO:<%s>\r\nDATA\r\n" % (DEMO, BOB))
        codes = [c.reply().code for _ in range(5)]
        assert codes == [250, 250, 550, 250, 354], codes
        c.send(dot_stuff(msg) + b".\r\nNOOP\r\nQUIT\r\n")
        assert c.reply().code == 250
        assert c.reply().code == 250
        assert c.reply().code == 221
    assert_delivered_exact(tern, DEMO, msg)
    assert_delivered_exact(tern, BOB, msg)


# -- small commands ---------------------------------------------------------------------

def test_small_commands(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("VRFY demo@example.test").code == 252
        assert c.cmd("EXPN staff@example.test").code == 502
        assert c.cmd("HELP").code == 214
        assert c.cmd("NOOP").code == 250
        r = c.cmd("FROBNICATE now")
        assert r.code == 500 and r.enhanced == "5.5.1", r
        r = c.cmd("RCPT TO:<%s>" % DEMO)
        assert r.code == 503 and r.enhanced == "5.5.1", r
        r = c.cmd("DATA")
        assert r.code == 503, r
        r = c.cmd("MAIL FROM:<x@y.test>")
        assert r.code == 250
        r = c.cmd("MAIL FROM:<x@y.test>")
        assert r.code == 503, "nested MAIL: %r" % r
        r = c.cmd("DATA")
        assert r.code in (503, 554), "DATA without RCPT: %r" % r
        assert c.cmd("RSET").code == 250
        assert c.cmd("quit").code == 221


def test_commands_are_case_insensitive(tern):
    msg = make_message()
    with tern.raw("smtp") as c:
        assert c.cmd("ehlo client.test").code == 250
        assert c.cmd("mail from:<x@y.test>").code == 250
        assert c.cmd("rcpt to:<%s>" % DEMO).code == 250
        assert c.send_data(msg).code == 250
    assert_delivered_exact(tern, DEMO, msg)


# -- BDAT -------------------------------------------------------------------------------

def test_bdat_byte_exact(tern):
    # In BDAT nothing is dot-stuffed: a lone "." line is content.
    msg = make_message(body="first\r\n.\r\n..\r\nsecond\r\n" + ("x" * 900 + "\r\n") * 4 +
                       "end\r\n")
    cut1 = 100                               # inside a header line
    cut2 = msg.index(b"\r\nsecond") + 1      # between CR and LF
    chunks = [msg[:cut1], msg[cut1:cut2], msg[cut2:]]
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        c.send(b"BDAT %d\r\n" % len(chunks[0]) + chunks[0])
        assert c.reply().code == 250
        c.send(b"BDAT %d\r\n" % len(chunks[1]) + chunks[1])
        assert c.reply().code == 250
        c.send(b"BDAT %d LAST\r\n" % len(chunks[2]) + chunks[2])
        r = c.reply()
        assert r.code == 250 and "queued as" in r.text, r
        assert c.cmd("NOOP").code == 250
    assert_delivered_exact(tern, DEMO, msg)


def test_bdat_pipelined_with_empty_last(tern):
    msg = make_message(body="pipelined bdat\r\n")
    with tern.raw("smtp") as c:
        c.ehlo()
        c.send(b"MAIL FROM:<x@y.test>\r\nRCPT TO:<%s>\r\nBDAT %d\r\n%sBDAT 0 LAST\r\n"
               % (DEMO.encode(), len(msg), msg))
        codes = [c.reply().code for _ in range(4)]
        assert codes == [250, 250, 250, 250], codes
    assert_delivered_exact(tern, DEMO, msg)


def test_data_after_bdat_is_refused(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        c.cmd("RCPT TO:<%s>" % DEMO)
        c.send(b"BDAT 5\r\nabcde")
        assert c.reply().code == 250
        assert c.cmd("DATA").code == 503
        assert c.cmd("RSET").code == 250
        assert c.cmd("NOOP").code == 250


# -- 8BITMIME and SMTPUTF8 --------------------------------------------------------------

def test_8bitmime_body_byte_exact(tern):
    body = "Grüße aus Köln — ½ € ✓\r\n".encode("utf-8") + bytes(range(0x80, 0x100)) + b"\r\n"
    msg = make_message(body=body, extra_headers=["MIME-Version: 1.0",
                                                 "Content-Type: text/plain; charset=utf-8",
                                                 "Content-Transfer-Encoding: 8bit"])
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test> BODY=8BITMIME").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        assert c.send_data(msg).code == 250
    assert_delivered_exact(tern, DEMO, msg)


def test_smtputf8_address_accepted_with_smtputf8(tern):
    msg = make_message(sender=UTF8_ALIAS, to=UTF8_ALIAS, subject="Grüße",
                       body="für dich\r\n")
    with tern.raw("smtp") as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s> SMTPUTF8 BODY=8BITMIME" % UTF8_ALIAS)
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<%s>" % UTF8_ALIAS)
        assert r.code == 250, r
        assert c.send_data(msg).code == 250
    data = tern.wait_message(BOB, message_id_of(msg))
    assert data.endswith(msg)
    assert data.startswith("Return-Path: <{}>\r\n".format(UTF8_ALIAS).encode("utf-8"))


def test_smtputf8_with_smtplib(tern):
    msg = make_message(to=UTF8_ALIAS, body="smtplib utf8\r\n")
    with tern.smtp("smtp") as c:
        c.sendmail("jörg@y.test", [UTF8_ALIAS], msg, mail_options=["SMTPUTF8"])
    data = tern.wait_message(BOB, message_id_of(msg))
    assert data.endswith(msg)


def test_utf8_address_refused_without_smtputf8(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>" % UTF8_ALIAS)
        assert 500 <= r.code < 600, r
        assert c.cmd("RSET").code == 250
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        r = c.cmd("RCPT TO:<%s>" % UTF8_ALIAS)
        assert 500 <= r.code < 600, r
        assert c.cmd("RSET").code == 250


# -- swaks ------------------------------------------------------------------------------

def swaks(*args):
    p = subprocess.run(["swaks", "--timeout", str(T(20)), "--helo", "client.test"] + list(args),
                       capture_output=True, text=True, timeout=T(60))
    return p


def test_swaks_pipelining_smtp_role(tern):
    marker = uniq("swaks-pipe")
    p = swaks("--server", "127.0.0.1:%d" % tern.smtp_port, "--to", DEMO, "--from", "x@y.test",
              "--pipeline", "--header", "Subject: " + marker)
    assert p.returncode == 0, p.stdout + p.stderr
    data = tern.wait_message(DEMO, marker)
    assert data.startswith(b"Return-Path: <x@y.test>\r\n")


def test_swaks_submission_starttls_auth_login(tern):
    marker = uniq("swaks-sub")
    p = swaks("--server", "127.0.0.1:%d" % tern.sub_port, "-tls", "--auth", "LOGIN",
              "--auth-user", DEMO, "--auth-password", tern.passwords[DEMO], "--to", BOB,
              "--from", DEMO, "--header", "Subject: " + marker)
    assert p.returncode == 0, p.stdout + p.stderr
    tern.wait_message(BOB, marker)


def test_swaks_submissions_tls_on_connect(tern):
    marker = uniq("swaks-subs")
    p = swaks("--server", "127.0.0.1:%d" % tern.subs_port, "--tls-on-connect", "--auth",
              "PLAIN", "--auth-user", BOB, "--auth-password", tern.passwords[BOB], "--to",
              DEMO, "--from", BOB, "--header", "Subject: " + marker)
    assert p.returncode == 0, p.stdout + p.stderr
    tern.wait_message(DEMO, marker)


# -- files ------------------------------------------------------------------------------

def test_maildir_files_private(tern):
    msg = make_message()
    tern.send(msg)
    tern.wait_message(DEMO, message_id_of(msg))
    for path in tern.message_files(DEMO):
        assert os.stat(path).st_mode & 0o077 == 0, "%s is readable by others" % path
    for sub in ("", "new", "cur", "tmp"):
        d = os.path.join(tern.maildir(DEMO), sub)
        assert os.path.isdir(d), d
        assert os.stat(d).st_mode & 0o077 == 0, "%s is open to others" % d
    if os.geteuid() == 0:
        import pwd
        uid = pwd.getpwnam("tern").pw_uid
        for path in tern.message_files(DEMO):
            assert os.stat(path).st_uid == uid, "%s not owned by user tern" % path


def test_log_lines_are_parseable_and_free_of_passwords(tern):
    text = tern.log_text()
    assert text
    bad = [l for l in text.splitlines() if l and parse_log_line(l) is None]
    assert not bad, bad[:5]
    for pw in tern.passwords.values():
        assert pw not in text
