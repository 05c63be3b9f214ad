"""AUTH on submission (587, STARTTLS) and submissions (465): TLS first, AUTH before MAIL,
535 without hints, sender ownership, relaying when authenticated, throttling."""

import base64
import os
import re
import smtplib
import time

import pytest

from conftest import (started, BOB, DEMO, T, Tern, _finish, make_message, message_id_of, uniq,
                      wait_for)

EXTERNAL = "someone@other.test"


@pytest.fixture(scope="module")
def tern(tern_bin):
    # Many deliberate failures below: keep the throttle out of the way here (it has its
    # own tests with their own servers).
    t = Tern(smtp={"auth_max_failures": "1000"})
    t.setup_accounts()
    t.add_alias("sales@example.test", DEMO)
    started(t)
    yield t
    _finish(t)


def b64(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return base64.b64encode(s).decode()


def plain(user, pw, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, pw))


def submission_tls(t):
    c = t.raw("submission")
    c.ehlo()
    c.starttls()
    c.ehlo()
    return c


def test_submission_requires_tls_before_auth_and_mail(tern):
    with tern.raw("submission") as c:
        c.ehlo()
        r = c.cmd("AUTH PLAIN " + plain(DEMO, tern.passwords[DEMO]))
        assert r.code in (530, 538), r
        assert r.enhanced in ("5.7.0", "5.7.11"), r
        r = c.cmd("MAIL FROM:<%s>" % DEMO)
        assert r.code == 530 and r.enhanced == "5.7.0", r
        r = c.cmd("AUTH LOGIN")
        assert r.code in (530, 538), r
        assert c.cmd("NOOP").code == 250


def test_submission_requires_auth_before_mail(tern):
    with submission_tls(tern) as c:
        r = c.cmd("MAIL FROM:<%s>" % DEMO)
        assert r.code == 530 and r.enhanced == "5.7.0", r
        r = c.cmd("RCPT TO:<%s>" % BOB)
        assert r.code in (503, 530), r


def test_submissions_requires_auth_before_mail(tern):
    with tern.raw("submissions") as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>" % DEMO)
        assert r.code == 530 and r.enhanced == "5.7.0", r


@pytest.mark.parametrize("tls", [False, True])
def test_no_auth_on_smtp_role(tern, tls):
    with tern.raw("smtp") as c:
        c.ehlo()
        if tls:
            c.starttls()
            c.ehlo()
        r = c.cmd("AUTH PLAIN " + plain(DEMO, tern.passwords[DEMO]))
        assert 500 <= r.code < 600, r
        # Not authenticated: still no relaying.
        assert c.cmd("MAIL FROM:<%s>" % DEMO).code == 250
        r = c.cmd("RCPT TO:<%s>" % EXTERNAL)
        assert r.code == 550 and r.enhanced == "5.7.1", r


def test_auth_plain_and_login_succeed(tern):
    with submission_tls(tern) as c:
        r = c.cmd("AUTH PLAIN " + plain(DEMO, tern.passwords[DEMO]))
        assert r.code == 235 and r.enhanced == "2.7.0", r
        r = c.cmd("AUTH PLAIN " + plain(DEMO, tern.passwords[DEMO]))
        assert r.code == 503, "second AUTH: %r" % r
    with submission_tls(tern) as c:
        assert c.cmd("AUTH LOGIN").code == 334
        assert c.cmd(b64(BOB)).code == 334
        r = c.cmd(b64(tern.passwords[BOB]))
        assert r.code == 235, r
    with submission_tls(tern) as c:  # PLAIN without an initial response
        r = c.cmd("AUTH PLAIN")
        assert r.code == 334, r
        r = c.cmd(plain(DEMO, tern.passwords[DEMO]))
        assert r.code == 235, r
    with submission_tls(tern) as c:  # AUTH LOGIN with the user name as initial response
        assert c.cmd("AUTH LOGIN " + b64(DEMO)).code == 334
        assert c.cmd(b64(tern.passwords[DEMO])).code == 235


def test_smtplib_login_on_both_roles(tern):
    for role in ("submission", "submissions"):
        with tern.smtp(role) as c:
            code, _ = c.login(DEMO, tern.passwords[DEMO])
            assert code == 235


def test_wrong_password_and_unknown_user_look_the_same(tern):
    replies = []
    with submission_tls(tern) as c:
        replies.append(c.cmd("AUTH PLAIN " + plain(DEMO, "wrong-password")))
        replies.append(c.cmd("AUTH PLAIN " + plain("nobody@example.test", "wrong-password")))
        replies.append(c.cmd("AUTH PLAIN " + plain("nobody@nowhere.test", "wrong-password")))
        assert c.cmd("AUTH LOGIN").code == 334
        assert c.cmd(b64(DEMO)).code == 334
        replies.append(c.cmd(b64("wrong-password")))
        # Still not authenticated.
        assert c.cmd("MAIL FROM:<%s>" % DEMO).code == 530
    for r in replies:
        assert r.code == 535 and r.enhanced == "5.7.8", r
    assert len({r.text for r in replies}) == 1, "replies differ: %r" % replies
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        with tern.smtp("submissions") as c:
            c.login(BOB, "not-bobs-password")
    assert e.value.smtp_code == 535


