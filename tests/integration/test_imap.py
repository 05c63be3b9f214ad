"""IMAP engine (RFC 9051 with RFC 3501 clients) against a real `tern serve`: greeting
and capabilities around STARTTLS, LOGIN and AUTHENTICATE, the throttle, SELECT/EXAMINE,
mailbox management, LIST variants, STATUS, APPEND, literal limits, syntax errors, IDLE
woken by a delivery, two sessions seeing each other, mailbox names in mUTF-7 and
UTF-8, and curl as a third-party client.

Clients: imaplib and a raw socket client (RawIMAP, below) for what imaplib will not do."""

import base64
import os
import imaplib
import re
import socket
import subprocess
import time

import pytest

from conftest import (BOB, DEMO, HOSTNAME, RawConn, T, Tern, _finish, _running,
                      client_ssl_context, free_port, make_message, message_id_of, uniq)

def imap_listeners():
    return [("mx", "smtp", "127.0.0.1:%d" % free_port()),
            ("imap", "imap", "127.0.0.1:%d" % free_port()),
            ("imaps", "imaps", "127.0.0.1:%d" % free_port())]


class Response:
    def __init__(self, untagged, tagged):
        self.untagged = untagged    # [bytes] without "* " and CRLF, literals inline
        self.tagged = tagged        # the tagged line without the tag: b"OK ..."

    @property
    def status(self):
        return self.tagged.split(b" ", 1)[0].decode()

    @property
    def text(self):
        return self.tagged.decode("utf-8", "replace")

    def find(self, prefix):
        if isinstance(prefix, str):
            prefix = prefix.encode()
        return [u for u in self.untagged if u.upper().startswith(prefix.upper())]

    def __repr__(self):
        return "Response(%r, %r)" % (self.untagged, self.tagged)


class RawIMAP(RawConn):
    n = 0  # the last tag number

    def line(self):
        """One response line with its literals inline."""
        return self.read_line(literals=True)

    # -- commands ---------------------------------------------------------------------

    def tag(self):
        self.n += 1
        return "t%d" % self.n

    def response(self, tag):
        untagged = []
        for _ in range(100000):
            line = self.line()
            if line.startswith(b"* "):
                untagged.append(line[2:])
            elif line.startswith(tag.encode() + b" "):
                return Response(untagged, line[len(tag) + 1:])
            elif line.startswith(b"+"):
                untagged.append(line)
            else:
                raise AssertionError("unexpected line %r" % line)
        raise AssertionError("endless response")

    def cmd(self, text, tag=None):
        tag = tag or self.tag()
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.send(tag.encode() + b" " + text + b"\r\n")
        return self.response(tag)

    def ok(self, text):
        r = self.cmd(text)
        assert r.status == "OK", (text, r)
        return r

    def starttls(self):
        r = self.cmd("STARTTLS")
        assert r.status == "OK", r
        self.wrap_tls()
        return r

    def login(self, user, password):
        return self.ok("LOGIN %s %s" % (quote(user), quote(password)))

    def auth_plain(self, user, password):
        tok = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        return self.cmd("AUTHENTICATE PLAIN " + tok)


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imaps(t, user=None):
    """An imaplib client on the imaps port, logged in when user is given."""
    c = imaplib.IMAP4_SSL("127.0.0.1", t.ports["imaps"], ssl_context=client_ssl_context(),
                          timeout=T(15))
    if user:
        c.login(user, t.passwords[user])
    return c


def raw_login(t, user, tls=True):
    c = RawIMAP(t.ports["imaps"], tls=True)
    c.login(user, t.passwords[user])
    return c


# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def it(tern_bin):
    """One server for the module, with imap (STARTTLS) and imaps listeners; cleartext
    login on loopback is off, as in production.  Failures from every test come from
    127.0.0.1, so the throttle is set high here and tested on its own server."""
    t = _running(Tern(listeners=imap_listeners(), smtp={"auth_max_failures": "1000"}))
    yield t
    _finish(t)


def deliver(t, to=DEMO, subject=None):
    msg = make_message(subject=subject or uniq("subj"), to=to)
    t.send(msg, to=(to,))
    return msg


def fresh_user(t):
    addr = "%s@example.test" % uniq("u")
    t.add_user(addr)
    return addr


# ---- greeting, capabilities, STARTTLS ---------------------------------------------------

def caps_of(line):
    m = re.search(rb"\[CAPABILITY ([^\]]*)\]", line)
    assert m, line
    return m.group(1).decode().split()


