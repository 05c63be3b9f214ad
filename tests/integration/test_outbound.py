"""Outbound delivery (issue 3): MX walk, retries, bounces, delay warnings, smarthost,
routes, misbehaving remotes, crashes.  Remote servers are Postfix's smtp-sink, a server
of our own that misbehaves, and tern itself; DNS is the test unbound."""

import email
import email.policy
import os
import signal
import time

import pytest

from conftest import DEMO, T, make_message, message_id_of, uniq, wait_for
from sinks import BadServer, SmtpSink, free_port_on, port_free_on


def delivery_port(*hosts):
    """A port free on every one of hosts (127.0.0.x)."""
    for _ in range(50):
        p = free_port_on(hosts[0])
        if all(port_free_on(h, p) for h in hosts[1:]):
            return p
    raise RuntimeError("no common free port")


def one_mx(t, dom, ip):
    """DNS for dom: a single MX, mx.DOM, at ip."""
    t.dns.add("%s. MX 10 mx.%s." % (dom, dom), "mx.%s. A %s" % (dom, ip))


def outbound(make_tern, port, **delivery):
    opts = {"port": str(port), "retry_schedule": "1s", "connect_timeout": "3s",
            "command_timeout": "5s"}
    opts.update({k: str(v) for k, v in delivery.items()})
    t = make_tern(delivery=opts)
    t.add_alias("postmaster@example.test", DEMO)
    return t


def submit(t, rcpt, subject=None):
    """demo@ submits a message to rcpt (authenticated, STARTTLS); returns it."""
    msg = make_message(sender=DEMO, to=rcpt, subject=subject or uniq("out"))
    t.send(msg, to=[rcpt], sender=DEMO, role="submission", login=DEMO)
    return msg


