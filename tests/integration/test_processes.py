"""The master/worker model under stress: privilege drop, kill -9 of a session worker
mid-DATA and of the delivery worker mid-delivery, SIGTERM with sessions open, kill -9 of
everything, SIGHUP reload.  Every message that got a 250 is delivered exactly once."""

import collections
import os
import pwd
import re
import signal
import smtplib
import threading
import time


from conftest import (DEMO, T, RawSMTP, make_message, message_id_of, run_threads, uniq,
                      wait_for)

TRAILER = b"-- end of test message --\r\n"


def tagged_message(tag, i):
    msgid = "<%s-%04d@test.local>" % (tag, i)
    return msgid, make_message(msgid=msgid, subject="%s %d" % (tag, i),
                               body=("line %d\r\n" % i) * 20 + TRAILER.decode())


def send_batch(t, tag, n, conns=4, start=0, progress=None, uncertain=None):
    """Sends n messages over `conns` parallel smtplib sessions; returns the Message-IDs
    that got a 250.  Those whose session broke go to `uncertain` (and are not resent)."""
    accepted = []
    uncertain = uncertain if uncertain is not None else []
    lock = threading.Lock()

    def worker(k):
        deadline = time.monotonic() + T(120)
        i = start + k
        c = None
        while i < start + n and time.monotonic() < deadline:
            try:
                if c is None:
                    c = smtplib.SMTP("127.0.0.1", t.smtp_port, local_hostname="client.test",
                                     timeout=T(30))
                msgid, msg = tagged_message(tag, i)
                c.sendmail("x@y.test", [DEMO], msg)
                with lock:
                    accepted.append(msgid)
                    if progress:
                        progress(len(accepted))
                i += conns
            except (smtplib.SMTPException, OSError):
                # A worker we killed took the session with it: reconnect, go on.
                with lock:
                    uncertain.append(tagged_message(tag, i)[0])
                i += conns
                try:
                    if c is not None:
                        c.close()
                except OSError:
                    pass
                c = None
                time.sleep(0.05)
        if c is not None:
            try:
                c.quit()
            except (smtplib.SMTPException, OSError):
                pass

    res = run_threads(worker, [(k,) for k in range(conns)], timeout=T(150))
    assert all(e is None for _, e in res), res
    return accepted


def ids_in_maildir(t, tag):
    """Counter of the Message-IDs carrying tag over new/ and cur/, and the bad files."""
    seen = collections.Counter()
    partial = []
    for path in t.message_files(DEMO):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        mid = message_id_of(data)
        if mid and tag in mid:
            seen[mid] += 1
            if not data.endswith(TRAILER):
                partial.append(path)
        elif tag.encode() in data:
            partial.append(path)
    return seen, partial


def assert_exactly_once(t, tag, accepted, timeout, extra_ok=()):
    def all_there():
        seen, _ = ids_in_maildir(t, tag)
        return all(seen[m] >= 1 for m in accepted)
    try:
        wait_for(all_there, timeout, interval=0.2, what="every accepted message delivered")
    except AssertionError:
        seen, _ = ids_in_maildir(t, tag)
        missing = [m for m in accepted if not seen[m]]
        raise AssertionError("%d of %d accepted messages never delivered, e.g. %s"
                             % (len(missing), len(accepted), missing[:5]))
    time.sleep(0.5 * T(1))  # let late duplicates show up
    seen, partial = ids_in_maildir(t, tag)
    assert not partial, "partial or foreign files in the Maildir: %s" % partial[:5]
    dups = {m: n for m, n in seen.items() if n > 1}
    assert not dups, "delivered more than once: %s" % list(dups.items())[:5]
    unexpected = set(seen) - set(accepted) - set(extra_ok)
    assert not unexpected, "delivered without a 250: %s" % sorted(unexpected)[:5]


def assert_queue_drained(t, tag, timeout):
    def drained():
        return not [p for p, d in t.queue_contents() if tag.encode() in d]
    wait_for(drained, timeout, interval=0.2, what="queue/ empty of %s messages" % tag)


def session_pid_for(t, local_port, log_offset):
    """The session worker serving our connection: the connect line naming our port, or
    else the only connect logged since we connected (nothing else is connecting)."""
    def find():
        evs = t.events("connect", start=log_offset)
        for ev in evs:
            if re.search(r"[:=]%d\b" % local_port, ev["_raw"]):
                return ev["_pid"]
        smtp = [ev for ev in evs if ev.get("role", "smtp") == "smtp"]
        return smtp[0]["_pid"] if len(smtp) == 1 else None
    try:
        return wait_for(find, T(3), what="the connect line of port %d" % local_port)
    except AssertionError:
        return None


