"""Sessions of one worker share the message list of a mailbox they see in the same
state (src/imap/imap_snapshot.c).  With one worker every session shares: a change by
one must reach the others only through the untagged updates they are owed, and a
session that selects afterwards must see the new state."""

import imaplib
import re

from conftest import DEMO, T, client_ssl_context, make_message, message_id_of, uniq


def login(t):
    c = imaplib.IMAP4_SSL("127.0.0.1", t.imaps_port, ssl_context=client_ssl_context(),
                          timeout=T(15))
    c.login(DEMO, t.passwords[DEMO])
    return c


def flags_of(c, seq):
    typ, data = c.fetch(str(seq), "(FLAGS)")
    assert typ == "OK", data
    return set(re.search(rb"FLAGS \(([^)]*)\)", data[0]).group(1).split())


def test_shared_list_is_copied_before_a_change(make_tern):
    t = make_tern(server={"workers": "1"})
    for _ in range(5):
        msg = make_message(subject=uniq("shared"))
        t.send(msg)
        t.wait_message(DEMO, message_id_of(msg))
    a, b = login(t), login(t)
    try:
        assert a.select("INBOX") == ("OK", [b"5"])
        assert b.select("INBOX") == ("OK", [b"5"])
        # A's change must not write into the list B shares: B would then never be
        # told (its view would already hold the new flags).  B is told at NOOP.
        assert a.store("2", "+FLAGS", "(\\Flagged)")[0] == "OK"
        assert flags_of(a, 2) == {b"\\Flagged"}
        b.untagged_responses.clear()
        b.noop()
        untagged = b.untagged_responses.pop("FETCH", [])
        assert any(b"\\Flagged" in u for u in untagged), untagged
        assert flags_of(b, 2) == {b"\\Flagged"}

        # A expunges: B keeps its numbering until NOOP, then gets the EXPUNGE.
        assert a.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert a.expunge()[0] == "OK"
        typ, data = b.fetch("5", "(UID)")
        assert typ == "OK" and data[0], data
        b.untagged_responses.clear()
        b.noop()
        assert b.untagged_responses.pop("EXPUNGE", []) == [b"1"]

        # A third session selects afterwards: the current state, not the old list.
        c = login(t)
        try:
            assert c.select("INBOX") == ("OK", [b"4"])
            assert flags_of(c, 1) == {b"\\Flagged"}
            # Two sessions in the same new state: both see a delivery.
            assert b.select("INBOX") == ("OK", [b"4"])
            msg = make_message(subject=uniq("late"))
            t.send(msg)
            t.wait_message(DEMO, message_id_of(msg))
            for s in (b, c):
                s.untagged_responses.clear()
                s.noop()
                assert s.untagged_responses.pop("EXISTS", []) == [b"5"]
                assert flags_of(s, 5) == set()
        finally:
            c.logout()
    finally:
        a.logout()
        b.logout()


def test_sessions_across_workers_see_each_others_changes(make_tern):
    """Eight sessions on two workers (SO_REUSEPORT spreads them: that all share one
    worker has a chance of 1 in 128): one session's STORE, EXPUNGE and APPEND reach
    every other session as untagged updates at its next NOOP."""
    t = make_tern(server={"workers": "2"})
    for _ in range(3):
        msg = make_message(subject=uniq("across"))
        t.send(msg)
        t.wait_message(DEMO, message_id_of(msg))
    sessions = [login(t) for _ in range(8)]
    try:
        for s in sessions:
            assert s.select("INBOX") == ("OK", [b"3"])
        a, others = sessions[0], sessions[1:]
        assert a.store("3", "+FLAGS", "(\\Seen \\Flagged)")[0] == "OK"
        assert a.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert a.expunge()[0] == "OK"
        appended = make_message(subject=uniq("appended"))
        assert a.append("INBOX", "(\\Answered)", None, appended)[0] == "OK"
        for s in others:
            s.untagged_responses.clear()
            s.noop()
            assert s.untagged_responses.pop("EXPUNGE", []) == [b"1"]
            assert s.untagged_responses.pop("EXISTS", [])[-1] == b"3"
            # Message 3 became 2 with the expunge; its new flags were announced.
            assert flags_of(s, 2) == {b"\\Seen", b"\\Flagged"}
            assert flags_of(s, 3) == {b"\\Answered"}
    finally:
        for s in sessions:
            s.logout()