def dsn_parts(raw):
    """Parses a delivery status notification from a Maildir file: (report, status
    blocks as dicts, returned part)."""
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    assert m.get_param("report-type") == "delivery-status"
    parts = list(m.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = []
    for b in parts[1].get_payload():
        blocks.append({k.lower(): str(v) for k, v in b.items()})
    return m, blocks, parts[2] if len(parts) > 2 else None


def wait_dsn(t, marker, what):
    """The DSN about the message with marker, in demo's Maildir."""
    def find():
        for raw in t.messages(DEMO):
            if b"multipart/report" in raw and marker.encode() in raw:
                return raw
        return None
    return wait_for(find, T(20), what=what)


def test_mx_preference_and_failover(make_tern):
    dom = uniq("pref") + ".test"
    port = delivery_port("127.0.0.2", "127.0.0.3")
    t = outbound(make_tern, port)
    t.dns.add("%s. MX 10 mx1.%s." % (dom, dom), "%s. MX 20 mx2.%s." % (dom, dom),
              "mx1.%s. A 127.0.0.2" % dom, "mx2.%s. A 127.0.0.3" % dom)
    sink = SmtpSink("127.0.0.3", port)
    try:
        msg = submit(t, "user@" + dom)
        wait_for(lambda: sink.find(message_id_of(msg)), T(20), what="the message at MX 20")
        # MX 10 (nothing listening) was tried first.
        failed = [e for e in t.events("connect_failed") if e.get("addr") == "127.0.0.2"]
        assert failed, t.log_text()
        sent = wait_for(lambda: t.events("sent"), T(10), what="a sent line")
        assert "mx2.%s" % dom in sent[0]["relay"] and "127.0.0.3" in sent[0]["relay"], sent
        wait_for(lambda: not t.queue_files(), T(10), what="the queue to empty")
    finally:
        sink.stop()


def test_first_mx_preferred_when_up(make_tern):
    dom = uniq("pref") + ".test"
    port = delivery_port("127.0.0.2", "127.0.0.3")
    t = outbound(make_tern, port)
    t.dns.add("%s. MX 20 mx2.%s." % (dom, dom), "%s. MX 10 mx1.%s." % (dom, dom),
              "mx1.%s. A 127.0.0.2" % dom, "mx2.%s. A 127.0.0.3" % dom)
    s1, s2 = SmtpSink("127.0.0.2", port), SmtpSink("127.0.0.3", port)
    try:
        msgs = [submit(t, "user%d@%s" % (i, dom)) for i in range(3)]
        for m in msgs:
            wait_for(lambda: s1.find(message_id_of(m)), T(20), what="delivery to MX 10")
        assert not s2.messages()
    finally:
        s1.stop()
        s2.stop()


def test_no_mx_falls_back_to_the_address(make_tern):
    dom = uniq("nomx") + ".test"
    port = delivery_port("127.0.0.11")
    sink = SmtpSink("127.0.0.11", port)
    try:
        t = outbound(make_tern, port)
        t.dns.add("%s. A 127.0.0.11" % dom)  # no MX record (RFC 5321 5.1: implicit MX)
        msg = submit(t, "a@" + dom)
        wait_for(lambda: sink.find(message_id_of(msg)), T(20), what="delivery to the A record")
        sent = wait_for(lambda: t.events("sent"), T(10), what="a sent line")
        assert sent[0]["tls"] == "none" or "TLS" in sent[0]["tls"], sent
    finally:
        sink.stop()


def test_tempfail_then_success_on_retry(make_tern):
    dom = uniq("retry") + ".test"
    port = delivery_port("127.0.0.4")
    t = outbound(make_tern, port)
    one_mx(t, dom, "127.0.0.4")
    sink = SmtpSink("127.0.0.4", port, ["-r", "RCPT"])
    try:
        msg = submit(t, "later@" + dom)
        ev = wait_for(lambda: t.events("deferred"), T(20), what="a deferred attempt")
        assert ev[0]["status"].startswith("4"), ev
        assert "next_retry" in ev[0], ev
        assert t.queue_files(), "the message must stay queued"
        sink.stop()
        sink = SmtpSink("127.0.0.4", port)
        wait_for(lambda: sink.find(message_id_of(msg)), T(30), what="delivery on retry")
        wait_for(lambda: not t.queue_files(), T(10), what="the queue to empty")
    finally:
        sink.stop()


def test_permanent_failure_bounces_to_sender(make_tern):
    dom = uniq("hard") + ".test"
    port = delivery_port("127.0.0.5")
    t = outbound(make_tern, port)
    one_mx(t, dom, "127.0.0.5")
    sink = SmtpSink("127.0.0.5", port, ["-f", "RCPT"])
    try:
        subject = uniq("bounce-me")
        submit(t, "nobody@" + dom, subject=subject)
        raw = wait_dsn(t, subject, "the bounce in the sender's Maildir")
        m, blocks, returned = dsn_parts(raw)
        per_rcpt = [b for b in blocks if "final-recipient" in b]
        assert per_rcpt[0]["action"] == "failed", blocks
        assert per_rcpt[0]["status"].startswith("5."), blocks
        assert ("nobody@" + dom) in per_rcpt[0]["final-recipient"], blocks
        assert "127.0.0.5" in per_rcpt[0].get("remote-mta", "") or \
            "mx." + dom in per_rcpt[0].get("remote-mta", ""), blocks
        assert subject in returned.as_string()
        assert m["Auto-Submitted"] is not None
        wait_for(lambda: not t.queue_files(), T(10), what="the queue to empty")
    finally:
        sink.stop()


def test_null_mx_bounces_at_once(make_tern):
    dom = uniq("nullmx") + ".test"
    t = outbound(make_tern, delivery_port("127.0.0.1"))
    t.dns.add("%s. MX 0 ." % dom)
    subject = uniq("nullmx")
    submit(t, "x@" + dom, subject=subject)
    raw = wait_dsn(t, subject, "a bounce for a null MX domain")
    _, blocks, _ = dsn_parts(raw)
    assert [b for b in blocks if b.get("status") == "5.1.10"], blocks


def test_nxdomain_bounces(make_tern):
    dom = uniq("nowhere") + ".test"  # not in the test DNS: NXDOMAIN
    t = outbound(make_tern, delivery_port("127.0.0.1"))
    subject = uniq("nxdomain")
    submit(t, "x@" + dom, subject=subject)
    raw = wait_dsn(t, subject, "a bounce for a domain that does not exist")
    _, blocks, _ = dsn_parts(raw)
    assert [b for b in blocks if b.get("status") == "5.1.2"], blocks


def test_delay_warning_then_expiry(make_tern):
    # mx.dead.test: nothing listens on the delivery port.
    t = outbound(make_tern, delivery_port("127.0.0.1"), delay_warning="2s",
                 queue_lifetime="%ds" % T(8))
    subject = uniq("slow")
    submit(t, "patient@far.test", subject=subject)
    raw = wait_dsn(t, subject, "a delay warning")
    _, blocks, _ = dsn_parts(raw)
    delayed = [b for b in blocks if b.get("action") == "delayed"]
    assert delayed and delayed[0]["status"].startswith("4."), blocks
    assert "will-retry-until" in delayed[0], blocks
    assert t.queue_files(), "still queued after the warning"

    def bounced():
        for raw in t.find_messages(DEMO, subject):
            if b"multipart/report" in raw and b"Action: failed" in raw:
                return raw
        return None
    raw = wait_for(bounced, T(30), what="the bounce when the queue lifetime ends")
    wait_for(lambda: not [p for p in t.queue_files() if "/tmp/" not in p], T(10),
             what="the queue to empty")
    # Exactly one warning, however many attempts were made.
    warnings = [r for r in t.find_messages(DEMO, subject) if b"Action: delayed" in r]
    assert len(warnings) == 1, len(warnings)


def test_null_sender_failure_goes_to_postmaster(make_tern):
    dom = uniq("hard") + ".test"
    port = delivery_port("127.0.0.5")
    t = outbound(make_tern, port, queue_lifetime="1h")
    t.add_domain("relay.test")
    t.add_alias("fwd@relay.test", "x@" + dom)
    one_mx(t, dom, "127.0.0.5")
    sink = SmtpSink("127.0.0.5", port, ["-f", "RCPT"])
    try:
        # A bounce-like message from <> forwarded through an alias to a remote 5xx.
        subject = uniq("from-null")
        msg = make_message(sender="MAILER-DAEMON@y.test", to="fwd@relay.test", subject=subject)
        t.send(msg, to=["fwd@relay.test"], sender="")
        raw = wait_dsn(t, subject, "the report to the postmaster (demo via alias)")
        m, _, _ = dsn_parts(raw)
        assert "demo@example.test" in str(m["To"]) or "postmaster" in str(m["To"]), m["To"]
    finally:
        sink.stop()


def test_smarthost_with_starttls_and_auth(make_tern):
    # The smarthost is another tern: submission with STARTTLS and AUTH, where the
    # account relay@hub.test may send as demo@example.test (an alias of it there).
    hub = make_tern(accounts=False)
    hub.add_domain("dest.test")
    hub.add_user("u@dest.test")
    hub.add_domain("hub.test")
    relay_pw = hub.add_user("relay@hub.test")
    hub.add_domain("example.test")
    hub.add_alias("demo@example.test", "relay@hub.test")
    t = make_tern(extra_config="[relay]\nhost = 127.0.0.1:%d\ntls = starttls\n"
                               "tls_verify = no\n"
                               "username = relay@hub.test\npassword = %s\n"
                               % (hub.sub_port, relay_pw))
    msg = make_message(sender=DEMO, to="u@dest.test", subject=uniq("via-hub"))
    t.send(msg, to=["u@dest.test"], sender=DEMO, role="submission", login=DEMO)
    hub.wait_message("u@dest.test", message_id_of(msg), timeout=T(20))
    auth_ok = [e for e in hub.events("auth") if e.get("result") == "ok"]
    assert auth_ok and auth_ok[0]["user"] == "relay@hub.test", hub.log_text()
    assert hub.events("tls"), "the smarthost connection used STARTTLS"
    sent = wait_for(lambda: t.events("sent"), T(10), what="a sent line")
    assert "127.0.0.1" in sent[0]["relay"], sent
    assert "TLSv1" in sent[0]["tls"] and "verified=no" in sent[0]["tls"], sent
    # The relay password is in the config file only, never in a log.
    assert relay_pw not in t.log_text() and relay_pw not in hub.log_text()


def test_smarthost_wrong_password_is_reported(make_tern):
    hub = make_tern(accounts=False)
    hub.add_domain("hub.test")
    hub.add_user("relay@hub.test")
    t = make_tern(extra_config="[relay]\nhost = 127.0.0.1:%d\ntls = starttls\n"
                               "tls_verify = no\n"
                               "username = relay@hub.test\npassword = wrong-password\n"
                               % hub.sub_port)
    submit(t, "u@dest.test")
    ev = wait_for(lambda: t.events("deferred") or t.events("bounced"), T(20),
                  what="the failed attempt")
    assert "535" in ev[0].get("reply", "") or "535" in str(ev[0]), ev


def test_smarthost_certificate_must_verify(make_tern):
    hub = make_tern(accounts=False)
    hub.add_domain("hub.test")
    pw = hub.add_user("relay@hub.test")
    # The hub's certificate is self-signed: with tls_verify (the default) nothing is
    # sent, the password included, and the message waits.
    t = make_tern(extra_config="[relay]\nhost = 127.0.0.1:%d\ntls = starttls\n"
                               "username = relay@hub.test\npassword = %s\n" % (hub.sub_port, pw))
    submit(t, "u@dest.test")
    ev = wait_for(lambda: t.events("deferred"), T(20), what="a deferred attempt")
    assert "certificate" in ev[0].get("reply", "").lower() or "verif" in str(ev[0]).lower(), ev
    assert not [e for e in hub.events("auth")], "no AUTH to an unverified host"


def test_route_for_one_domain(make_tern):
    dom = uniq("routed") + ".test"
    port = delivery_port("127.0.0.6")
    sink = SmtpSink("127.0.0.6", port)
    try:
        t = make_tern(extra_config="[route %s]\nhost = 127.0.0.6:%d\ntls = none\n"
                                   % (dom, port))
        t.add_alias("postmaster@example.test", DEMO)
        # No DNS record exists for dom: only the route can deliver it.
        msg = submit(t, "someone@" + dom)
        wait_for(lambda: sink.find(message_id_of(msg)), T(20), what="delivery by the route")
    finally:
        sink.stop()


@pytest.mark.parametrize("mode", ["garbage", "hang"])
def test_misbehaving_remote_is_a_temporary_failure(make_tern, mode):
    dom = uniq(mode) + ".test"
    port = delivery_port("127.0.0.7")
    bad = BadServer("127.0.0.7", port, mode)
    try:
        t = outbound(make_tern, port, connect_timeout="2s", command_timeout="2s")
        one_mx(t, dom, "127.0.0.7")
        submit(t, "x@" + dom)
        ev = wait_for(lambda: t.events("deferred"), T(30), what="a deferred attempt")
        assert ev[0]["status"].startswith("4"), ev
        assert bad.connections >= 1
        # The server still works.
        msg = make_message()
        t.send(msg)
        t.wait_message(DEMO, message_id_of(msg))
    finally:
        bad.stop()


def test_dead_destination_is_not_tried_for_each_message(make_tern):
    """When no host of a destination can be reached, the next messages for it are
    deferred at once ("suspended") instead of each waiting out the same failure;
    `tern queue flush` tries it again, and then everything goes."""
    dom = uniq("dead") + ".test"
    port = delivery_port("127.0.0.12")
    # A retry schedule of an hour: a message is tried only when something asks for it.
    t = outbound(make_tern, port, retry_schedule="1h")
    one_mx(t, dom, "127.0.0.12")  # nothing listens there yet
    first = submit(t, "a@" + dom)
    wait_for(lambda: t.events("destination_dead"), T(20), what="the destination marked dead")
    later = [submit(t, "b%d@%s" % (i, dom)) for i in range(3)]

    def suspended():
        evs = [e for e in t.events("deferred") if "suspended" in e.get("reply", "")]
        return evs if len({e["qid"] for e in evs}) >= 3 else None
    evs = wait_for(suspended, T(20), what="the later messages deferred without an attempt")
    assert evs[0]["status"].startswith("4."), evs
    assert dom in evs[0]["reply"] and "127.0.0.12" in evs[0]["reply"], evs
    tried = [e for e in t.events("connect_failed") if e.get("addr") == "127.0.0.12"]
    assert len(tried) == 1, tried  # only the first message's attempt connected
    sink = SmtpSink("127.0.0.12", port)
    try:
        # The flush forgets the suspension: what it starts is tried, not suspended.
        n_suspended = len([e for e in t.events("deferred") if "suspended" in e.get("reply", "")])
        t.cli("queue", "flush")
        for m in [first] + later:
            wait_for(lambda: sink.find(message_id_of(m)), T(20),
                     what="every message once the destination answers")
        wait_for(lambda: not t.queue_files(), T(10), what="the queue to empty")
        assert len([e for e in t.events("deferred")
                    if "suspended" in e.get("reply", "")]) == n_suspended
    finally:
        sink.stop()


def test_kill_delivery_worker_mid_transfer(make_tern):
    dom = uniq("slow") + ".test"
    port = delivery_port("127.0.0.8")
    sink = SmtpSink("127.0.0.8", port, ["-w", "1"])  # 1 s before answering DATA
    try:
        t = outbound(make_tern, port)
        t.allow_worker_exits = True
        one_mx(t, dom, "127.0.0.8")
        msgs = [make_message(sender=DEMO, subject=uniq("k%d" % i)) for i in range(12)]
        with t.smtp("submission", login=DEMO) as c:
            for i, m in enumerate(msgs):
                assert c.sendmail(DEMO, ["r%d@%s" % (i, dom)], m) == {}
        for _ in range(2):
            time.sleep(1.5)
            pid = list(t.wait_workers("delivery", 1).values())[0]
            os.kill(pid, signal.SIGKILL)
            t.killed_pids.add(pid)
            t.wait_workers("delivery", 1, exclude=(pid,))
        for m in msgs:
            wait_for(lambda: sink.find(message_id_of(m)), T(60),
                     what="every message at the remote at least once")
        wait_for(lambda: not [p for p in t.queue_files() if "/tmp/" not in p], T(30),
                 what="the queue to empty")
    finally:
        sink.stop()


def test_restart_with_full_queue(make_tern):
    dom = uniq("later") + ".test"
    port = delivery_port("127.0.0.9")
    t = outbound(make_tern, port)
    one_mx(t, dom, "127.0.0.9")
    msgs = [submit(t, "r%d@%s" % (i, dom)) for i in range(20)]
    wait_for(lambda: len(t.events("deferred")) >= 20, T(30), what="20 deferred attempts")
    assert t.stop() == 0
    sink = SmtpSink("127.0.0.9", port)
    try:
        t.start()
        for m in msgs:
            wait_for(lambda: sink.find(message_id_of(m)), T(30),
                     what="every queued message after the restart")
    finally:
        sink.stop()


def test_queue_admin_commands(make_tern):
    t = outbound(make_tern, delivery_port("127.0.0.1"), retry_schedule="1h")
    subject = uniq("admin")
    submit(t, "held@far.test", subject=subject)
    wait_for(lambda: t.events("deferred"), T(20), what="a deferred attempt")
    out = t.cli("queue", "list").stdout
    qid = [l.split()[0] for l in out.splitlines() if l and not l.startswith(" ")
           and "message" not in l][0]
    assert "next try" in out, out
    show = t.cli("queue", "show", qid).stdout
    assert subject in show and "held@far.test" in show, show
    stats = t.cli("queue", "stats").stdout
    assert "far.test" in stats and "messages        1" in stats, stats
    t.cli("queue", "hold", qid)
    assert "held" in t.cli("queue", "list").stdout
    n = len(t.events("deferred"))
    t.cli("queue", "flush")
    time.sleep(T(2))
    assert len(t.events("deferred")) == n, "a held message is not tried"
    t.cli("queue", "release", qid)
    wait_for(lambda: len(t.events("deferred")) > n, T(20), what="a retry after release")
    t.cli("queue", "retry", qid)
    wait_for(lambda: len(t.events("deferred")) > n + 1, T(20), what="a retry on request")
    assert t.cli("queue", "retry", "NOSUCHIDNOSUCHIDNOSU", check=False).returncode == 1
    t.cli("queue", "delete", qid)
    assert "queue is empty" in t.cli("queue", "list").stdout


def test_connection_reused_for_the_next_message(make_tern):
    dom = uniq("reuse") + ".test"
    port = delivery_port("127.0.0.10")
    sink = SmtpSink("127.0.0.10", port)
    try:
        t = outbound(make_tern, port)
        one_mx(t, dom, "127.0.0.10")
        first = submit(t, "a@" + dom)
        wait_for(lambda: sink.find(message_id_of(first)), T(20), what="the first message")
        # Within the idle time, the next messages take the same connection.
        later = [submit(t, "b%d@%s" % (i, dom)) for i in range(3)]
        for m in later:
            wait_for(lambda: sink.find(message_id_of(m)), T(20), what="a later message")
        connects = [e for e in t.events("connect") if "127.0.0.10" in e.get("remote", "")]
        assert 1 <= len(connects) < 4, "%d connections for 4 messages" % len(connects)
    finally:
        sink.stop()


def test_notify_success_on_local_delivery(make_tern):
    from conftest import BOB
    t = make_tern()
    subject = uniq("notify")
    msg = make_message(sender=BOB, to=DEMO, subject=subject)
    with t.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s> RET=HDRS ENVID=env%s" % (BOB, subject)).code == 250
        assert c.cmd("RCPT TO:<%s> NOTIFY=SUCCESS" % DEMO).code == 250
        assert c.send_data(msg).code == 250
    t.wait_message(DEMO, message_id_of(msg))

    def report():
        for raw in t.messages(BOB):
            if b"multipart/report" in raw and subject.encode() in raw:
                return raw
        return None
    raw = wait_for(report, T(20), what="the success report in the sender's Maildir")
    _, blocks, returned = dsn_parts(raw)
    per_rcpt = [b for b in blocks if "final-recipient" in b]
    assert per_rcpt[0]["action"] == "delivered" and per_rcpt[0]["status"] == "2.0.0", blocks
    assert any(("env" + subject) in b.get("original-envelope-id", "") for b in blocks), blocks
    # RET=HDRS: the headers come back, the body does not.
    assert returned.get_content_type() in ("text/rfc822-headers", "message/global-headers")
    # A plain delivery (no NOTIFY) sends no report.
    plain = make_message(sender=BOB, to=DEMO, subject=uniq("plain"))
    t.send(plain, sender=BOB)
    t.wait_message(DEMO, message_id_of(plain))
    time.sleep(T(1))
    assert not [r for r in t.messages(BOB) if b"multipart/report" in r and
                message_id_of(plain).encode() in r]


@pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root")
def test_delivery_to_a_real_postfix(make_tern):
    from sinks import PostfixServer
    dom = uniq("pf") + ".test"
    # Postfix binds only addresses of an interface: 127.0.0.1 (with its own port).
    port = delivery_port("127.0.0.1")
    pf = PostfixServer("127.0.0.1", port, dom, ["alice"])
    try:
        t = outbound(make_tern, port)
        one_mx(t, dom, "127.0.0.1")
        body = "first line\r\n.a line that starts with a dot\r\n..two dots\r\nlast\r\n"
        msg = make_message(sender=DEMO, to="alice@" + dom, subject=uniq("to-postfix"),
                           body=body)
        t.send(msg, to=["alice@" + dom], sender=DEMO, role="submission", login=DEMO)
        got = wait_for(lambda: [m for m in pf.messages("alice")
                                if message_id_of(msg).encode() in m],
                       T(30), what="the message in Postfix's Maildir")[0]
        # Postfix stores LF line ends: compare the body with LF.
        assert body.replace("\r\n", "\n").encode() in got, got
        sent = wait_for(lambda: t.events("sent"), T(10), what="a sent line")
        assert sent[0]["status"].startswith("2."), sent
    finally:
        pf.stop()
