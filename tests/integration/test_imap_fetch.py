"""IMAP FETCH, SEARCH, STORE, COPY/MOVE and EXPUNGE (RFC 9051 6.4; BINARY 3516;
CONDSTORE/QRESYNC 7162; UIDPLUS 4315; MOVE 6851; ESEARCH 4731) against a real
`tern serve`: every FETCH item with sections and partials, \\Seen set by BODY[] and
not by BODY.PEEK, a big literal sent in steps, every SEARCH key family, ESEARCH,
STORE with UNCHANGEDSINCE, COPYUID, MOVE's untagged responses, EXPUNGE and UID
EXPUNGE, and UIDs that stay the same across sessions.

Clients: imaplib, and a small raw client (Raw, below) where the exact bytes of a
response matter.  Every test uses its own account, filled by APPEND (and once by SMTP)."""

import imaplib
import re

import pytest

from conftest import DOMAIN, RawConn, T, client_ssl_context, make_message, uniq


MIXED = (b"From: Alice <alice@example.com>\r\n"
         b"To: bob@example.com\r\n"
         b"Cc: Carol <carol@example.org>\r\n"
         b"Subject: multi part\r\n"
         b"Date: Fri, 02 Jan 2026 10:00:00 +0100\r\n"
         b"Message-ID: <mixed@test.local>\r\n"
         b"MIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
         b"\r\n"
         b"preamble\r\n"
         b"--outer\r\n"
         b"Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
         b"\r\n"
         b"--inner\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\n"
         b"\r\n"
         b"plain body with kumquat\r\n"
         b"--inner\r\n"
         b"Content-Type: text/html; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n"
         b"\r\n"
         b"<p>html body caf=C3=A9</p>\r\n"
         b"--inner--\r\n"
         b"--outer\r\n"
         b"Content-Type: application/octet-stream; name=\"bin.dat\"\r\n"
         b"Content-Disposition: attachment; filename=\"bin.dat\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n"
         b"\r\n"
         b"AAECA/8=\r\n"
         b"--outer--\r\n")

