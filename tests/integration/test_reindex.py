"""`tern reindex ADDRESS`: the Maildir files are the truth and the index a cache.  A
rebuilt (or lost) index gives the same messages with their system flags and folders
back, under a new UIDVALIDITY so that clients resynchronise."""

import imaplib
import os
import re

from conftest import DEMO, T, client_ssl_context, make_message, message_id_of, uniq


def login(t):
    c = imaplib.IMAP4_SSL("127.0.0.1", t.imaps_port, ssl_context=client_ssl_context(),
                          timeout=T(15))
    c.login(DEMO, t.passwords[DEMO])
    return c


def uidvalidity(c, box):
    typ, data = c.status(box, "(UIDVALIDITY MESSAGES)")
    assert typ == "OK", data
    m = re.search(rb"UIDVALIDITY (\d+) MESSAGES (\d+)|MESSAGES (\d+) UIDVALIDITY (\d+)", data[0])
    return int(m.group(1) or m.group(4)), int(m.group(2) or m.group(3))


def subjects_and_flags(c, box):
    typ, _ = c.select(box, readonly=True)
    assert typ == "OK"
    typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        flags = set(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).split())
        subject = item[1].decode().split(":", 1)[1].strip()
        out[subject] = flags - {b"\\Recent"}
    c.close()
    return out


def test_reindex_rebuilds_messages_flags_and_folders(make_tern):
    t = make_tern()
    subjects = []
    for _ in range(4):
        subject = uniq("reindex")
        msg = make_message(subject=subject)
        t.send(msg)
        t.wait_message(DEMO, message_id_of(msg))
        subjects.append(subject)
    with login(t) as c:
        c.select("INBOX")
        c.store("1", "+FLAGS", "(\\Seen \\Flagged)")
        c.store("2", "+FLAGS", "(\\Answered)")
        assert c.create("Projects/2026")[0] == "OK"
        assert c.copy("3", "Projects/2026")[0] == "OK"
        c.logout()
    with login(t) as c:
        before_inbox = subjects_and_flags(c, "INBOX")
        before_proj = subjects_and_flags(c, "Projects/2026")
        v_before, n_before = uidvalidity(c, "INBOX")
        c.logout()
    assert n_before == 4 and len(before_proj) == 1

    # Rebuild while the server runs (nobody is logged in), then read it all again.
    p = t.cli("reindex", DEMO)
    assert "5 messages" in p.stdout, p.stdout
    with login(t) as c:
        v_after, n_after = uidvalidity(c, "INBOX")
        assert n_after == 4
        assert v_after > v_before
        assert subjects_and_flags(c, "INBOX") == before_inbox
        assert subjects_and_flags(c, "Projects/2026") == before_proj
        typ, data = c.list()
        names = b" ".join(data)
        for box in (b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive", b"Projects/2026"):
            assert box in names, data
        c.logout()
    # The index is the server's, not root's: the workers can still write it.
    st = os.stat(os.path.join(t.maildir(DEMO), "index.db"))
    assert st.st_uid != 0 or os.geteuid() != 0
    with login(t) as c:
        c.select("INBOX")
        assert c.store("4", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert c.expunge()[0] == "OK"
        c.logout()


def test_lost_index_is_rebuilt_on_login(make_tern):
    t = make_tern()
    msg = make_message(subject=uniq("lost"))
    t.send(msg)
    t.wait_message(DEMO, message_id_of(msg))
    with login(t) as c:
        c.select("INBOX")
        c.store("1", "+FLAGS", "(\\Seen)")
        c.logout()
    t.stop()
    root = t.maildir(DEMO)
    for name in os.listdir(root):
        if name.startswith("index.db"):
            os.unlink(os.path.join(root, name))
    t.start()
    with login(t) as c:
        flags = subjects_and_flags(c, "INBOX")
        assert list(flags.values()) == [{b"\\Seen"}], flags
        c.logout()


def test_reindex_refuses_unknown_accounts(make_tern):
    t = make_tern(start=False)
    p = t.cli("reindex", "nobody@example.test", check=False)
    assert p.returncode == 1 and "not an account" in p.stderr, p.stderr
    p = t.cli("reindex", "not-an-address", check=False)
    assert p.returncode == 2, p.stderr
