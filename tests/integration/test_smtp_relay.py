"""No open relay: an unauthenticated client on the smtp role reaches local mailboxes only,
whatever address form it tries; trusted_networks is the one exception."""

import time

import pytest

from conftest import (started, BOB, DEMO, T, Tern, _finish, make_message, message_id_of, uniq,
                      wait_for)

RELAY_FORMS = [
    "demo@other.test",
    "DEMO@OTHER.TEST",
    "demo@other.test.",
    "demo%other.test@example.test",
    "\"demo@other.test\"@example.test",
    "@example.test:demo@other.test",
    "@example.test,@mx.test.local:demo@other.test",
    "other.test!demo@example.test",
    "demo@other.test@example.test",
    "demo@[192.0.2.1]",
    "demo@[IPv6:2001:db8::1]",
    "demo@example.test.other.test",
    "demo@other.test%example.test",
]


@pytest.fixture(scope="module")
def tern(tern_bin):
    t = Tern()
    t.setup_accounts()
    started(t)
    yield t
    _finish(t)


def no_trace_of(t, needle):
    """Neither queued nor delivered anywhere."""
    needle = needle.encode() if isinstance(needle, str) else needle
    for path, data in t.queue_contents():
        assert needle not in data, "%r queued in %s" % (needle, path)
    for user in (DEMO, BOB):
        assert not t.find_messages(user, needle), "%r delivered to %s" % (needle, user)
    assert needle.decode() not in t.cli("queue", "list").stdout


@pytest.mark.parametrize("rcpt", RELAY_FORMS)
def test_relay_denied_in_every_address_form(tern, rcpt):
    marker = uniq("relay")
    with tern.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert 500 <= r.code < 600, "RCPT TO:<%s> got %r" % (rcpt, r)
        if r.code == 550:
            assert r.enhanced in ("5.7.1", "5.1.1", "5.1.2"), r
        # Whatever it thought, DATA must not go through with only that recipient.
        r = c.cmd("DATA")
        if r.code == 354:
            c.send(make_message(subject=marker) + b".\r\n")
            r = c.reply()
            pytest.fail("DATA accepted after a refused relay recipient: %r" % r)
        assert r.code in (503, 554), r
        assert c.cmd("RSET").code == 250
    no_trace_of(tern, marker)


def test_forms_with_local_sender_and_pipelining(tern):
    """A forged local sender does not open the relay either, pipelined or not."""
    marker = uniq("forged")
    cmds = "".join("RCPT TO:<%s>\r\n" % r for r in RELAY_FORMS)
    with tern.raw("smtp") as c:
        c.ehlo()
        c.send("MAIL FROM:<%s>\r\n%sRCPT TO:<%s>\r\nDATA\r\n" % (DEMO, cmds, BOB))
        assert c.reply().code == 250
        codes = [c.reply().code for _ in RELAY_FORMS]
        assert all(500 <= code < 600 for code in codes), list(zip(RELAY_FORMS, codes))
        assert c.reply().code == 250
        assert c.reply().code == 354
        msg = make_message(subject=marker, sender=DEMO, to=BOB)
        c.send(msg + b".\r\n")
        assert c.reply().code == 250
    data = tern.wait_message(BOB, marker)
    assert data.endswith(msg)
    time.sleep(0.3 * T(1))
    for path, qdata in tern.queue_contents():
        assert marker.encode() not in qdata, "message still queued for a relay target"
    assert "other.test" not in tern.cli("queue", "list").stdout
    assert len(tern.find_messages(BOB, marker)) == 1
    assert not tern.find_messages(DEMO, marker)


def test_submission_without_auth_cannot_relay(tern):
    with tern.raw("submission") as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 530
        r = c.cmd("RCPT TO:<demo@other.test>")
        assert 500 <= r.code < 600, r


def test_rejections_are_logged(tern):
    with tern.raw("smtp") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        assert c.cmd("RCPT TO:<logged@other.test>").code == 550
    wait_for(lambda: [e for e in tern.events("rejected") if "logged@other.test" in e["_raw"]]
             or [l for l in tern.log_text().splitlines()
                 if "logged@other.test" in l and "reject" in l.lower()],
             T(5), what="a rejected log line naming logged@other.test")


def test_trusted_networks_may_relay(make_tern):
    t = make_tern(smtp={"trusted_networks": "127.0.0.2/32 10.0.0.0/8"})
    # From the trusted address: accepted and queued.
    msg = make_message(to="friend@other.test")
    with t.raw("smtp", source="127.0.0.2") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        r = c.cmd("RCPT TO:<friend@other.test>")
        assert r.code == 250, r
        assert c.send_data(msg).code == 250
    wait_for(lambda: "friend@other.test" in t.cli("queue", "list").stdout, T(10),
             what="friend@other.test in the queue")
    # From an untrusted loopback address: refused.
    with t.raw("smtp", source="127.0.0.3") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        r = c.cmd("RCPT TO:<friend@other.test>")
        assert r.code == 550 and r.enhanced == "5.7.1", r
    # Local delivery for trusted clients works as usual.
    msg = make_message()
    with t.raw("smtp", source="127.0.0.2") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        assert c.send_data(msg).code == 250
    t.wait_message(DEMO, message_id_of(msg))


def test_alias_to_external_target_is_queued_not_refused(make_tern):
    """An alias that forwards outside is accepted on the smtp role (it is local) and its
    external target waits in the queue."""
    t = make_tern()
    t.add_alias("fwd@example.test", "outside@other.test")
    msg = make_message(to="fwd@example.test")
    with t.raw("smtp") as c:
        c.ehlo()
        c.cmd("MAIL FROM:<x@y.test>")
        assert c.cmd("RCPT TO:<fwd@example.test>").code == 250
        assert c.send_data(msg).code == 250
    wait_for(lambda: "outside@other.test" in t.cli("queue", "list").stdout, T(10),
             what="outside@other.test in the queue")