def test_greeting_and_capabilities_before_and_after_starttls(it):
    with RawIMAP(it.ports["imap"]) as c:
        assert c.greeting.startswith(b"* OK [CAPABILITY "), c.greeting
        assert c.greeting.endswith(HOSTNAME.encode() + b" IMAP4rev2 ready"), c.greeting
        caps = caps_of(c.greeting)
        assert "IMAP4rev2" in caps and "IMAP4rev1" in caps
        assert "STARTTLS" in caps and "LOGINDISABLED" in caps
        assert not [x for x in caps if x.startswith("AUTH=")], caps
        r = c.ok("CAPABILITY")
        assert r.find("CAPABILITY") and "LOGINDISABLED" in r.find("CAPABILITY")[0].decode()
        # LOGIN and AUTHENTICATE are refused in cleartext, without looking at the password.
        r = c.cmd('LOGIN "%s" "%s"' % (DEMO, it.passwords[DEMO]))
        assert r.status == "NO" and "[PRIVACYREQUIRED]" in r.text, r
        r = c.cmd("AUTHENTICATE PLAIN " + base64.b64encode(b"\0a\0b").decode())
        assert r.status == "NO" and "[PRIVACYREQUIRED]" in r.text, r
        c.starttls()
        caps = c.ok("CAPABILITY").find("CAPABILITY")[0].decode().split()[1:]
        assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps
        assert "AUTH=PLAIN" in caps and "SASL-IR" in caps
        for cap in ("LITERAL+", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "LIST-EXTENDED",
                    "LIST-STATUS", "STATUS=SIZE", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT",
                    "ENABLE", "ID", "NAMESPACE", "UNSELECT", "APPENDLIMIT=1048576"):
            assert cap in caps, cap
        r = c.cmd("STARTTLS")
        assert r.status == "BAD", r
        r = c.login(DEMO, it.passwords[DEMO])
        caps = caps_of(r.tagged)
        assert not [x for x in caps if x.startswith("AUTH=")] and "STARTTLS" not in caps
        c.ok("LOGOUT")


def test_starttls_discards_pipelined_input(it):
    with RawIMAP(it.ports["imap"]) as c:
        c.send("a STARTTLS\r\nb CAPABILITY\r\n")
        assert c.line() == b"a OK Begin TLS negotiation now"
        c.wrap_tls()  # asserts that nothing answered "b CAPABILITY" in clear text
        r = c.cmd("NOOP")
        assert r.status == "OK"
        assert r.untagged == [], r  # nothing answers "b CAPABILITY"


def test_imaps_greeting_allows_login(it):
    with RawIMAP(it.ports["imaps"], tls=True) as c:
        caps = caps_of(c.greeting)
        assert "AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps and "STARTTLS" not in caps


# ---- login -----------------------------------------------------------------------------