def test_auth_protocol_errors(tern):
    with submission_tls(tern) as c:
        r = c.cmd("AUTH CRAM-SHA1")
        assert r.code == 504, r
        r = c.cmd("AUTH PLAIN !!!notbase64!!!")
        assert r.code == 501, r
        assert c.cmd("AUTH LOGIN").code == 334
        r = c.cmd("*")
        assert r.code == 501, "cancelled AUTH: %r" % r
        r = c.cmd("AUTH PLAIN " + b64("no-nul-separators"))
        assert r.code in (501, 535), r
        r = c.cmd("AUTH")
        assert r.code == 501, r
        # The session is still usable and unauthenticated.
        assert c.cmd("NOOP").code == 250
        assert c.cmd("MAIL FROM:<%s>" % DEMO).code == 530
        assert c.cmd("AUTH PLAIN " + plain(DEMO, tern.passwords[DEMO])).code == 235


def test_authzid_cannot_impersonate(tern):
    with submission_tls(tern) as c:
        r = c.cmd("AUTH PLAIN " + plain(DEMO, tern.passwords[DEMO], authzid=BOB))
        if r.code == 235:
            r = c.cmd("MAIL FROM:<%s>" % BOB)
            assert r.code == 553, "demo's credentials with authzid bob may send as bob"
        else:
            assert 500 <= r.code < 600, r


def test_mail_from_must_belong_to_the_account(tern):
    with tern.smtp("submission", login=DEMO) as c:
        for sender in (BOB, "x@y.test", "demo@other.test"):
            code, msg = c.mail(sender)
            assert code == 553, (sender, code, msg)
            assert msg.decode().startswith("5.7.1"), msg
            c.rset()
        # Its own address, in any case, and its alias.
        for sender in (DEMO, "demo@Example.TEST", "sales@example.test"):
            code, msg = c.mail(sender)
            assert code == 250, (sender, code, msg)
            c.rset()


def test_message_from_alias_is_delivered(tern):
    msg = make_message(sender="sales@example.test", to=BOB)
    with tern.smtp("submission", login=DEMO) as c:
        c.sendmail("sales@example.test", [BOB], msg)
    data = tern.wait_message(BOB, message_id_of(msg))
    assert data.startswith(b"Return-Path: <sales@example.test>\r\n")


def test_authenticated_relay_is_queued(tern):
    subject = uniq("outbound")
    msg = make_message(sender=DEMO, to=EXTERNAL, subject=subject)
    with tern.smtp("submission", login=DEMO) as c:
        c.mail(DEMO)
        code, _ = c.rcpt(EXTERNAL)
        assert code == 250
        code, resp = c.data(msg)
        assert code == 250, resp
    qid = re.search(r"queued as (\S+)", resp.decode()).group(1)

    def listed():
        p = tern.cli("queue", "list")
        return p.stdout if EXTERNAL in p.stdout else None
    out = wait_for(listed, T(10), what="%s in `tern queue list`" % EXTERNAL)
    assert qid in out, out
    # It stays queued (outbound delivery comes later) and lands in no local mailbox.
    time.sleep(0.5 * T(1))
    assert any(qid in os.path.basename(p) for p in tern.queue_files()), tern.queue_files()
    assert EXTERNAL in tern.cli("queue", "list").stdout
    for user in (DEMO, BOB):
        assert not tern.find_messages(user, subject)


def test_dsn_parameters_stored_with_the_envelope(tern):
    envid = uniq("envid")
    orcpt = uniq("orig") + "@other.test"
    msg = make_message(sender=DEMO, to="dsn@other.test")
    with submission_tls(tern) as c:
        assert c.cmd("AUTH PLAIN " + plain(DEMO, tern.passwords[DEMO])).code == 235
        r = c.cmd("MAIL FROM:<%s> RET=HDRS ENVID=%s" % (DEMO, envid))
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<dsn@other.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;%s" % orcpt)
        assert r.code == 250, r
        r = c.send_data(msg)
        assert r.code == 250, r
    qid = re.search(r"queued as (\S+)", r.text).group(1)

    def queued():
        return [d for p, d in tern.queue_contents() if qid in os.path.basename(p)]
    data = wait_for(queued, T(10), what="queue file %s" % qid)[0]
    assert envid.encode() in data, "ENVID not stored with the envelope"
    assert orcpt.encode() in data, "ORCPT not stored with the envelope"


def test_queue_files_private(tern):
    files = wait_for(tern.queue_files, T(10), what="a queued message (earlier tests)")
    for path in files + [os.path.join(tern.data_dir, "tern.db")]:
        st = os.stat(path)
        assert st.st_mode & 0o077 == 0, "%s mode %o" % (path, st.st_mode & 0o777)
        if os.geteuid() == 0:
            import pwd
            assert st.st_uid == pwd.getpwnam("tern").pw_uid, "%s not owned by tern" % path
    for d in (tern.data_dir, os.path.join(tern.data_dir, "queue")):
        assert os.stat(d).st_mode & 0o077 == 0, d