PLAIN = (b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
         b"To: mooch@owatagu.siam.edu.example\r\n"
         b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\n"
         b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
         b"Message-ID: <B27397-0100000@Blurdybloop.example>\r\n"
         b"X-Tag: orange\r\n"
         b"\r\n"
         b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n")

FORWARD = (b"From: x@example.com\r\n"
           b"To: y@example.com\r\n"
           b"Subject: fwd\r\n"
           b"Date: Sat, 03 Jan 2026 12:00:00 +0000\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n"
           b"\r\n"
           b"--b\r\n"
           b"Content-Type: text/plain\r\n"
           b"\r\n"
           b"see attached\r\n"
           b"--b\r\n"
           b"Content-Type: message/rfc822\r\n"
           b"\r\n"
           b"From: inner@example.com\r\n"
           b"Subject: inner subject\r\n"
           b"\r\n"
           b"inner body zebra\r\n"
           b"--b--\r\n")


# ---------------------------------------------------------------------------------
# clients

class Raw(RawConn):
    """Commands as bytes in, (untagged lines with literals inline, tagged line) out."""

    default_timeout = 20
    n = 0  # the last tag number

    def line(self):
        return self.read_line(literals=True)

    def cmd(self, text):
        self.n += 1
        tag = b"r%d" % self.n
        if isinstance(text, str):
            text = text.encode()
        self.send(tag + b" " + text + b"\r\n")
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return untagged, line[len(tag) + 1:]
            untagged.append(line)

    def ok(self, text):
        u, t = self.cmd(text)
        assert t.startswith(b"OK"), (text, u, t)
        return u, t


def new_user(t):
    addr = "%s@%s" % (uniq("imapf"), DOMAIN)
    t.add_user(addr)
    return addr


def login(t, addr):
    c = imaplib.IMAP4_SSL("127.0.0.1", t.imaps_port, ssl_context=client_ssl_context(),
                          timeout=T(20))
    c.login(addr, t.passwords[addr])
    return c


def raw_login(t, addr):
    r = Raw(t.imaps_port, tls=True)
    r.ok('LOGIN "%s" "%s"' % (addr, t.passwords[addr]))
    return r


def append(c, msg, box="INBOX", flags=None, date=None):
    typ, data = c.append(box, flags, date, msg)
    assert typ == "OK", data
    m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    return int(m.group(2))


def fetch_one(c, num, items):
    """FETCH through imaplib; returns {name: bytes} of the single message."""
    typ, data = c.fetch(num, items)
    assert typ == "OK", data
    return parse_fetch(data)


def parse_fetch(data):
    """imaplib's fetch answer ([(head, literal), tail, ...]) into {item: value}."""
    parts = []
    for d in data:
        if isinstance(d, tuple):
            parts.append(d[0])
            parts.append(("LIT", d[1]))
        elif d is not None:
            parts.append(d)
    out = {}
    text = b""
    for p in parts:
        if isinstance(p, tuple):
            name = re.search(rb"([A-Z0-9.]+(?:\[[^\]]*\])?(?:<\d+>)?) ~?\{\d+\}$", text).group(1)
            out[name.decode()] = p[1]
            text = b""
        else:
            text += p
            for m in re.finditer(rb"(FLAGS|MODSEQ) \(([^)]*)\)", p):
                out[m.group(1).decode()] = m.group(2)
            for m in re.finditer(rb"(UID|RFC822\.SIZE|BINARY\.SIZE\[[0-9.]*\]) (\d+)", p):
                out[m.group(1).decode()] = int(m.group(2))
            m = re.search(rb'INTERNALDATE "([^"]+)"', p)
            if m:
                out["INTERNALDATE"] = m.group(1)
            for name in (b"ENVELOPE", b"BODYSTRUCTURE", b"BODY "):
                i = p.find(name + (b" (" if name != b"BODY " else b"("))
                if i >= 0:
                    out[name.strip().decode()] = balanced(p[i + len(name.strip()) + 1:])
    return out


def balanced(s):
    depth, i, q = 0, 0, False
    while i < len(s):
        ch = s[i:i + 1]
        if q:
            if ch == b"\\":
                i += 1
            elif ch == b'"':
                q = False
        elif ch == b'"':
            q = True
        elif ch == b"(":
            depth += 1
        elif ch == b")":
            depth -= 1
            if depth == 0:
                return s[:i + 1]
        i += 1
    return s


def flagsets(untagged):
    """{seq: set of flags} of "* n FETCH (FLAGS (...))" lines."""
    out = {}
    for line in untagged:
        m = re.match(rb"\* (\d+) FETCH \(.*FLAGS \(([^)]*)\)", line)
        out[int(m.group(1))] = set(m.group(2).split())
    return out


def search(c, *criteria, uid=False):
    typ, data = (c.uid("SEARCH", *criteria) if uid else c.search(None, *criteria))
    assert typ == "OK", (criteria, data)
    return [int(x) for x in data[0].split()]


@pytest.fixture
def box(tern):
    """A fresh account with PLAIN, MIXED and FORWARD in INBOX (UIDs 1, 2, 3)."""
    addr = new_user(tern)
    c = login(tern, addr)
    for m in (PLAIN, MIXED, FORWARD):
        append(c, m)
    c.select("INBOX")
    yield tern, addr, c
    try:
        c.logout()
    except Exception:
        pass


# ---------------------------------------------------------------------------------
# FETCH

def test_fetch_simple_items(box):
    t, addr, c = box
    r = fetch_one(c, "2", "(FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE)")
    assert r["UID"] == 2
    assert r["RFC822.SIZE"] == len(MIXED)
    assert r["FLAGS"] == b""
    assert re.match(rb"\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}$", r["INTERNALDATE"])
    assert r["ENVELOPE"] == (b'("Fri, 02 Jan 2026 10:00:00 +0100" "multi part" '
                             b'(("Alice" NIL "alice" "example.com")) '
                             b'(("Alice" NIL "alice" "example.com")) '
                             b'(("Alice" NIL "alice" "example.com")) '
                             b'((NIL NIL "bob" "example.com")) '
                             b'(("Carol" NIL "carol" "example.org")) NIL NIL '
                             b'"<mixed@test.local>")')
    # the same again comes from the cache and must not differ
    assert fetch_one(c, "2", "(ENVELOPE)")["ENVELOPE"] == r["ENVELOPE"]


def test_fetch_bodystructure_and_body(box):
    t, addr, c = box
    bs = fetch_one(c, "2", "(BODYSTRUCTURE)")["BODYSTRUCTURE"]
    assert bs == (b'((("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 23 1 NIL NIL NIL NIL)'
                  b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 26 1 NIL NIL '
                  b'NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL)'
                  b'("application" "octet-stream" ("name" "bin.dat") NIL NIL "base64" 8 NIL '
                  b'("attachment" ("filename" "bin.dat")) NIL NIL) "mixed" '
                  b'("boundary" "outer") NIL NIL NIL)')
    body = fetch_one(c, "2", "(BODY)")["BODY"]
    assert body.startswith(b'((("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 23 1)')
    assert body.endswith(b' "mixed")')
    fw = fetch_one(c, "3", "(BODYSTRUCTURE)")["BODYSTRUCTURE"]
    assert b'("message" "rfc822" NIL NIL NIL "7bit" ' in fw
    assert b'(NIL "inner subject" ((NIL NIL "inner" "example.com"))' in fw
    assert fw.startswith(b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 ')
    # macros
    typ, data = c.fetch("1", "FULL")
    assert typ == "OK"
    for item in (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY ("):
        assert item in data[0], item
    typ, data = c.fetch("1", "FAST")
    assert b"ENVELOPE" not in data[0] and b"RFC822.SIZE" in data[0]


def test_fetch_sections(box):
    t, addr, c = box
    hend = MIXED.index(b"\r\n\r\n") + 4
    r = fetch_one(c, "2", "(BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1.1] "
                          "BODY.PEEK[1.2] BODY.PEEK[1.2.MIME] BODY.PEEK[2] BODY.PEEK[1])")
    assert r["BODY[]"] == MIXED
    assert r["BODY[HEADER]"] == MIXED[:hend]
    assert r["BODY[TEXT]"] == MIXED[hend:]
    assert r["BODY[1.1]"] == b"plain body with kumquat"
    assert r["BODY[1.2]"] == b"<p>html body caf=C3=A9</p>"
    assert r["BODY[1.2.MIME]"] == (b"Content-Type: text/html; charset=utf-8\r\n"
                                   b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    assert r["BODY[2]"] == b"AAECA/8="
    assert r["BODY[1]"].startswith(b"--inner\r\n") and r["BODY[1]"].endswith(b"--inner--")

    r = fetch_one(c, "2", "(BODY.PEEK[HEADER.FIELDS (Subject CC)] "
                          "BODY.PEEK[HEADER.FIELDS.NOT (From To Cc Subject Date Message-ID "
                          "MIME-Version)])")
    assert r["BODY[HEADER.FIELDS (Subject CC)]"] == (b"Cc: Carol <carol@example.org>\r\n"
                                                     b"Subject: multi part\r\n\r\n")
    assert r["BODY[HEADER.FIELDS.NOT (From To Cc Subject Date Message-ID MIME-Version)]"] == \
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'

    # partials: <origin> is echoed, the length is what is left
    r = fetch_one(c, "2", "(BODY.PEEK[1.1]<6.4> BODY.PEEK[]<0.4> BODY.PEEK[1.1]<20.100> "
                          "BODY.PEEK[1.1]<1000.5>)")
    assert r["BODY[1.1]<6>"] == b"body"
    assert r["BODY[]<0>"] == b"From"
    assert r["BODY[1.1]<20>"] == b"uat"
    assert r.get("BODY[1.1]<1000>", b"") == b""

    # message/rfc822: HEADER / TEXT / part numbers of the message inside
    r = fetch_one(c, "3", "(BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] "
                          "BODY.PEEK[2.HEADER.FIELDS (SUBJECT)] BODY.PEEK[2])")
    assert r["BODY[2.HEADER]"] == b"From: inner@example.com\r\nSubject: inner subject\r\n\r\n"
    assert r["BODY[2.TEXT]"] == b"inner body zebra"
    assert r["BODY[2.1]"] == b"inner body zebra"
    assert r["BODY[2.HEADER.FIELDS (SUBJECT)]"] == b"Subject: inner subject\r\n\r\n"
    assert r["BODY[2]"].startswith(b"From: inner@") and r["BODY[2]"].endswith(b"zebra")

    # RFC822.* forms
    r = fetch_one(c, "1", "(RFC822.HEADER)")
    assert r["RFC822.HEADER"] == PLAIN[:PLAIN.index(b"\r\n\r\n") + 4]
    # nothing so far set \Seen
    assert fetch_one(c, "1:3", "(FLAGS)")["FLAGS"] == b""


def test_fetch_nonexistent_part_is_nil(box):
    t, addr, c = box
    r = Raw(t.imaps_port, tls=True)
    r.ok('LOGIN "%s" "%s"' % (addr, t.passwords[addr]))
    r.ok("EXAMINE INBOX")
    u, _ = r.ok("FETCH 1 (BODY.PEEK[7] BODY.PEEK[1.3])")
    assert u == [b"* 1 FETCH (BODY[7] NIL BODY[1.3] NIL)"], u
    u, tagged = r.cmd("FETCH 1 (BODY.PEEK[0])")
    assert tagged.startswith(b"BAD")
    u, tagged = r.cmd("FETCH 1 (BODY.PEEK[MIME])")
    assert tagged.startswith(b"BAD")
    u, tagged = r.cmd("FETCH 1 (NOSUCHITEM)")
    assert tagged.startswith(b"BAD")
    u, tagged = r.cmd("FETCH 9 (FLAGS)")
    assert not tagged.startswith(b"OK") or u == []
    r.close()


def test_peek_does_not_set_seen_but_body_does(box):
    t, addr, c = box
    fetch_one(c, "1", "(BODY.PEEK[] BINARY.PEEK[1] RFC822.HEADER)")
    assert fetch_one(c, "1", "(FLAGS)")["FLAGS"] == b""
    r = fetch_one(c, "1", "(BODY[TEXT])")
    assert r["FLAGS"] == b"\\Seen"  # the change shows in the same FETCH
    assert fetch_one(c, "1", "(FLAGS)")["FLAGS"] == b"\\Seen"
    r = fetch_one(c, "2", "(RFC822)")
    assert r["RFC822"] == MIXED
    assert r["FLAGS"] == b"\\Seen"
    fetch_one(c, "3", "(BINARY[1])")
    assert fetch_one(c, "3", "(FLAGS)")["FLAGS"] == b"\\Seen"
    # EXAMINE: read-only, nothing is set
    c.store("1:3", "-FLAGS", "(\\Seen)")
    c.select("INBOX", readonly=True)
    fetch_one(c, "1", "(BODY[])")
    c.select("INBOX")
    assert fetch_one(c, "1", "(FLAGS)")["FLAGS"] == b""


def test_binary(box):
    t, addr, c = box
    r = Raw(t.imaps_port, tls=True)
    r.ok('LOGIN "%s" "%s"' % (addr, t.passwords[addr]))
    r.ok("EXAMINE INBOX")
    u, _ = r.ok("FETCH 2 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1.2] BINARY.SIZE[1.2])")
    assert len(u) == 1
    # NULs need literal8
    assert b"BINARY[2] ~{5}\r\n\x00\x01\x02\x03\xff" in u[0], u
    assert b"BINARY.SIZE[2] 5" in u[0]
    assert b"BINARY[1.2] {22}\r\n<p>html body caf\xc3\xa9</p>" in u[0], u
    assert b"BINARY.SIZE[1.2] 22" in u[0]
    u, _ = r.ok("FETCH 2 (BINARY.PEEK[2]<1.2>)")
    assert b"BINARY[2]<1> ~{2}\r\n\x01\x02" in u[0] or b"BINARY[2]<1> {2}\r\n\x01\x02" in u[0]
    u, tagged = r.cmd("FETCH 2 (BINARY.PEEK[1.TEXT])")
    assert tagged.startswith(b"BAD")
    r.close()


def test_uid_fetch_always_has_uid_and_modseq(box):
    t, addr, c = box
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    assert typ == "OK"
    assert [re.search(rb"UID (\d+)", d).group(1) for d in data] == [b"1", b"2", b"3"]
    typ, data = c.fetch("1", "(MODSEQ)")
    m = re.search(rb"MODSEQ \((\d+)\)", data[0])
    assert m and int(m.group(1)) > 0


def test_changedsince_and_vanished(box):
    t, addr, c = box
    r = raw_login(t, addr)
    r.ok("ENABLE QRESYNC")
    u, _ = r.ok("SELECT INBOX")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b" ".join(u)).group(1))
    r.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    u, _ = r.ok("FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % hms)
    assert len(u) == 1 and u[0].startswith(b"* 2 FETCH") and b"MODSEQ" in u[0], u
    r.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    r.ok("EXPUNGE")
    u, _ = r.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
    assert b"* VANISHED (EARLIER) 3" in u, u
    u, tagged = r.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
    assert tagged.startswith(b"BAD")
    r.close()


def test_big_message_in_steps(make_tern):
    t = make_tern(smtp={"max_message_size": "20M"})
    addr = new_user(t)
    c = login(t, addr)
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    big = (b"From: big@example.com\r\nSubject: big\r\n\r\n" +
           line * (3 * 1024 * 1024 // len(line)))
    append(c, big)
    append(c, MIXED)
    append(c, big)
    c.select("INBOX")
    typ, data = c.fetch("1:3", "(UID BODY.PEEK[])")
    assert typ == "OK"
    bodies = [d[1] for d in data if isinstance(d, tuple)]
    assert bodies == [big, MIXED, big]
    r = fetch_one(c, "3", "(BODY.PEEK[TEXT]<1000000.2000000>)")
    assert r["BODY[TEXT]<1000000>"] == big[big.index(b"\r\n\r\n") + 4:][1000000:3000000]
    assert search(c, "BODY", "ghijklmnop") == [1, 3]
    c.logout()


# ---------------------------------------------------------------------------------
# SEARCH

def test_search_keys(box):
    t, addr, c = box
    c.store("1", "+FLAGS", "(\\Flagged \\Answered)")
    c.store("2", "+FLAGS", "($Important \\Draft)")
    c.store("3", "+FLAGS", "(\\Deleted \\Seen)")
    assert search(c, "ALL") == [1, 2, 3]
    assert search(c, "FLAGGED") == [1]
    assert search(c, "UNFLAGGED") == [2, 3]
    assert search(c, "ANSWERED") == [1]
    assert search(c, "UNANSWERED") == [2, 3]
    assert search(c, "DELETED") == [3]
    assert search(c, "UNDELETED") == [1, 2]
    assert search(c, "DRAFT") == [2]
    assert search(c, "UNDRAFT") == [1, 3]
    assert search(c, "SEEN") == [3]
    assert search(c, "UNSEEN") == [1, 2]
    assert search(c, "KEYWORD", "$Important") == [2]
    assert search(c, "UNKEYWORD", "$Important") == [1, 3]
    assert search(c, "KEYWORD", "$Never") == []
    assert search(c, "NEW") == [] and search(c, "RECENT") == []
    assert search(c, "OLD") == [1, 2, 3]
    # headers
    assert search(c, "FROM", "alice") == [2]
    assert search(c, "FROM", "FOOBAR@blurdy") == [1]
    assert search(c, "TO", "mooch") == [1]
    assert search(c, "CC", "carol") == [2]
    assert search(c, "BCC", "anyone") == []
    assert search(c, "SUBJECT", "fwd") == [3]
    assert search(c, "HEADER", "X-Tag", "ORANGE") == [1]
    assert search(c, "HEADER", "X-Tag", '""') == [1]
    assert search(c, "HEADER", "Message-ID", "mixed@") == [2]
    # bodies
    assert search(c, "BODY", "kumquat") == [2]
    assert search(c, "BODY", "zebra") == [3]
    assert search(c, "TEXT", '"inner subject"') == [3]
    assert search(c, "TEXT", '"multi part"') == [2]
    assert search(c, "TEXT", "nowhere-to-be-found") == []
    # sizes
    assert search(c, "LARGER", str(len(PLAIN))) == [2, 3]
    assert search(c, "SMALLER", str(len(PLAIN) + 1)) == [1]
    # sets, UID, NOT, OR, lists
    assert search(c, "2:*") == [2, 3]
    assert search(c, "UID", "1,3") == [1, 3]
    assert search(c, "NOT", "FLAGGED") == [2, 3]
    assert search(c, "OR", "FLAGGED", "DRAFT") == [1, 2]
    assert search(c, "OR", "FROM", "alice", "BODY", "zebra") == [2, 3]
    assert search(c, "(OR SEEN DRAFT)", "NOT", "UID", "3") == [2]
    assert search(c, "NOT", "(FROM alice BODY kumquat)") == [1, 3]
    assert search(c, "UID", "2:3", uid=True) == [2, 3]
    with pytest.raises(imaplib.IMAP4.error):
        c.search(None, "NOSUCHKEY")


def test_search_dates(box):
    t, addr, c = box
    # sent dates: PLAIN 1994-02-07 (-0800), MIXED 2026-01-02, FORWARD 2026-01-03
    assert search(c, "SENTBEFORE", "1-Jan-2000") == [1]
    assert search(c, "SENTON", "7-Feb-1994") == [1]
    assert search(c, "SENTSINCE", "3-Jan-2026") == [3]
    assert search(c, "SENTSINCE", "2-Jan-2026", "SENTBEFORE", "3-Jan-2026") == [2]
    # internal dates: given at APPEND
    addr2 = new_user(t)
    c2 = login(t, addr2)
    append(c2, PLAIN, date='"05-Mar-2020 10:00:00 +0000"')
    append(c2, PLAIN, date='"06-Mar-2020 23:30:00 +0000"')
    append(c2, PLAIN, date='"07-Mar-2020 00:10:00 +0000"')
    c2.select("INBOX")
    assert search(c2, "ON", "6-Mar-2020") == [2]
    assert search(c2, "BEFORE", "6-Mar-2020") == [1]
    assert search(c2, "SINCE", "6-Mar-2020") == [2, 3]
    with pytest.raises(imaplib.IMAP4.error):
        c2.search(None, "SINCE", "32-Mar-2020")
    c2.logout()


def test_search_charset_utf8_rfc2047(box):
    t, addr, c = box
    r = raw_login(t, addr)
    r.ok("SELECT INBOX")
    needle = "grüße aus köln".encode("utf-8")
    u, _ = r.ok(b"SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n%s" % (len(needle), needle))
    assert u == [b"* SEARCH 1"], u
    u, _ = r.ok(b'SEARCH CHARSET UTF-8 BODY "caf\xc3\xa9"')
    assert u == [b"* SEARCH 2"], u
    u, _ = r.ok(b"SEARCH CHARSET US-ASCII SUBJECT fwd")
    assert u == [b"* SEARCH 3"], u
    u, tagged = r.cmd(b"SEARCH CHARSET KOI8-R SUBJECT fwd")
    assert tagged.startswith(b"NO [BADCHARSET"), tagged
    r.close()


def test_esearch_return(box):
    t, addr, c = box
    r = raw_login(t, addr)
    r.ok("SELECT INBOX")
    u, _ = r.cmd("SEARCH RETURN (MIN MAX COUNT ALL) ALL")
    assert u == [b'* ESEARCH (TAG "r3") MIN 1 MAX 3 COUNT 3 ALL 1:3'], u
    u, _ = r.cmd("UID SEARCH RETURN (COUNT) FROM alice")
    assert u == [b'* ESEARCH (TAG "r4") UID COUNT 1'], u
    u, _ = r.cmd("SEARCH RETURN () OR UID 1 UID 3")
    assert u == [b'* ESEARCH (TAG "r5") ALL 1,3'], u
    u, _ = r.cmd("SEARCH RETURN (MIN MAX) SUBJECT nothing-like-this")
    assert u == [b'* ESEARCH (TAG "r6")'], u
    u, _ = r.ok("SEARCH MODSEQ 1")
    assert re.match(rb"\* SEARCH 1 2 3 \(MODSEQ \d+\)$", u[0]), u
    # IMAP4rev2 sessions get ESEARCH for plain SEARCH
    r.ok("ENABLE IMAP4rev2")
    u, _ = r.cmd("UID SEARCH BODY kumquat")
    assert u == [b'* ESEARCH (TAG "r9") UID ALL 2'], u
    r.close()


# ---------------------------------------------------------------------------------
# STORE

def test_store_variants(box):
    t, addr, c = box
    r = raw_login(t, addr)
    r.ok("SELECT INBOX")
    u, _ = r.ok("STORE 1 FLAGS (\\Seen $Work)")
    assert u == [b"* 1 FETCH (FLAGS (\\Seen $Work))"], u
    u, _ = r.ok("STORE 1:2 +FLAGS (\\Flagged)")
    assert flagsets(u) == {1: {b"\\Seen", b"\\Flagged", b"$Work"}, 2: {b"\\Flagged"}}, u
    u, _ = r.ok("STORE 1 -FLAGS ($Work \\Seen)")
    assert u == [b"* 1 FETCH (FLAGS (\\Flagged))"], u
    u, _ = r.ok("STORE 2 +FLAGS.SILENT (\\Answered)")
    assert u == [], u
    u, _ = r.ok("UID STORE 3 +FLAGS \\Draft")
    assert u == [b"* 3 FETCH (FLAGS (\\Draft) UID 3)"], u
    u, _ = r.ok("FETCH 1:3 (FLAGS)")
    assert flagsets(u) == {1: {b"\\Flagged"}, 2: {b"\\Answered", b"\\Flagged"},
                           3: {b"\\Draft"}}, u
    u, tagged = r.cmd("STORE 1 +FLAGS (\\Recent)")
    assert tagged.startswith(b"BAD"), tagged
    u, tagged = r.cmd("STORE 1 REPLACE (\\Seen)")
    assert tagged.startswith(b"BAD"), tagged
    # read-only
    r.ok("EXAMINE INBOX")
    u, tagged = r.cmd("STORE 1 +FLAGS (\\Seen)")
    assert tagged.startswith(b"NO"), tagged
    r.close()


def test_store_unchangedsince(box):
    t, addr, c = box
    r = raw_login(t, addr)
    u, _ = r.ok("SELECT INBOX (CONDSTORE)")
    u, _ = r.ok("FETCH 1:3 (MODSEQ)")
    ms = [int(re.search(rb"MODSEQ \((\d+)\)", x).group(1)) for x in u]
    # message 2 changes: an UNCHANGEDSINCE from before fails for it only
    r.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    u, tagged = r.ok("STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS ($Checked)" % max(ms))
    assert tagged.startswith(b"OK [MODIFIED 2]"), tagged
    got = {int(x.split()[1]): x for x in u}
    assert set(got) == {1, 3}, u
    assert b"MODSEQ (" in got[1] and b"$Checked" in got[1]
    u, tagged = r.ok("UID STORE 1 (UNCHANGEDSINCE 0) +FLAGS ($X)")
    assert tagged.startswith(b"OK [MODIFIED 1]"), tagged
    # .SILENT under CONDSTORE still reports the new MODSEQ
    u, _ = r.ok("STORE 3 +FLAGS.SILENT (\\Seen)")
    assert len(u) == 1 and re.match(rb"\* 3 FETCH \(MODSEQ \(\d+\)\)$", u[0]), u
    r.close()


# ---------------------------------------------------------------------------------
# COPY / MOVE / EXPUNGE

def test_copy_and_move(box):
    t, addr, c = box
    r = raw_login(t, addr)
    u, _ = r.ok("SELECT INBOX")
    uv_archive = None
    u, tagged = r.ok("COPY 1:2 Archive")
    m = re.match(rb"OK \[COPYUID (\d+) 1:2 (\d+):(\d+)\]", tagged)
    assert m, tagged
    uv_archive = int(m.group(1))
    u, tagged = r.cmd("COPY 1 NoSuchBox")
    assert tagged.startswith(b"NO [TRYCREATE]"), tagged
    u, tagged = r.ok("UID COPY 99 Archive")
    assert b"COPYUID" not in tagged
    # MOVE: COPYUID untagged first, then the expunge, then the tagged OK
    u, tagged = r.ok("MOVE 2 Trash")
    assert re.match(rb"\* OK \[COPYUID \d+ 2 \d+\]", u[0]), u
    assert u[1:] == [b"* 2 EXPUNGE"], u
    u, tagged = r.ok("UID MOVE 3 Trash")
    assert re.match(rb"\* OK \[COPYUID \d+ 3 \d+\]", u[0]), u
    assert u[1:] == [b"* 2 EXPUNGE"], u
    u, _ = r.ok("FETCH 1:* (UID)")
    assert u == [b"* 1 FETCH (UID 1)"]
    u, _ = r.ok("STATUS Archive (MESSAGES UIDVALIDITY)")
    assert b"MESSAGES 2" in u[0] and (b"UIDVALIDITY %d" % uv_archive) in u[0], u
    r.ok("SELECT Trash")
    u, _ = r.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert len(u) == 2 and b"multi part" in u[0] and b"fwd" in u[1], u
    r.close()


def test_move_under_qresync_sends_vanished(box):
    t, addr, c = box
    r = raw_login(t, addr)
    r.ok("ENABLE QRESYNC")
    r.ok("SELECT INBOX")
    u, _ = r.ok("MOVE 1,3 Trash")
    assert re.match(rb"\* OK \[COPYUID \d+ 1,3 \d+(:|,)\d+\]", u[0]), u
    assert u[1:] == [b"* VANISHED 1,3"], u
    r.close()


def test_expunge_and_uid_expunge(box):
    t, addr, c = box
    for m in (PLAIN, PLAIN):
        append(c, m)
    c.select("INBOX")
    r = raw_login(t, addr)
    r.ok("SELECT INBOX")
    r.ok("STORE 2,3,5 +FLAGS.SILENT (\\Deleted)")
    # UID EXPUNGE removes only the named ones
    u, _ = r.ok("UID EXPUNGE 3:4")
    assert u == [b"* 3 EXPUNGE"], u
    u, _ = r.ok("EXPUNGE")
    assert u == [b"* 4 EXPUNGE", b"* 2 EXPUNGE"], u
    u, _ = r.ok("FETCH 1:* (UID)")
    assert u == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 4)"], u
    r.ok("EXAMINE INBOX")
    u, tagged = r.cmd("EXPUNGE")
    assert tagged.startswith(b"NO"), tagged
    r.close()
    # the other session learns of it (imaplib)
    typ, data = c.noop()
    assert typ == "OK"
    assert search(c, "ALL", uid=True) == [1, 4]


def test_uids_stable_across_sessions(box):
    t, addr, c = box
    uids = search(c, "ALL", uid=True)
    typ, data = c.status("INBOX", "(UIDVALIDITY UIDNEXT)")
    c.logout()
    c2 = login(t, addr)
    c2.select("INBOX")
    assert search(c2, "ALL", uid=True) == uids == [1, 2, 3]
    typ, data2 = c2.status("INBOX", "(UIDVALIDITY UIDNEXT)")
    assert data == data2
    r = fetch_one(c2, "2", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert r["UID"] == 2 and b"multi part" in r["BODY[HEADER.FIELDS (SUBJECT)]"]
    c2.logout()


def test_delivered_by_smtp(tern):
    addr = new_user(tern)
    marker = uniq("smtp")
    msg = make_message(subject=marker, to=addr, body="Body %s\r\n" % marker)
    tern.send(msg, to=(addr,))
    tern.wait_message(addr, marker, timeout=T(20))
    c = login(tern, addr)
    c.select("INBOX")
    assert search(c, "SUBJECT", marker) == [1]
    assert search(c, "BODY", marker) == [1]
    r = fetch_one(c, "1", "(RFC822.SIZE BODY.PEEK[])")
    assert r["BODY[]"].endswith(msg)
    assert r["RFC822.SIZE"] == len(r["BODY[]"])
    c.logout()