# ---------------------------------------------------------------------------------

def test_workers_started_and_privileges_dropped(make_tern):
    t = make_tern(workers=2)
    sessions = t.wait_workers("session", 2)
    delivery = t.wait_workers("delivery", 1)
    assert len(sessions) == 2, sessions
    assert len(delivery) == 1, delivery
    pids = list(sessions.values()) + list(delivery.values())
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            status = f.read()
        ppid = int(re.search(r"PPid:\s+(\d+)", status).group(1))
        assert ppid == t.proc.pid, "worker %d is not a child of the master" % pid
        if os.geteuid() == 0:
            tern_pw = pwd.getpwnam("tern")
            uids = re.search(r"Uid:\s+(.*)", status).group(1).split()
            gids = re.search(r"Gid:\s+(.*)", status).group(1).split()
            assert set(map(int, uids)) == {tern_pw.pw_uid}, (pid, uids)
            assert set(map(int, gids)) == {tern_pw.pw_gid}, (pid, gids)
            groups = re.search(r"Groups:\s*(.*)", status).group(1).split()
            assert "0" not in groups, "worker %d kept the root group" % pid


def test_kill_session_worker_mid_data(make_tern):
    t = make_tern(workers=2)
    t.wait_workers("session", 2)
    tag = uniq("sesskill")
    accepted = send_batch(t, tag, 6, conns=3)
    assert len(accepted) == 6

    time.sleep(0.2)
    offset = t.log_size()
    c = t.raw("smtp")
    c.ehlo()
    assert c.cmd("MAIL FROM:<x@y.test>").code == 250
    assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
    assert c.cmd("DATA").code == 354
    partial_id = "<%s-partial@test.local>" % tag
    c.send(b"Message-ID: " + partial_id.encode() + b"\r\nSubject: partial\r\n\r\n" +
           b"half of the body\r\n" * 100)
    time.sleep(0.2)

    pid = session_pid_for(t, c.local_port, offset)
    victims = [pid] if pid else list(t.worker_pids("session").values())
    survivors = [p for p in t.worker_pids("session").values() if p not in victims]
    assert victims, "no session worker pid in the log"
    for v in victims:
        t.killed_pids.add(v)
        os.kill(v, signal.SIGKILL)
    assert c.is_closed(T(5)), "the client of the killed worker kept its connection"
    c.close()

    wait_for(lambda: [e for e in t.events("worker_exited") if int(e.get("pid", 0)) in victims],
             T(10), what="event=worker_exited for the killed worker")
    t.wait_workers("session", 2, exclude=victims)
    with RawSMTP(t.smtp_port) as probe:
        assert probe.greeting.code == 220

    for p in survivors:  # the other worker was left alone
        assert os.path.exists("/proc/%d" % p), "worker %d died with its neighbour" % p
    more = send_batch(t, tag, 6, conns=3, start=100)
    assert len(more) == 6
    assert_exactly_once(t, tag, accepted + more, T(20))
    assert partial_id not in ids_in_maildir(t, tag)[0]
    assert_queue_drained(t, tag, T(10))
    assert t.proc.poll() is None, "the master died"


def test_kill_delivery_worker_mid_delivery(make_tern):
    t = make_tern(workers=2)
    t.wait_workers("delivery", 1)
    tag = uniq("dlvkill")
    n = 300
    kills = []

    def kill_delivery():
        pids = t.worker_pids("delivery")
        for pid in pids.values():
            if pid not in t.killed_pids:
                t.killed_pids.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except ProcessLookupError:
                    pass

    def progress(count):  # called with send_batch's lock held
        if count == 100 and not kills:
            kill_delivery()

    accepted = send_batch(t, tag, n, conns=6, progress=progress)
    assert len(accepted) == n
    # And once more at once after the sends, whoever the master started meanwhile.
    t.wait_workers("delivery", 1, exclude=kills, interval=0.01)
    backlog = len(t.queue_files())
    kill_delivery()
    assert len(kills) >= 2, kills
    assert backlog > 0, "test setup: the queue was already empty, nothing was mid-delivery"

    assert_exactly_once(t, tag, accepted, T(90))
    assert_queue_drained(t, tag, T(20))
    exited = [int(e.get("pid", 0)) for e in t.events("worker_exited", kind="delivery")]
    assert set(kills) <= set(exited), (kills, exited)
    t.wait_workers("delivery", 1, exclude=kills)
    assert t.proc.poll() is None