def test_login_and_authenticate_plain(it):
    pw = it.passwords[DEMO]
    with RawIMAP(it.ports["imaps"], tls=True) as c:
        r = c.login(DEMO, pw)
        assert "[CAPABILITY " in r.text and "Logged in" in r.text
        assert c.cmd("LOGIN a b").status == "BAD"  # already logged in
        c.ok("LOGOUT")
    # SASL-IR
    with RawIMAP(it.ports["imaps"], tls=True) as c:
        r = c.auth_plain(DEMO, pw)
        assert r.status == "OK", r
        c.ok("SELECT INBOX")
    # "+ " continuation
    with RawIMAP(it.ports["imaps"], tls=True) as c:
        c.send("a AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ "
        c.send(base64.b64encode(b"\0" + DEMO.encode() + b"\0" + pw.encode()) + b"\r\n")
        line = c.line()
        assert line.startswith(b"a OK "), line
    # "*" cancels
    with RawIMAP(it.ports["imaps"], tls=True) as c:
        c.send("a AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ "
        c.send("*\r\n")
        assert c.line().startswith(b"a BAD ")
        assert c.cmd("NOOP").status == "OK"
        r = c.cmd("AUTHENTICATE CRAM-MD5")
        assert r.status == "NO", r
    # imaplib, as a real client uses it
    m = imaps(it, DEMO)
    assert m.state == "AUTH"
    m.logout()
    events = it.events("login", user=DEMO)
    assert events, it.log_text()[-3000:]


def test_wrong_password_and_unknown_user_get_the_same_reply(it):
    with RawIMAP(it.ports["imaps"], tls=True) as c:
        r1 = c.cmd('LOGIN "%s" "wrong-password"' % DEMO)
        r2 = c.cmd('LOGIN "nobody@example.test" "wrong-password"')
        r3 = c.auth_plain("nobody@example.test", "x")
        assert r1.status == r2.status == r3.status == "NO"
        assert r1.text == r2.text == r3.text == "NO [AUTHENTICATIONFAILED] Invalid credentials"
        # still usable
        c.login(DEMO, it.passwords[DEMO])
    fails = it.events("login_failed")
    assert len(fails) >= 3
    assert "wrong-password" not in it.log_text()


def test_throttle_after_failures(make_tern):
    t = make_tern(listeners=imap_listeners(),
                  smtp={"auth_max_failures": "3", "auth_failure_window": "10m"})
    with RawIMAP(t.ports["imaps"], tls=True) as c:
        for _ in range(3):
            r = c.cmd('LOGIN "%s" "bad"' % DEMO)
            assert "[AUTHENTICATIONFAILED]" in r.text, r
        # Even the right password is not checked now.
        r = c.cmd('LOGIN "%s" "%s"' % (DEMO, t.passwords[DEMO]))
        assert r.status == "NO" and "[UNAVAILABLE]" in r.text, r
        r = c.auth_plain(BOB, t.passwords[BOB])
        assert r.status == "NO" and "[UNAVAILABLE]" in r.text, r
    # The throttle is shared by the workers: a new connection is refused as well.
    with RawIMAP(t.ports["imaps"], tls=True) as c:
        r = c.cmd('LOGIN "%s" "%s"' % (BOB, t.passwords[BOB]))
        assert "[UNAVAILABLE]" in r.text, r


def test_logout(it):
    with raw_login(it, DEMO) as c:
        r = c.cmd("LOGOUT")
        assert r.status == "OK"
        assert r.find("BYE")
        assert c.is_closed()


# ---- SELECT / EXAMINE -------------------------------------------------------------------

def test_select_and_examine_responses(it):
    user = fresh_user(it)
    deliver(it, to=user)
    deliver(it, to=user)
    it.wait_message(user, b"Subject:", count=2)
    with raw_login(it, user) as c:
        r = c.ok("SELECT INBOX")
        assert r.text.startswith("OK [READ-WRITE]"), r
        flags = r.find("FLAGS")[0].decode()
        for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"):
            assert f in flags
        perm = [u for u in r.untagged if b"[PERMANENTFLAGS" in u][0]
        assert b"\\*" in perm
        assert b"2 EXISTS" in r.untagged
        assert b"0 RECENT" in r.untagged  # an IMAP4rev1 client
        assert [u for u in r.untagged if u.startswith(b"OK [UNSEEN 1]")]
        validity = int(re.search(rb"\[UIDVALIDITY (\d+)\]", b"\n".join(r.untagged)).group(1))
        assert validity > 0
        assert [u for u in r.untagged if u.startswith(b"OK [UIDNEXT 3]")], r
        assert [u for u in r.untagged if u.startswith(b"OK [HIGHESTMODSEQ ")], r
        # Another SELECT closes the first.
        r = c.ok("EXAMINE INBOX")
        assert r.untagged[0].startswith(b"OK [CLOSED]"), r
        assert r.text.startswith("OK [READ-ONLY]"), r
        assert b"OK [PERMANENTFLAGS ()] Flags permitted" in r.untagged
        r = c.cmd("STORE 1 +FLAGS (\\Seen)")
        assert r.status == "NO" and "[READ-ONLY]" in r.text, r
        r = c.cmd("EXPUNGE")
        assert r.status == "NO" and "[READ-ONLY]" in r.text, r
        # ENABLE IMAP4rev2: no RECENT/UNSEEN any more
        c.ok("UNSELECT")
        r = c.ok("ENABLE IMAP4rev2 CONDSTORE")
        assert r.find("ENABLED")[0].decode().split()[1:] == ["IMAP4rev2", "CONDSTORE"]
        r = c.ok("SELECT INBOX")
        assert not r.find("0 RECENT") and not [u for u in r.untagged if b"[UNSEEN" in u]
        assert r.find("LIST ") == [b'LIST (\\HasNoChildren) "/" "INBOX"'], r
        r = c.cmd("SELECT nosuchbox")
        assert r.status == "NO" and "[NONEXISTENT]" in r.text, r
        # the failed SELECT left no mailbox selected
        r = c.cmd("FETCH 1 FLAGS")
        assert r.status == "BAD" and "selected" in r.text, r
        r = c.ok('SELECT "inbox" (CONDSTORE)')
        assert b"2 EXISTS" in r.untagged
        c.ok("CLOSE")
        assert c.cmd("CLOSE").status == "BAD"


def test_state_rules(it):
    with RawIMAP(it.ports["imaps"], tls=True) as c:
        r = c.cmd("SELECT INBOX")
        assert r.status == "BAD" and "log in first" in r.text, r
        r = c.cmd("LIST \"\" *")
        assert r.status == "BAD"
        assert c.cmd("NOOP").status == "OK"
        assert c.cmd("ID NIL").find("ID")


# ---- mailboxes ---------------------------------------------------------------------------

def list_names(r, kind="LIST"):
    out = {}
    for u in r.find(kind + " "):
        m = re.match(rb'\w+ \(([^)]*)\) (?:"/"|NIL) (.*)$', u, re.S)
        assert m, u
        name = m.group(2)
        if name.startswith(b'"'):
            q = re.match(rb'"((?:[^"\\]|\\.)*)"', name)
            name = re.sub(rb"\\(.)", rb"\1", q.group(1))
        elif name.startswith(b"{"):
            n = int(name[1:name.index(b"}")])
            name = name.split(b"\r\n", 1)[1][:n]
        else:
            name = name.split(b" ", 1)[0]
        out[name.decode()] = m.group(1).decode().split()
    return out


def test_create_delete_rename_with_hierarchy(it):
    user = fresh_user(it)
    with raw_login(it, user) as c:
        c.ok('CREATE "Work/2026/Q1"')
        c.ok('CREATE "Work/Notes/"')  # a trailing delimiter is fine
        r = c.cmd('CREATE "Work/2026"')
        assert r.status == "NO" and "[ALREADYEXISTS]" in r.text, r
        r = c.cmd("CREATE INBOX")
        assert r.status == "NO" and "[ALREADYEXISTS]" in r.text, r
        names = list_names(c.ok('LIST "" "Work*"'))
        assert set(names) == {"Work", "Work/2026", "Work/2026/Q1", "Work/Notes"}, names
        assert "\\HasChildren" in names["Work"] and "\\HasNoChildren" in names["Work/Notes"]
        names = list_names(c.ok('LIST "" "Work/%"'))
        assert set(names) == {"Work/2026", "Work/Notes"}, names
        names = list_names(c.ok('LIST "Work/" "%"'))
        assert set(names) == {"Work/2026", "Work/Notes"}, names
        c.ok('RENAME "Work" "Jobs"')
        names = list_names(c.ok('LIST "" "*"'))
        assert "Jobs/2026/Q1" in names and "Jobs/Notes" in names and "Work" not in names, names
        r = c.cmd('RENAME "Work" "Other"')
        assert r.status == "NO" and "[NONEXISTENT]" in r.text, r
        r = c.cmd('RENAME "Jobs/Notes" "Sent"')
        assert r.status == "NO" and "[ALREADYEXISTS]" in r.text, r
        c.ok('DELETE "Jobs/2026/Q1"')
        r = c.cmd('DELETE "Jobs/2026/Q1"')
        assert r.status == "NO" and "[NONEXISTENT]" in r.text, r
        r = c.cmd("DELETE INBOX")
        assert r.status == "NO", r
        # A parent with children becomes \Noselect.
        c.ok('DELETE "Jobs"')
        names = list_names(c.ok('LIST "" "Jobs*"'))
        assert "\\Noselect" in names["Jobs"], names
        assert "Jobs/Notes" in names
        r = c.cmd('SELECT "Jobs"')
        assert r.status == "NO", r


def test_list_variants(it):
    user = fresh_user(it)
    with raw_login(it, user) as c:
        r = c.ok('LIST "" ""')
        assert r.untagged == [b'LIST (\\Noselect) "/" ""'], r
        names = list_names(c.ok('LIST "" "*"'))
        assert list(names)[0] == "INBOX"
        assert "\\Sent" in names["Sent"] and "\\Trash" in names["Trash"]
        assert "\\Drafts" in names["Drafts"] and "\\Junk" in names["Junk"]
        names = list_names(c.ok('LIST "" "inbox"'))
        assert list(names) == ["INBOX"]
        c.ok('CREATE "Receipts" (USE (\\Archive))')
        r = c.cmd('CREATE "Odd" (USE (\\Flagged))')
        assert r.status == "NO" and "[USEATTR]" in r.text, r
        names = list_names(c.ok('LIST (SPECIAL-USE) "" "*"'))
        assert "Receipts" in names and "\\Archive" in names["Receipts"]
        assert "INBOX" not in names
        names = list_names(c.ok('LIST "" "*" RETURN (SPECIAL-USE)'))
        assert "INBOX" in names and "\\Sent" in names["Sent"]
        # several patterns
        names = list_names(c.ok('LIST "" ("INBOX" "Sent" "nothing*")'))
        assert set(names) == {"INBOX", "Sent"}
        # LIST-STATUS
        deliver(it, to=user)
        it.wait_message(user, b"Subject:")
        r = c.ok('LIST "" "%" RETURN (STATUS (MESSAGES UIDNEXT SIZE))')
        st = {u for u in r.find("STATUS")}
        inbox = [u for u in st if u.startswith(b'STATUS "INBOX"')]
        assert inbox and re.search(rb"MESSAGES 1 UIDNEXT 2 SIZE \d+", inbox[0]), r
        assert len(st) == len(r.find("LIST"))
        # SUBSCRIBED selection, RECURSIVEMATCH, LSUB
        c.ok('CREATE "Lists/tern"')
        c.ok('SUBSCRIBE "Lists/tern"')
        c.ok('SUBSCRIBE "Gone"')
        r = c.ok('LIST (SUBSCRIBED) "" "*"')
        names = list_names(r)
        assert "\\Subscribed" in names["Lists/tern"]
        assert "\\NonExistent" in names["Gone"] and "\\Subscribed" in names["Gone"]
        assert "Lists" not in names
        assert "INBOX" in names  # default mailboxes are subscribed
        r = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        names = list_names(r)
        assert "Lists" in names, r
        assert [u for u in r.find("LIST") if b'"Lists" ("CHILDINFO" ("SUBSCRIBED"))' in u], r
        r = c.cmd('LIST (RECURSIVEMATCH) "" "%"')
        assert r.status == "BAD"
        names = list_names(c.ok('LIST "" "Lists*" RETURN (SUBSCRIBED CHILDREN)'))
        assert "\\Subscribed" in names["Lists/tern"] and "\\Subscribed" not in names["Lists"]
        names = list_names(c.ok('LSUB "" "*"'), "LSUB")
        assert "Lists/tern" in names and "Gone" in names and "Lists" not in names
        names = list_names(c.ok('LSUB "" "%"'), "LSUB")
        assert "\\Noselect" in names["Lists"], names
        c.ok('UNSUBSCRIBE "Lists/tern"')
        names = list_names(c.ok('LSUB "" "*"'), "LSUB")
        assert "Lists/tern" not in names
        r = c.ok("NAMESPACE")
        assert r.find("NAMESPACE") == [b'NAMESPACE (("" "/")) NIL NIL']


def test_status(it):
    user = fresh_user(it)
    deliver(it, to=user)
    it.wait_message(user, b"Subject:")
    with raw_login(it, user) as c:
        r = c.ok("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT "
                 "HIGHESTMODSEQ)")
        line = r.find("STATUS")[0].decode()
        m = re.match(r'STATUS "INBOX" \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1 '
                     r'DELETED 0 SIZE (\d+) RECENT 0 HIGHESTMODSEQ \d+\)$', line)
        assert m, line
        size = int(m.group(1))
        files = it.messages(user)
        assert size == len(files[0]), (size, len(files[0]))
        r = c.cmd("STATUS nosuch (MESSAGES)")
        assert r.status == "NO" and "[NONEXISTENT]" in r.text
        r = c.cmd("STATUS INBOX (BOGUS)")
        assert r.status == "BAD"


# ---- APPEND and literals ----------------------------------------------------------------

def test_append_with_flags_and_date_then_fetch(it):
    user = fresh_user(it)
    msg = make_message(subject="appended")
    with raw_login(it, user) as c:
        c.ok("SELECT INBOX")
        c.send('a APPEND INBOX (\\Seen $Label1) "05-Mar-2026 10:11:12 +0100" {%d}\r\n' % len(msg))
        assert c.line().startswith(b"+ ")
        c.send(msg + b"\r\n")
        r = c.response("a")
        assert r.status == "OK", r
        m = re.match(r"OK \[APPENDUID (\d+) (\d+)\] ", r.text)
        assert m, r
        uid = int(m.group(2))
        # the selected mailbox announces it
        assert b"1 EXISTS" in r.untagged, r
        r = c.ok("UID FETCH %d (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])" % uid)
        f = r.find("1 FETCH")[0]
        assert b"\\Seen" in f and b"$Label1" in f, f
        # date-day-fixed: a space before a one-digit day (RFC 9051 9)
        assert b'" 5-Mar-2026 10:11:12 +0100"' in f, f
        assert msg in f
        # LITERAL+ and MULTIAPPEND
        m2 = make_message(subject="second")
        m3 = make_message(subject="third")
        c.send(b"b APPEND Drafts (\\Draft) {%d+}\r\n%s {%d+}\r\n%s\r\n"
               % (len(m2), m2, len(m3), m3))
        r = c.response("b")
        assert r.status == "OK" and re.match(r"OK \[APPENDUID \d+ 1:2\]", r.text), r
        r = c.cmd("APPEND nosuch {%d+}\r\n%s" % (len(m2), m2.decode()))
        assert r.status == "NO" and "[TRYCREATE]" in r.text, r
        r = c.cmd('APPEND INBOX (\\Recent) {3+}\r\nabc')
        assert r.status == "BAD", r
    # imaplib
    m = imaps(it, user)
    typ, data = m.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(time.time()),
                         make_message(subject="sent-copy"))
    assert typ == "OK" and b"APPENDUID" in data[0], data
    typ, data = m.status("Sent", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0]
    m.logout()


def test_multiappend_is_all_or_nothing(it):
    """RFC 3502: when one message of a MULTIAPPEND cannot be stored, none is.  The
    second message here brings the mailbox past its keyword limit, which only the
    store's transaction finds out (after the first message's file is in cur/)."""
    user = fresh_user(it)
    m1 = make_message(subject="multi-1")
    m2 = make_message(subject="multi-2")
    kw1 = " ".join("$a%d" % i for i in range(40))
    kw2 = " ".join("$b%d" % i for i in range(40))
    with raw_login(it, user) as c:
        c.send(b"x APPEND Archive (%s) {%d+}\r\n%s (%s) {%d+}\r\n%s\r\n"
               % (kw1.encode(), len(m1), m1, kw2.encode(), len(m2), m2))
        r = c.response("x")
        assert r.status == "NO", r
        r = c.ok("STATUS Archive (MESSAGES UIDNEXT)")
        assert b"MESSAGES 0" in r.untagged[0] and b"UIDNEXT 1" in r.untagged[0], r
        r = c.ok("SELECT Archive")
        assert b"0 EXISTS" in r.untagged, r
        flags = [u for u in r.untagged if u.startswith(b"FLAGS ")][0]
        assert b"$a0" not in flags, flags  # the first message's keywords went too
        # nothing left behind in the folder
        folder = os.path.join(it.maildir(user), ".Archive")
        for sub in ("cur", "new", "tmp"):
            assert os.listdir(os.path.join(folder, sub)) == [], sub
        # and the same two with room for their keywords both go in
        c.send(b"y APPEND Archive ($a0) {%d+}\r\n%s ($b0) {%d+}\r\n%s\r\n"
               % (len(m1), m1, len(m2), m2))
        r = c.response("y")
        assert r.status == "OK" and re.match(r"OK \[APPENDUID \d+ 1:2\]", r.text), r


def test_literal_limits(it):
    with raw_login(it, DEMO) as c:
        c.send("a APPEND INBOX {999999999}\r\n")
        line = c.line()
        assert line.startswith(b"a NO [TOOBIG]"), line
        assert c.cmd("NOOP").status == "OK"
        # Not APPEND: small literals only
        c.send("b STATUS {70000}\r\n")
        assert c.line().startswith(b"b NO [TOOBIG]")
        assert c.cmd("NOOP").status == "OK"
        # A non-synchronizing literal over the limit cannot be refused: the connection ends.
        c.send("c APPEND INBOX {999999999+}\r\n" + "x" * 1000)
        assert c.is_closed()
    # Before login, literals are small.
    with RawIMAP(it.ports["imaps"], tls=True) as c:
        c.send("a LOGIN {5000}\r\n")
        assert c.line().startswith(b"a NO [TOOBIG]")
        c.send("b LOGIN {%d}\r\n" % len(DEMO))
        assert c.line().startswith(b"+ ")
        c.send(DEMO + " {%d}\r\n" % len(it.passwords[DEMO]))
        assert c.line().startswith(b"+ ")
        c.send(it.passwords[DEMO] + "\r\n")
        assert c.response("b").status == "OK"


def test_syntax_errors_and_unknown_commands(it):
    with raw_login(it, DEMO) as c:
        r = c.cmd("FROBNICATE", tag="x1")
        assert r.status == "BAD" and "Unknown command" in r.text, r
        r = c.cmd('SELECT "unterminated', tag="x2")
        assert r.status == "BAD", r
        r = c.cmd("UID LIST \"\" *", tag="x3")
        assert r.status == "BAD", r
        c.send("\r\n")  # blank lines are ignored
        c.send("*\r\n")
        assert c.line().startswith(b"* BAD"), c.buf
        r = c.cmd("FETCH 1 FLAGS", tag="x4")
        assert r.status == "BAD" and "selected" in r.text
        c.send(b"x5 NOOP\x00\r\n")
        assert c.line().startswith(b"x5 BAD")
        assert c.cmd("NOOP").status == "OK"
    # too many errors end the session
    with raw_login(it, DEMO) as c:
        c.send("".join("e%d BOGUS\r\n" % i for i in range(25)))
        lines = []
        with pytest.raises((EOFError, ConnectionResetError, socket.timeout)):
            for _ in range(40):
                lines.append(c.line())
        assert b"* BYE Too many errors" in lines, lines
    assert it.events("command_failed")


def test_pipelined_commands_answer_in_order(it):
    with raw_login(it, DEMO) as c:
        c.send("p1 NOOP\r\np2 SELECT INBOX\r\np3 STATUS Sent (MESSAGES)\r\np4 UNSELECT\r\n"
               "p5 CAPABILITY\r\n")
        tags = []
        for _ in range(200):
            line = c.line()
            if not line.startswith(b"* "):
                tags.append(line.split(b" ")[0])
            if line.startswith(b"p5 "):
                break
        assert tags == [b"p1", b"p2", b"p3", b"p4", b"p5"], tags


# ---- updates between sessions ------------------------------------------------------------

def test_idle_woken_by_delivery(it):
    user = fresh_user(it)
    with raw_login(it, user) as c:
        r = c.ok("SELECT INBOX")
        assert b"0 EXISTS" in r.untagged
        c.send("i1 IDLE\r\n")
        assert c.line() == b"+ idling"
        msg = deliver(it, to=user)
        it.wait_message(user, message_id_of(msg))
        t0 = time.monotonic()
        c.timeout = T(5)
        line = c.line()
        waited = time.monotonic() - t0
        assert line == b"* 1 EXISTS", line
        assert waited < T(1.5), waited
        c.send("DONE\r\n")
        assert c.line() == b"i1 OK IDLE terminated"
        # anything but DONE ends it with BAD
        c.send("i2 IDLE\r\n")
        assert c.line() == b"+ idling"
        c.send("NOPE\r\n")
        assert c.line() == b"i2 BAD Expected DONE"
        assert c.cmd("NOOP").status == "OK"


def two_sessions(it, n):
    """A new user whose INBOX got n messages, and two logged-in sessions of it."""
    user = fresh_user(it)
    for _ in range(n):
        deliver(it, to=user)
    it.wait_message(user, b"Subject:", count=n)
    return user, raw_login(it, user), raw_login(it, user)


def test_idle_woken_by_other_sessions(it):
    """Another session's flag change (a rename in cur/), keyword (only the index
    changes) and EXPUNGE each reach an IDLE session through the change watch: well
    before IDLE's 30 s safety poll."""
    _, a, b = two_sessions(it, 2)

    def next_fetch(seq):
        for _ in range(5):
            line = a.line()
            if line.startswith(b"* %d FETCH (" % seq):
                return line
            assert line.startswith(b"* "), line  # e.g. FLAGS for a new keyword
        raise AssertionError("no FETCH for %d" % seq)

    try:
        a.ok("SELECT INBOX")
        b.ok("SELECT INBOX")
        a.send("i1 IDLE\r\n")
        assert a.line() == b"+ idling"
        a.timeout = T(5)
        b.ok("STORE 1 +FLAGS (\\Flagged)")
        assert b"\\Flagged" in next_fetch(1)
        b.ok("STORE 2 +FLAGS ($Work)")
        assert b"$Work" in next_fetch(2)
        b.ok("STORE 1 +FLAGS (\\Deleted)")
        assert b"\\Deleted" in next_fetch(1)
        b.ok("EXPUNGE")
        assert a.line() == b"* 1 EXPUNGE"
        a.send("DONE\r\n")
        assert a.line() == b"i1 OK IDLE terminated"
    finally:
        a.close()
        b.close()


def test_two_sessions_see_each_others_changes(it):
    user, a, b = two_sessions(it, 3)
    try:
        assert b"3 EXISTS" in a.ok("SELECT INBOX").untagged
        assert b"3 EXISTS" in b.ok("SELECT INBOX").untagged
        a.ok("STORE 2 +FLAGS (\\Deleted)")
        r = b.ok("NOOP")
        f = [u for u in r.untagged if u.startswith(b"2 FETCH")]
        assert f and b"\\Deleted" in f[0], r
        a.ok("EXPUNGE")
        r = b.ok("NOOP")
        assert b"2 EXPUNGE" in r.untagged, r
        # new mail shows in both
        deliver(it, to=user)
        it.wait_message(user, b"Subject:", count=3)

        def exists(c):
            r = c.ok("NOOP")
            return [u for u in r.untagged if u.endswith(b"EXISTS")]
        got = []
        deadline = time.monotonic() + T(10)
        while not got and time.monotonic() < deadline:
            got = exists(b)
            time.sleep(0.05)
        assert got == [b"3 EXISTS"], got
        # no EXPUNGE during FETCH: it waits for the next command that may have one
        a.ok("STORE 1 +FLAGS (\\Deleted)")
        a.ok("EXPUNGE")
        r = b.ok("FETCH 1:* (FLAGS)")
        assert not [u for u in r.untagged if u.endswith(b"EXPUNGE")], r
        r = b.ok("NOOP")
        assert b"1 EXPUNGE" in r.untagged, r
        # QRESYNC: VANISHED instead of EXPUNGE
        b.ok("ENABLE QRESYNC")
        a.ok("STORE 1 +FLAGS (\\Deleted)")
        a.ok("EXPUNGE")
        r = b.ok("NOOP")
        assert [u for u in r.untagged if u.startswith(b"VANISHED ")], r
    finally:
        a.close()
        b.close()


def test_qresync_select(it):
    user = fresh_user(it)
    for _ in range(3):
        deliver(it, to=user)
    it.wait_message(user, b"Subject:", count=3)
    with raw_login(it, user) as c:
        r = c.ok("SELECT INBOX")
        validity = int(re.search(rb"\[UIDVALIDITY (\d+)\]", b"\n".join(r.untagged)).group(1))
        modseq = int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", b"\n".join(r.untagged)).group(1))
        c.ok("UID STORE 2 +FLAGS (\\Deleted)")
        c.ok("UID STORE 3 +FLAGS (\\Flagged)")
        c.ok("EXPUNGE")
        c.ok("UNSELECT")
        r = c.cmd("SELECT INBOX (QRESYNC (%d %d))" % (validity, modseq))
        assert r.status == "BAD"  # not enabled
        c.ok("ENABLE QRESYNC")
        r = c.ok("SELECT INBOX (QRESYNC (%d %d 1:3))" % (validity, modseq))
        assert b"VANISHED (EARLIER) 2" in r.untagged, r
        f = [u for u in r.untagged if b"FETCH" in u]
        assert f and b"UID 3" in f[0] and b"\\Flagged" in f[0] and b"MODSEQ" in f[0], r


# ---- mailbox names -----------------------------------------------------------------------

def test_non_ascii_mailbox_names(it):
    user = fresh_user(it)
    with raw_login(it, user) as c:
        c.ok('CREATE "Entw&APw-rfe"')  # "Entwürfe" in modified UTF-7
        names = list_names(c.ok('LIST "" "Entw*"'))
        assert "Entw&APw-rfe" in names, names
        c.ok('SELECT "Entw&APw-rfe"')
        c.ok("UNSELECT")
        r = c.cmd('CREATE "bad&name"')
        assert r.status in ("BAD", "NO"), r
        c.ok("ENABLE UTF8=ACCEPT")
        names = list_names(c.ok('LIST "" "Entw*"'))
        assert "Entwürfe" in names, names
        c.ok('CREATE "Привет"')
        r = c.ok('STATUS "Привет" (MESSAGES)')
        assert r.find("STATUS")[0].decode() == 'STATUS "Привет" (MESSAGES 0)'
    with raw_login(it, user) as c:
        names = list_names(c.ok('LIST "" "*"'))
        assert "&BB8EQAQ4BDIENQRC-" in names, names
    # on disk the store keeps UTF-8 names
    import os
    entries = os.listdir(it.maildir(user))
    assert any("Entwürfe" in e or "Entw&APw-rfe" in e for e in entries), entries


# ---- curl --------------------------------------------------------------------------------

def curl(*args):
    p = subprocess.run(["curl", "-sS", "--max-time", str(T(20))] + list(args),
                       capture_output=True, timeout=T(30))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def test_curl_imaps_and_starttls(it):
    user = fresh_user(it)
    msg = deliver(it, to=user, subject="curl-subject")
    it.wait_message(user, message_id_of(msg))
    pw = it.passwords[user]
    # LIST over implicit TLS
    rc, out, err = curl("-k", "-u", "%s:%s" % (user, pw), "imaps://127.0.0.1:%d/" % it.ports["imaps"])
    assert rc == 0, err
    assert '"INBOX"' in out and '"Sent"' in out, out
    # fetch message 1 over STARTTLS
    rc, out, err = curl("-k", "--ssl-reqd", "-u", "%s:%s" % (user, pw),
                        "imap://127.0.0.1:%d/INBOX;UID=1" % it.ports["imap"])
    assert rc == 0, err
    assert "curl-subject" in out, out
    # a wrong password fails cleanly
    rc, out, err = curl("-k", "-u", "%s:wrong" % user, "imaps://127.0.0.1:%d/" % it.ports["imaps"])
    assert rc != 0


# ---- shutdown ----------------------------------------------------------------------------

def test_shutdown_says_bye_to_idle_and_idling_sessions(make_tern):
    t = make_tern(listeners=imap_listeners())
    a = raw_login(t, DEMO)
    b = raw_login(t, BOB)
    try:
        a.ok("SELECT INBOX")
        b.ok("SELECT INBOX")
        b.send("i IDLE\r\n")
        assert b.line() == b"+ idling"
        t.terminate()
        for c in (a, b):
            c.timeout = T(10)
            assert c.line() == b"* BYE [UNAVAILABLE] Server shutting down"
            assert c.is_closed()
        assert t.wait_exit(T(15)) == 0
    finally:
        a.close()
        b.close()


def test_large_fetch_goes_out_in_steps(it):
    """A FETCH bigger than the output limit is sent in steps (IMAP_CMD_MORE and the
    connection's drained callback) while the client reads slowly; a pipelined command
    after it is answered after it."""
    user = fresh_user(it)
    bodies = []
    with raw_login(it, user) as c:
        for i in range(4):
            body = (("%d" % i) * 998 + "\r\n") * 800  # ~800 KB
            msg = make_message(subject="big-%d" % i, body=body)
            bodies.append(msg)
            c.send("a%d APPEND INBOX {%d+}\r\n" % (i, len(msg)))
            c.send(msg + b"\r\n")
            assert c.response("a%d" % i).status == "OK"
        c.ok("SELECT INBOX")
        c.send("f FETCH 1:4 (BODY.PEEK[])\r\nn NOOP\r\n")
        time.sleep(0.5)  # let the server fill the socket and wait for us
        c.timeout = T(30)
        r = c.response("f")
        assert r.status == "OK", r.tagged
        got = [u for u in r.untagged if b" FETCH " in u]
        assert len(got) == 4
        for i, u in enumerate(got):
            assert bodies[i] in u
        assert c.response("n").status == "OK"


def test_clients_vanishing_mid_command_do_not_hurt(it):
    pw = it.passwords[DEMO]
    cases = [
        'a LOGIN "%s" "%s"\r\n' % (DEMO, pw),
        "a AUTHENTICATE PLAIN\r\n",
        'a LOGIN "%s" "%s"\r\nb SELECT INBOX\r\nc IDLE\r\n' % (DEMO, pw),
        'a LOGIN "%s" "%s"\r\nb APPEND INBOX {1000+}\r\nabc' % (DEMO, pw),
        'a LOGIN "%s" "%s"\r\nb SELECT INBOX\r\nc FETCH 1:* (BODY[])\r\nd LOGOUT\r\n' % (DEMO, pw),
    ]
    for data in cases * 3:
        c = RawIMAP(it.ports["imaps"], tls=True)
        c.send(data)
        c.close()
    time.sleep(T(1))
    with raw_login(it, DEMO) as c:
        c.ok("SELECT INBOX")
        c.ok("LOGOUT")