def test_submissions_relay_external(tern):
    msg = make_message(sender=BOB, to="friend@far.test")
    with tern.smtp("submissions", login=BOB) as c:
        assert c.sendmail(BOB, ["friend@far.test", DEMO], msg) == {}
    tern.wait_message(DEMO, message_id_of(msg))
    assert wait_for(lambda: "friend@far.test" in tern.cli("queue", "list").stdout, T(10),
                    what="friend@far.test queued")


def test_password_change_takes_effect_while_running(tern):
    user = "carol@example.test"
    old = tern.add_user(user)
    with submission_tls(tern) as c:
        assert c.cmd("AUTH PLAIN " + plain(user, old)).code == 235
    new = "new-" + uniq("pw")
    tern.cli("user", "passwd", user, input=new + "\n")
    tern.passwords[user] = new
    with submission_tls(tern) as c:
        assert c.cmd("AUTH PLAIN " + plain(user, old)).code == 535
    with submission_tls(tern) as c:
        assert c.cmd("AUTH PLAIN " + plain(user, new)).code == 235
    tern.cli("user", "del", user)
    with submission_tls(tern) as c:
        assert c.cmd("AUTH PLAIN " + plain(user, new)).code == 535


def test_auth_is_logged_without_secrets(tern):
    with submission_tls(tern) as c:
        assert c.cmd("AUTH PLAIN " + plain(DEMO, tern.passwords[DEMO])).code == 235
    with submission_tls(tern) as c:
        assert c.cmd("AUTH PLAIN " + plain(BOB, "Secret-Wrong-Pw-123")).code == 535

    def both():
        text = tern.log_text()
        ok = re.search(r"(?im)^.*auth.*\b(ok|succe\w*)\b", text)
        fail = re.search(r"(?im)^.*auth.*fail", text)
        return text if ok and fail else None
    text = wait_for(both, T(5), what="auth ok and auth failed log lines")
    secrets = list(tern.passwords.values()) + ["Secret-Wrong-Pw-123", "wrong-password"]
    for s in secrets:
        assert s not in text, "a password reached the log"
    for user in (DEMO, BOB):
        assert plain(user, tern.passwords[user]) not in text, "an AUTH payload reached the log"
        assert b64(tern.passwords[user]) not in text


# -- servers with their own settings ----------------------------------------------------

def test_failed_logins_throttled_per_ip_and_per_account(make_tern):
    t = make_tern(smtp={"auth_max_failures": "3", "auth_failure_window": "10m"})

    def attempt(source, user, pw):
        with t.raw("submissions", source=source) as c:
            c.ehlo()
            return c.cmd("AUTH PLAIN " + plain(user, pw))

    # Per IP: three failures for three unknown users from 127.0.0.2...
    for i in range(3):
        assert attempt("127.0.0.2", "ghost%d@example.test" % i, "x").code == 535
    # ...then even the right password from that address is refused for now,
    r = attempt("127.0.0.2", DEMO, t.passwords[DEMO])
    assert r.code == 454 and r.enhanced == "4.7.0", r
    # while another address is unaffected.
    assert attempt("127.0.0.3", DEMO, t.passwords[DEMO]).code == 235

    # Per account: three failures for bob from three addresses...
    for src in ("127.0.0.4", "127.0.0.5", "127.0.0.6"):
        assert attempt(src, BOB, "wrong").code == 535
    # ...then bob is refused from a fresh address, demo is not.
    r = attempt("127.0.0.7", BOB, t.passwords[BOB])
    assert r.code == 454 and r.enhanced == "4.7.0", r
    assert attempt("127.0.0.8", DEMO, t.passwords[DEMO]).code == 235


def test_throttle_within_one_session(make_tern):
    t = make_tern(smtp={"auth_max_failures": "2"})
    with t.raw("submissions", source="127.0.0.9") as c:
        c.ehlo()
        codes = [c.cmd("AUTH PLAIN " + plain(DEMO, "bad%d" % i)).code for i in range(2)]
        assert codes == [535, 535], codes
        try:
            r = c.cmd("AUTH PLAIN " + plain(DEMO, t.passwords[DEMO]))
        except (EOFError, ConnectionResetError):
            return  # closing the connection is a fine way to throttle
        assert r.code == 454 and r.enhanced == "4.7.0", r


def test_auth_plaintext_loopback_option(make_tern):
    t = make_tern(smtp={"auth_plaintext_loopback": "yes"})
    with t.raw("submission") as c:
        c.ehlo()
        r = c.cmd("AUTH PLAIN " + plain(DEMO, t.passwords[DEMO]))
        assert r.code == 235, r
        assert c.cmd("MAIL FROM:<%s>" % DEMO).code == 250