def test_sigterm_with_sessions_open_then_restart(make_tern):
    t = make_tern(workers=2)
    tag = uniq("sigterm")
    accepted = send_batch(t, tag, 40, conns=4)
    idle = []
    for role in ("smtp", "smtp", "submission", "submissions"):
        c = t.raw(role)
        c.ehlo()
        idle.append(c)
    workers = list(t.worker_pids("session").values()) + list(t.worker_pids("delivery").values())

    start = time.monotonic()
    t.terminate()
    for c in idle:
        assert c.is_closed(T(10)), "idle session still open after SIGTERM"
        assert c.buf == b"" or c.buf.startswith(b"421"), c.buf
        c.close()
    status = t.wait_exit(T(10))
    assert status is not None, "master still running %ds after SIGTERM" % T(10)
    assert status == 0, "master exited with %r" % status
    assert time.monotonic() - start < T(10)
    time.sleep(0.2)
    left = [p for p in workers if os.path.exists("/proc/%d" % p) and
            open("/proc/%d/stat" % p).read().split(") ")[1][0] != "Z"]
    assert not left, "workers outlived the master: %s" % left
    assert not t.group_members(), "processes left in the group: %s" % t.group_members()
    t.stop()

    # Every accepted message is delivered or still queued; after a restart, all of them.
    seen, partial = ids_in_maildir(t, tag)
    assert not partial, partial
    queued = b"".join(d for _, d in t.queue_contents())
    lost = [m for m in accepted if not seen[m] and m.encode() not in queued]
    assert not lost, "accepted, neither delivered nor queued after SIGTERM: %s" % lost[:5]
    t.start()
    assert_exactly_once(t, tag, accepted, T(20))
    assert_queue_drained(t, tag, T(10))
    # The restarted server still knows its accounts.
    with t.smtp("submission", login=DEMO) as c:
        c.noop()


def test_kill_everything_loses_no_accepted_mail(make_tern):
    """kill -9 of the whole process group right after the 250s: the 250 meant durable."""
    t = make_tern(workers=2)
    tag = uniq("killall")
    accepted = send_batch(t, tag, 60, conns=4)
    t.stop_log_offset = t.log_size()
    t.kill_group()
    assert not t.group_members()
    t.stop()
    t.start()
    assert_exactly_once(t, tag, accepted, T(30))
    assert_queue_drained(t, tag, T(10))


def test_sighup_reloads_and_old_sessions_drain(make_tern):
    t = make_tern(workers=2)
    old = set(t.wait_workers("session", 2).values())
    t.allow_worker_exits = True  # old workers exit after draining

    with t.raw("smtp") as c:
        size0 = [l for l in c.ehlo().lines if l.startswith("SIZE")][0]
    held = t.raw("smtp")
    held.ehlo()
    assert held.cmd("MAIL FROM:<x@y.test>").code == 250

    t.smtp_opts["max_message_size"] = "2M"
    t.write_config()
    t.send_signal(signal.SIGHUP)

    def new_size():
        try:
            with RawSMTP(t.smtp_port, timeout=T(5)) as c:
                line = [l for l in c.ehlo().lines if l.startswith("SIZE")][0]
                return line if line != size0 else None
        except (OSError, EOFError):
            return None
    line = wait_for(new_size, T(15), interval=0.2, what="EHLO SIZE to change after SIGHUP")
    assert int(line.split()[1]) in (2 * 1024 * 1024, 2000000), line

    # The session opened before the reload still completes its transaction.
    msg = make_message()
    assert held.cmd("RCPT TO:<%s>" % DEMO).code == 250
    assert held.send_data(msg).code == 250
    held.cmd("QUIT")
    held.close()
    t.wait_message(DEMO, message_id_of(msg))

    new = set(t.wait_workers("session", 2, exclude=old).values())
    assert not (new & old)
    wait_for(lambda: not [p for p in old if os.path.exists("/proc/%d" % p)], T(15),
             what="old session workers to exit after draining")
    assert t.proc.poll() is None
    msg = make_message()
    t.send(msg)
    t.wait_message(DEMO, message_id_of(msg))


def test_bad_config_at_start_exits_1(make_tern):
    t = make_tern(start=False, accounts=False)
    t.write_config(t.config_text() + "[smtp]\nbogus_key = 1\n")
    t.start(wait=False)
    status = t.wait_exit(T(10))
    assert status == 1, status
    assert "bogus_key" in t.read(t.err_file) + t.log_text()
    t.stop()


def test_port_in_use_fails_cleanly(make_tern):
    import socket
    t = make_tern(start=False)
    s = socket.socket()
    s.bind(("127.0.0.1", t.smtp_port))
    s.listen(1)
    try:
        t.start(wait=False)
        status = t.wait_exit(T(10))
        assert status is not None and status != 0, "started although its port was taken"
        assert str(t.smtp_port) in t.read(t.err_file) + t.log_text()
        t.stop()
    finally:
        s.close()
