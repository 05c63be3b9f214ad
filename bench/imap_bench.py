#!/usr/bin/python3
"""Helpers for bench/imap.sh (Python 3 standard library only).

Subcommands:
  gen --out DIR --count N --seed S      generate the Maildir messages (DIR/cur) and
                                        DIR/manifest.jsonl, one line per message
  layout --src DIR --size N --dest MD   hard-link the first N messages into the Maildir
                                        MD ({cur,new,tmp}); print the expected results
  round ...                             one round of timed IMAP/POP3 operations against
                                        one server (see cmd_round)
  idle ...                              N logged-in IMAP sessions with INBOX selected,
                                        summed RSS/PSS of the server before and after
  report RESULTS.jsonl MD               print the results table, write it as Markdown

The timing client speaks IMAP and POP3 over a plain socket and only looks for the end
of each reply while the clock runs (the tagged completion, or POP3's "." line): at
100,000 messages imaplib's per-line parsing in Python would cost more time than the
servers' work (about 5-10 us a line), so the replies are parsed, checked and counted
only after the clock has stopped (literals included).

Every wait is bounded: socket timeouts, and an alarm on each subcommand.
"""

import argparse
import base64
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (tree_memory, mem_available_kib)

GEN_VERSION = 1

# ---------------------------------------------------------------- message generator

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "if so no will more what out up into do than can other its only new some could time "
    "these two may then first any like now my such over also our after most me made "
    "quarterly report meeting agenda invoice attached please review budget project deadline "
    "schedule release notes draft proposal contract customer support ticket server backup "
    "network migration database schema performance latency throughput incident postmortem "
    "thanks regards cheers tomorrow monday friday morning afternoon office travel hotel "
    "flight conference slides presentation summary action items follow question answer "
    "update status blocker risk milestone roadmap feature request bug fix patch review "
    "merge branch deploy staging production rollback monitoring alert dashboard metrics "
    "garden recipe weekend family photos birthday dinner lunch coffee book movie concert"
).split()
UTF8_WORDS = ["café", "naïve", "Zürich", "Malmö", "façade", "résumé", "Ærø", "smörgåsbord",
              "jalapeño", "Kraków", "Łódź", "São Paulo", "Straße", "crème brûlée"]

# The SEARCH FROM needle: one sender among ~50, about 3% of the messages; no other From
# contains the string.  The SEARCH TEXT needle: a made-up word in the plain-text body
# (7bit, never encoded) of about 1.5% of the messages, never in a header.
FROM_NEEDLE = "nadia.okonkwo"
FROM_NEEDLE_SENDER = ("Nadia Okonkwo", "nadia.okonkwo@partners.example.net")
FROM_NEEDLE_SHARE = 0.03
TEXT_NEEDLE = "quokkafjord"
TEXT_NEEDLE_SHARE = 0.015

FIRST = ["Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
         "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
         "Yvonne", "Zoe", "Liam", "Emma", "Noah", "Ava", "Lucas", "Mia", "Hugo", "Ines",
         "Kenji", "Amara", "Priya", "Mateo", "Sofia", "Omar", "Lena", "Tariq", "Chen"]
LAST = ["Smith", "Jones", "Garcia", "Miller", "Davis", "Martin", "Bernard", "Dubois",
        "Müller", "Schmidt", "Rossi", "Russo", "Tanaka", "Sato", "Kim", "Lee", "Nguyen",
        "Silva", "Santos", "Kowalski", "Novak", "Horvat", "Jensen", "Hansen", "Ivanova"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "lists.example.org",
           "university.example.edu", "shop.example.com", "news.example.net"]
HOST = "mx1.example.test"


def _senders():
    rng = random.Random(4711)
    out = []
    for i in range(48):
        f, l = FIRST[i % len(FIRST)], rng.choice(LAST)
        local = "%s.%s%s" % (f.lower(), l.lower().replace("ü", "ue"), "" if i < 30 else str(i))
        out.append(("%s %s" % (f, l), "%s@%s" % (local, DOMAINS[i % len(DOMAINS)])))
    # A few senders without a display name, and mailing-list/automated senders.
    out += [("", "noreply@billing.example.com"), ("", "alerts@monitoring.example.net"),
            ("Example Newsletter", "newsletter@news.example.net"),
            ("GitHub-like Notifications", "notifications@code.example.org")]
    for _, a in out:
        assert FROM_NEEDLE not in a
    return out


SENDERS = _senders()


def _b64(rng, n):
    """n random bytes, base64 in 76-column CRLF lines."""
    return base64.encodebytes(rng.randbytes(n)).replace(b"\n", b"\r\n")


def _encode_word(text, rng):
    """RFC 2047 encoded-word(s) for text (UTF-8 or, when it fits, ISO-8859-1; B or Q)."""
    try:
        raw, cs = text.encode("iso-8859-1"), "ISO-8859-1"
        if rng.random() < 0.5:
            raw, cs = text.encode("utf-8"), "UTF-8"
    except UnicodeEncodeError:
        raw, cs = text.encode("utf-8"), "UTF-8"
    words, chunk = [], 30
    if rng.random() < 0.5:
        for i in range(0, len(raw), chunk):
            part = raw[i:i + chunk]
            words.append("=?%s?B?%s?=" % (cs, base64.b64encode(part).decode()))
    else:
        for i in range(0, len(raw), chunk):
            part = raw[i:i + chunk]
            q = "".join(chr(b) if (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122)
                        else "_" if b == 32 else "=%02X" % b for b in part)
            words.append("=?%s?Q?%s?=" % (cs, q))
    return "\r\n ".join(words)


def _text_lines(rng, nbytes, needle=False, utf8=False):
    """Plain text of about nbytes as a list of str lines (<= 76 columns)."""
    lines, size, line, line_len = [], 0, [], 0
    target = max(200, nbytes)
    needle_at = rng.randrange(max(1, target // 2)) if needle else -1
    choice, random_ = rng.choice, rng.random
    while size < target:
        w = choice(WORDS)
        if utf8 and random_() < 0.03:
            w = choice(UTF8_WORDS)
        if needle_at >= 0 and size >= needle_at:
            w, needle_at = TEXT_NEEDLE, -1
        if line_len + len(w) > 72:
            lines.append(" ".join(line))
            size += len(lines[-1]) + 2
            line, line_len = [], 0
            if random_() < 0.08:
                lines.append("")
                size += 2
        line.append(w)
        line_len += len(w) + 1
    lines.append(" ".join(line) + ".")
    if needle_at >= 0:                       # target reached before the needle: add it
        lines.append(TEXT_NEEDLE)
    return lines


_QP = ["=%02X" % b if b == 61 or b > 126 or (b < 32 and b != 9) else chr(b) for b in range(256)]


def _qp(text):
    """Quoted-printable (soft line breaks at 76) of a UTF-8 text, CRLF lines."""
    out = []
    for line in text.split("\n"):
        parts, cur = [], 0
        for b in line.encode("utf-8"):
            c = _QP[b]
            if cur + len(c) > 75:
                parts.append("=\r\n")
                cur = 0
            parts.append(c)
            cur += len(c)
        enc = "".join(parts)
        if enc.endswith(" ") or enc.endswith("\t"):
            enc = enc[:-1] + "=%02X" % ord(enc[-1])
        out.append(enc)
    return "\r\n".join(out)


def _text_part(rng, nbytes, needle, html=False):
    """(headers, body) of a text part.  The needle, when asked for, goes into a 7bit
    plain part only, so that it is found as is (no decoding needed) in every server."""
    utf8 = not needle and rng.random() < 0.3
    lines = _text_lines(rng, nbytes, needle=needle and not html, utf8=utf8)
    if html:
        body = "<html><head><meta charset=\"utf-8\"></head><body>\n" + "\n".join(
            "<p>%s</p>" % l for l in lines if l) + "\n</body></html>"
        ctype = "text/html"
    else:
        body, ctype = "\n".join(lines), "text/plain"
    if utf8:
        return ("Content-Type: %s; charset=\"utf-8\"\r\nContent-Transfer-Encoding: "
                "quoted-printable\r\n" % ctype, _qp(body))
    if not html and not needle and rng.random() < 0.1:
        return ("Content-Type: %s; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: "
                "base64\r\n" % ctype,
                base64.encodebytes(body.replace("\n", "\r\n").encode()).decode()
                .replace("\n", "\r\n").rstrip("\r\n"))
    return ("Content-Type: %s; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: 7bit\r\n"
            % ctype, body.replace("\n", "\r\n"))


ATTACH_TYPES = [("application/pdf", "pdf"), ("image/jpeg", "jpg"), ("image/png", "png"),
                ("application/zip", "zip"),
                ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx")]


def make_message(seed, i):
    """The i-th message (0-based): (file name, bytes, meta).  Depends only on (seed, i),
    so every message can be made on its own and the first N are the same for every N."""
    rng = random.Random(seed * 1000003 + i)
    t = 1700000000 + i * 300 + rng.randrange(0, 240)
    r = rng.random()
    if r < 0.02:
        kind, size = "large", int(100 * 1024 * (10 ** rng.random()))     # 100 KiB - 1 MiB
    elif r < 0.10:
        kind, size = "medium", rng.randrange(20 * 1024, 100 * 1024)
    else:
        kind, size = "small", rng.randrange(2 * 1024, 20 * 1024)
    from_match = rng.random() < FROM_NEEDLE_SHARE
    text_match = rng.random() < TEXT_NEEDLE_SHARE
    name, addr = FROM_NEEDLE_SENDER if from_match else rng.choice(SENDERS)
    if name and rng.random() < 0.15:
        disp = _encode_word(name + " " + rng.choice(["Ré", "Ø", "Ü", "ñ"]), rng)
    elif name:
        disp = '"%s"' % name if "." in name else name
    else:
        disp = ""
    from_hdr = "%s <%s>" % (disp, addr) if disp else addr
    subj_words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 12)))
    if rng.random() < 0.25:
        subject = _encode_word(subj_words.capitalize() + " " + rng.choice(UTF8_WORDS), rng)
    else:
        subject = ("Re: " if rng.random() < 0.3 else "") + subj_words.capitalize()
        if len(subject) > 60 and rng.random() < 0.5:
            cut = subject.rfind(" ", 0, 50)
            subject = subject[:cut] + "\r\n" + subject[cut:]    # folded
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
    mid = "<%016x.%d@%s>" % (rng.getrandbits(64), i, addr.split("@")[1])
    hdr = [
        "Return-Path: <%s>" % addr,
        "Delivered-To: demo@example.test",
        "Received: from mail.%s (mail.%s [192.0.2.%d])\r\n\tby %s (tern) with ESMTPS id "
        "%012X\r\n\tfor <demo@example.test>; %s" % (addr.split("@")[1], addr.split("@")[1],
                                                    rng.randrange(1, 255), HOST,
                                                    rng.getrandbits(48), date),
        "Date: %s" % date,
        "From: %s" % from_hdr,
        "To: Demo User <demo@example.test>",
    ]
    if rng.random() < 0.2:
        hdr.append("Cc: %s" % ", ".join("%s <%s>" % s if s[0] else s[1]
                                        for s in rng.sample(SENDERS, rng.randrange(1, 4))))
    hdr.append("Subject: %s" % subject)
    hdr.append("Message-ID: %s" % mid)
    if rng.random() < 0.3:
        ref = "<%016x@%s>" % (rng.getrandbits(64), rng.choice(DOMAINS))
        hdr += ["In-Reply-To: %s" % ref, "References: %s" % ref]
    if "lists." in addr or "news." in addr:
        hdr.append("List-Id: <announce.%s>" % addr.split("@")[1])
    hdr.append("MIME-Version: 1.0")
    head_len = sum(len(h) + 2 for h in hdr) + 2

    structure = rng.random()
    parts_budget = max(400, size - head_len - 300)
    boundary = "=_b%016x" % rng.getrandbits(64)
    if kind == "small" and structure < 0.6:
        ph, pb = _text_part(rng, parts_budget, text_match)
        hdr.append(ph.rstrip("\r\n"))
        body = pb + "\r\n"
        shape = "text"
    elif kind == "small":
        b2 = "=_a%016x" % rng.getrandbits(64)
        ph, pb = _text_part(rng, parts_budget * 2 // 5, text_match)
        hh, hb = _text_part(rng, parts_budget * 3 // 5 - 200, False, html=True)
        hdr.append("Content-Type: multipart/alternative; boundary=\"%s\"" % b2)
        body = ("This is a multi-part message in MIME format.\r\n\r\n--%s\r\n%s\r\n%s\r\n"
                "--%s\r\n%s\r\n%s\r\n--%s--\r\n" % (b2, ph, pb, b2, hh, hb, b2))
        shape = "alternative"
    else:
        text_size = rng.randrange(800, 6000)
        ph, pb = _text_part(rng, text_size, text_match)
        if rng.random() < 0.5:
            b2 = "=_a%016x" % rng.getrandbits(64)
            hh, hb = _text_part(rng, text_size, False, html=True)
            first = ("Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n--%s\r\n%s"
                     "\r\n%s\r\n--%s\r\n%s\r\n%s\r\n--%s--\r\n" % (b2, b2, ph, pb, b2, hh, hb, b2))
        else:
            first = "%s\r\n%s\r\n" % (ph, pb)
        n_att = 1 if rng.random() < 0.7 else 2
        att_total = max(1024, size - head_len - len(first) - 600)
        atts = []
        for k in range(n_att):
            ctype, ext = rng.choice(ATTACH_TYPES)
            raw_len = int(att_total / n_att * 3 / 4 * 0.97)
            fname = "%s-%d.%s" % (rng.choice(WORDS), k + 1, ext)
            if rng.random() < 0.2:       # RFC 2231 parameter, UTF-8 percent-encoded
                fname_hdr = "filename*=utf-8''r%%C3%%A9sum%%C3%%A9-%d.%s" % (k + 1, ext)
            else:
                fname_hdr = 'filename="%s"' % fname
            atts.append("Content-Type: %s; name=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n"
                        "Content-Disposition: attachment; %s\r\n\r\n%s" % (
                            ctype, fname, fname_hdr, _b64(rng, raw_len).decode()))
        hdr.append("Content-Type: multipart/mixed; boundary=\"%s\"" % boundary)
        body = "This is a multi-part message in MIME format.\r\n\r\n--%s\r\n%s" % (boundary, first)
        for a in atts:
            body += "--%s\r\n%s" % (boundary, a)
        body += "--%s--\r\n" % boundary
        shape = "mixed"
    data = ("\r\n".join(hdr) + "\r\n\r\n" + body).encode("utf-8")
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert TEXT_NEEDLE.encode() not in data[:data.find(b"\r\n\r\n")]
    fr = rng.random()
    flags = "S" if fr < 0.60 else "FS" if fr < 0.62 else "RS" if fr < 0.63 else ""
    fname = "%d.M%dP%dQ%d.%s,S=%d:2,%s" % (t, rng.randrange(1000000), rng.randrange(1000, 99999),
                                           i + 1, HOST, len(data), flags)
    meta = {"i": i, "name": fname, "size": len(data), "t": t, "kind": kind, "shape": shape,
            "flags": flags, "from_match": from_match, "text_match": text_match}
    return fname, data, meta


def _gen_one(job):
    seed, i, curdir = job
    fname, data, meta = make_message(seed, i)
    path = os.path.join(curdir, fname)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.utime(path, (meta["t"], meta["t"]))
    return meta


def cmd_gen(args):
    signal.alarm(args.timeout)
    cur = os.path.join(args.out, "cur")
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(args.out, d), exist_ok=True)
    t0 = time.monotonic()
    jobs = [(args.seed, i, cur) for i in range(args.count)]
    with multiprocessing.Pool(max(1, min(4, os.cpu_count() or 1))) as pool:
        metas = pool.map(_gen_one, jobs, chunksize=200)
    with open(os.path.join(args.out, "manifest.jsonl"), "w") as f:
        f.write(json.dumps({"gen_version": GEN_VERSION, "seed": args.seed,
                            "count": args.count}) + "\n")
        for m in metas:
            f.write(json.dumps(m) + "\n")
    total = sum(m["size"] for m in metas)
    print("generated %d messages, %.1f MiB, in %.1f s (seed %d)" % (
        args.count, total / 1048576, time.monotonic() - t0, args.seed))
    return 0


def _manifest(src):
    with open(os.path.join(src, "manifest.jsonl")) as f:
        head = json.loads(f.readline())
        return head, [json.loads(l) for l in f]


def expected(metas):
    """What both servers must answer for a mailbox of these messages."""
    return {
        "messages": len(metas),
        "bytes": sum(m["size"] for m in metas),
        "seen": sum(1 for m in metas if "S" in m["flags"]),
        "flagged": sum(1 for m in metas if "F" in m["flags"]),
        "answered": sum(1 for m in metas if "R" in m["flags"]),
        "from_hits": sum(1 for m in metas if m["from_match"]),
        "text_hits": sum(1 for m in metas if m["text_match"]),
        "large": sum(1 for m in metas if m["kind"] == "large"),
        "medium": sum(1 for m in metas if m["kind"] == "medium"),
        "shapes": {s: sum(1 for m in metas if m["shape"] == s)
                   for s in ("text", "alternative", "mixed")},
        "max_size": max((m["size"] for m in metas), default=0),
    }


def cmd_layout(args):
    """Hard-links the first N generated messages into DEST/cur (DEST/new and DEST/tmp
    empty), the directories' mtimes set to the newest message's time.  DEST must not
    exist.  Writes the expected results as JSON to args.expect."""
    signal.alarm(args.timeout)
    head, metas = _manifest(args.src)
    if args.size > len(metas):
        print("only %d messages generated, %d asked" % (len(metas), args.size), file=sys.stderr)
        return 1
    metas = metas[:args.size]
    os.makedirs(args.dest, mode=0o700)
    for d in ("cur", "new", "tmp"):
        os.mkdir(os.path.join(args.dest, d), 0o700)
    src_cur, dst_cur = os.path.join(args.src, "cur"), os.path.join(args.dest, "cur")
    for m in metas:
        os.link(os.path.join(src_cur, m["name"]), os.path.join(dst_cur, m["name"]))
    # The directories as in a mailbox whose last delivery was the newest message: a
    # directory changed within the last seconds makes a server rescan it (Dovecot's
    # maildir sync does), which no real mailbox at rest would cause.
    last = max((m["t"] for m in metas), default=1700000000)
    for d in ("cur", "new", "tmp", ""):
        os.utime(os.path.join(args.dest, d), (last, last))
    if args.expect:
        exp = expected(metas)
        exp.update(seed=head["seed"], gen_version=head["gen_version"])
        with open(args.expect, "w") as f:
            json.dump(exp, f)
    return 0


# ---------------------------------------------------------------- protocol clients

class ProtoError(Exception):
    pass


class Imap:
    """A minimal IMAP client: commands are sent whole, and a reply is read until its
    tagged completion line, found by looking at the end of the data received so far
    only (the server sends nothing after it).  parse() checks the reply afterwards."""

    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.n = 0
        self.greeting = self._read_line()
        if not self.greeting.startswith(b"* OK"):
            raise ProtoError("greeting: %r" % self.greeting[:200])

    def _read_line(self):
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ProtoError("connection closed (got %r)" % buf[:200])
            buf += chunk
            if len(buf) > 65536:
                raise ProtoError("line too long")
        return buf

    def command(self, text):
        """Sends one command; returns (seconds, reply bytes) with the clock running from
        just before the send until the tagged completion has been received."""
        self.n += 1
        tag = b"T%04d" % self.n
        want = b"\r\n" + tag + b" "
        chunks, tail = [], b"\r\n"
        recv = self.sock.recv
        t0 = time.perf_counter()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        while True:
            chunk = recv(1 << 20)
            if not chunk:
                raise ProtoError("connection closed during %r" % text[:60])
            chunks.append(chunk)
            tail = (tail + chunk)[-4096:]
            if tail.endswith(b"\r\n"):
                start = tail.rfind(b"\r\n", 0, len(tail) - 2)
                if start >= 0 and tail[start:start + len(want)] == want:
                    break
        dt = time.perf_counter() - t0
        data = b"".join(chunks)
        status = _check_tagged(data, tag)
        if status != b"OK":
            last = data[data.rfind(b"\r\n", 0, len(data) - 2) + 2:]
            raise ProtoError("%s -> %s" % (text[:80], last.decode("latin-1").strip()[:300]))
        return dt, data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")


def _check_tagged(data, tag):
    """Walks the reply line by line, skipping literals; returns the status word of the
    tagged line, which must be the last line (else raises)."""
    pos, n = 0, len(data)
    for _ in range(50000000):
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise ProtoError("unterminated reply")
        m = _LITERAL.search(data, eol - 14 if eol >= 14 else 0, eol + 2)
        if m and m.end() == eol + 2:
            pos = eol + 2 + int(m.group(1))
            continue
        line = data[pos:eol]
        if line.startswith(tag + b" "):
            if eol + 2 != n:
                raise ProtoError("data after the tagged reply")
            return line.split(b" ", 2)[1]
        pos = eol + 2
    raise ProtoError("reply too long")


def login(port, user, password, timeout, select=True):
    c = Imap(port, timeout)
    c.command('LOGIN "%s" "%s"' % (user, password))
    if select:
        c.command("SELECT INBOX")
    return c


def pop3_uidl(port, user, password, timeout):
    """connect + USER + PASS + UIDL + QUIT; returns (seconds, number of UIDL lines,
    distinct unique-ids)."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()

    def more():
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ProtoError("POP3 connection closed (got %r)" % bytes(buf[-200:]))
        buf.extend(chunk)

    def line_ok(what):
        while b"\r\n" not in buf:
            more()
        i = buf.index(b"\r\n")
        line = bytes(buf[:i])
        del buf[:i + 2]
        if not line.startswith(b"+OK"):
            raise ProtoError("POP3 %s -> %s" % (what, line.decode("latin-1").strip()[:300]))
        return line

    try:
        line_ok("greeting")
        s.sendall(b"USER %s\r\n" % user.encode())
        line_ok("USER")
        s.sendall(b"PASS %s\r\n" % password.encode())
        line_ok("PASS")
        s.sendall(b"UIDL\r\n")
        line_ok("UIDL")
        while not (buf.endswith(b"\r\n.\r\n") or buf == b".\r\n"):
            more()
        data = b"+OK\r\n" + bytes(buf)
        buf.clear()
        s.sendall(b"QUIT\r\n")
        line_ok("QUIT")
        dt = time.perf_counter() - t0
    finally:
        s.close()
    lines = data.split(b"\r\n")[1:-2]
    uids = {l.split(b" ", 1)[1] for l in lines if b" " in l}
    return dt, len(lines), len(uids)


# ---------------------------------------------------------------- one round

FETCH_LINE = re.compile(rb"(?:^|\r\n)\* \d+ FETCH ")
SIZE_ITEM = re.compile(rb"RFC822\.SIZE (\d+)")
EXISTS = re.compile(rb"\* (\d+) EXISTS")

OPS = [  # (key, label) in table order
    ("select_first", "first SELECT (index build)"),
    ("select_warm", "warm SELECT"),
    ("fetch_flags", "FETCH 1:* (FLAGS)"),
    ("envelope_first", "UID FETCH 1:* (UID RFC822.SIZE ENVELOPE), first"),
    ("envelope_warm", "UID FETCH 1:* (UID RFC822.SIZE ENVELOPE), warm"),
    ("search_from", "SEARCH FROM"),
    ("search_text", "SEARCH TEXT"),
    ("pop3_uidl", "POP3 login + UIDL + QUIT"),
]


def _search_hits(data):
    hits = 0
    for line in data.split(b"\r\n"):
        if line.startswith(b"* SEARCH"):
            hits += len(line.split()) - 2
    return hits


def cmd_round(args):
    """One round against one server, which was (re)started on a Maildir that no server
    has indexed: each operation on a fresh connection (LOGIN and, except for the SELECT
    rows, SELECT INBOX before the clock starts), in the order of OPS.  Appends one JSON
    line per operation to args.results."""
    signal.alarm(args.timeout)
    with open(args.expect) as f:
        exp = json.load(f)
    base = {"kind": "op", "server": args.name, "size": args.size, "round": args.round}
    out, failed = [], 0

    def record(op, seconds, check, problems=None):
        r = dict(base, op=op, ms=round(seconds * 1000, 3) if seconds is not None else None,
                 check=check, problems=problems or [])
        out.append(r)
        with open(args.results, "a") as f:
            f.write(json.dumps(r) + "\n")
        print("  %-8s %6d msgs round %d  %-50s %s%s" % (
            args.name, args.size, args.round, dict(OPS)[op],
            "%10.1f ms" % r["ms"] if r["ms"] is not None else "    FAILED",
            ("  PROBLEM: " + "; ".join(r["problems"])) if r["problems"] else ""))
        sys.stdout.flush()

    def fail(op, e):
        nonlocal failed
        failed += 1
        record(op, None, {}, ["%s: %s" % (type(e).__name__, e)])

    def timed_select(op):
        c = None
        try:
            c = login(args.port, args.user, args.password, args.op_timeout, select=False)
            dt, data = c.command("SELECT INBOX")
            m = EXISTS.search(data)
            n = int(m.group(1)) if m else -1
            record(op, dt, {"exists": n},
                   [] if n == exp["messages"] else ["EXISTS %d, expected %d" % (n, exp["messages"])])
        except (OSError, ProtoError) as e:
            fail(op, e)
        finally:
            if c:
                c.close()

    def timed(op, cmd, checker):
        c = None
        try:
            c = login(args.port, args.user, args.password, args.op_timeout)
            dt, data = c.command(cmd)
            check, problems = checker(data)
            record(op, dt, check, problems)
        except (OSError, ProtoError) as e:
            fail(op, e)
        finally:
            if c:
                c.close()

    def check_flags(data):
        n = len(FETCH_LINE.findall(data))
        seen = data.count(b"\\Seen")
        flagged = data.count(b"\\Flagged")
        answered = data.count(b"\\Answered")
        problems = []
        if n != exp["messages"]:
            problems.append("%d FETCH responses, expected %d" % (n, exp["messages"]))
        if (seen, flagged, answered) != (exp["seen"], exp["flagged"], exp["answered"]):
            problems.append("\\Seen/\\Flagged/\\Answered %d/%d/%d, expected %d/%d/%d" % (
                seen, flagged, answered, exp["seen"], exp["flagged"], exp["answered"]))
        return {"responses": n, "seen": seen, "flagged": flagged, "answered": answered,
                "bytes": len(data)}, problems

    def check_envelope(data):
        n = len(FETCH_LINE.findall(data))
        sizes = [int(x) for x in SIZE_ITEM.findall(data)]
        envs = data.count(b"ENVELOPE (")
        problems = []
        if n != exp["messages"] or envs != exp["messages"]:
            problems.append("%d FETCH responses with %d ENVELOPEs, expected %d" % (
                n, envs, exp["messages"]))
        if sum(sizes) != exp["bytes"] or len(sizes) != exp["messages"]:
            problems.append("%d RFC822.SIZE items summing to %d, expected %d summing to %d" % (
                len(sizes), sum(sizes), exp["messages"], exp["bytes"]))
        return {"responses": n, "envelopes": envs, "size_sum": sum(sizes),
                "bytes": len(data)}, problems

    def check_hits(key):
        def checker(data):
            hits = _search_hits(data)
            return ({"hits": hits}, [] if hits == exp[key] else
                    ["%d hits, expected %d" % (hits, exp[key])])
        return checker

    timed_select("select_first")
    timed_select("select_warm")
    timed("fetch_flags", "FETCH 1:* (FLAGS)", check_flags)
    timed("envelope_first", "UID FETCH 1:* (UID RFC822.SIZE ENVELOPE)", check_envelope)
    timed("envelope_warm", "UID FETCH 1:* (UID RFC822.SIZE ENVELOPE)", check_envelope)
    timed("search_from", 'SEARCH FROM "%s"' % FROM_NEEDLE, check_hits("from_hits"))
    timed("search_text", 'SEARCH TEXT "%s"' % TEXT_NEEDLE, check_hits("text_hits"))
    if args.pop3_port:
        try:
            dt, n, distinct = pop3_uidl(args.pop3_port, args.user, args.password, args.op_timeout)
            problems = []
            if n != exp["messages"] or distinct != n:
                problems.append("%d UIDL lines (%d distinct), expected %d" % (
                    n, distinct, exp["messages"]))
            record("pop3_uidl", dt, {"lines": n, "distinct": distinct}, problems)
        except (OSError, ProtoError) as e:
            fail("pop3_uidl", e)
    return 1 if failed else 0


# ---------------------------------------------------------------- idle sessions

def cmd_idle(args):
    """Opens N IMAP sessions, each logged in with INBOX selected, keeps them open and
    idle, and compares the summed RSS/PSS of the server's processes with the sum just
    before.  Then checks every session still answers NOOP."""
    signal.alarm(args.timeout)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.n + 1000), hard))
    time.sleep(args.settle)
    before = benchlib.tree_memory(args.root_pid)
    t0 = time.monotonic()
    sessions, errors = [], {}
    for _ in range(args.n):
        try:
            sessions.append(login(args.port, args.user, args.password, 120))
        except (OSError, ProtoError) as e:
            k = str(e)[:120]
            errors[k] = errors.get(k, 0) + 1
            if sum(errors.values()) > 20:
                break
    open_s = time.monotonic() - t0
    time.sleep(args.settle)
    after = benchlib.tree_memory(args.root_pid)
    alive = 0
    for c in sessions:
        try:
            c.command("NOOP")
            alive += 1
        except (OSError, ProtoError):
            pass
    for c in sessions:
        c.close()
    n = max(1, len(sessions))
    r = {"kind": "idle", "server": args.name, "size": args.size, "target": args.n,
         "opened": len(sessions), "alive_after": alive, "errors": errors,
         "open_seconds": round(open_s, 1), "before": before, "after": after,
         "kib_per_session_rss": round((after["rss_kib"] - before["rss_kib"]) / n, 1),
         "kib_per_session_pss": round((after["pss_kib"] - before["pss_kib"]) / n, 1)}
    with open(args.results, "a") as f:
        f.write(json.dumps(r) + "\n")
    print("  %-8s %6d msgs idle: %d/%d sessions (LOGIN+SELECT, %.1f s), %d answer NOOP after; "
          "RSS %.1f -> %.1f MiB (%d -> %d procs) = %.1f KiB/session; PSS %.1f KiB/session%s" % (
              args.name, args.size, len(sessions), args.n, open_s, alive,
              before["rss_kib"] / 1024, after["rss_kib"] / 1024, before["procs"], after["procs"],
              r["kib_per_session_rss"], r["kib_per_session_pss"],
              ("  ERRORS: %s" % errors) if errors else ""))
    return 0 if len(sessions) == args.n and alive == args.n else 1


# ---------------------------------------------------------------- report

NAMES = {"tern": "tern", "dovecot": "Dovecot"}
GOALS = {"fetch_flags": 0.5}


def _fmt_ms(v):
    return "%.0f" % v if v >= 100 else "%.1f" % v if v >= 1 else "%.2f" % v


def cmd_report(args):
    ops, idle = [], {}
    with open(args.results) as f:
        for line in f:
            r = json.loads(line)
            if r["kind"] == "idle":
                idle[r["server"], r["size"]] = r
            else:
                ops.append(r)
    sizes = sorted({r["size"] for r in ops} | {k[1] for k in idle})
    lines = ["| operation | messages | tern ms | Dovecot ms | tern / Dovecot | goal |",
             "|---|---:|---:|---:|---:|---|"]
    warnings, verdicts = [], []
    for key, label in OPS:
        for size in sizes:
            cells, med = [], {}
            rows = {s: [r for r in ops if r["op"] == key and r["size"] == size and r["server"] == s]
                    for s in NAMES}
            if not any(rows.values()):
                continue
            for s in NAMES:
                rs = rows[s]
                good = [r["ms"] for r in rs if r["ms"] is not None]
                if not rs:
                    cells.append("-")
                    continue
                if not good:
                    cells.append("**failed** (%s)" % rs[0]["problems"][0][:120].replace("|", "/"))
                    continue
                med[s] = statistics.median(good)
                txt = _fmt_ms(med[s])
                if len(good) > 1:
                    txt += " (%s-%s)" % (_fmt_ms(min(good)), _fmt_ms(max(good)))
                if len(good) < len(rs):
                    txt += " **%d of %d failed**" % (len(rs) - len(good), len(rs))
                cells.append(txt)
                for r in rs:
                    for p in r["problems"]:
                        warnings.append("%s, %d messages, %s, round %d: %s" % (
                            NAMES[s], size, label, r["round"], p))
            goal = GOALS.get(key, 1.0)
            ratio, verdict = "-", ""
            if "tern" in med and "dovecot" in med and med["dovecot"] > 0:
                q = med["tern"] / med["dovecot"]
                ratio = "%.2fx" % q
                verdict = "<= %.1fx: %s" % (goal, "met" if q <= goal else "**missed**")
            # Do the two servers agree on the answer (EXISTS, SEARCH hits, UIDL lines)?
            agree = {s: {json.dumps(r["check"], sort_keys=True) for r in rows[s]
                         if r["ms"] is not None and "bytes" not in r["check"]} for s in NAMES}
            if key in ("fetch_flags", "envelope_first", "envelope_warm"):
                agree = {s: {json.dumps({k: v for k, v in r["check"].items() if k != "bytes"},
                                        sort_keys=True) for r in rows[s] if r["ms"] is not None}
                         for s in NAMES}
            if agree["tern"] and agree["dovecot"] and agree["tern"] != agree["dovecot"]:
                warnings.append("%s, %d messages: the servers' results differ: tern %s, Dovecot %s"
                                % (label, size, sorted(agree["tern"]), sorted(agree["dovecot"])))
                verdict += " (**results differ**)"
            lines.append("| %s | %d | %s | %s | %s | %s |" % (label, size, cells[0], cells[1],
                                                            ratio, verdict))
    for size in sizes:
        t, d = idle.get(("tern", size)), idle.get(("dovecot", size))
        if not (t or d):
            continue
        for key, lab in (("rss", "RSS"), ("pss", "PSS")):
            def cell(r):
                if r is None:
                    return "-"
                txt = "%.1f KiB" % r["kib_per_session_" + key]
                if r["opened"] < r["target"] or r["alive_after"] < r["opened"]:
                    txt += " (**%d of %d opened, %d alive**)" % (r["opened"], r["target"],
                                                                 r["alive_after"])
                return txt
            ratio, verdict = "-", ""
            if t and d and d["kib_per_session_" + key] > 0:
                q = t["kib_per_session_" + key] / d["kib_per_session_" + key]
                ratio = "%.3fx" % q
                verdict = "<= 1.0x: %s" % ("met" if q <= 1.0 else "**missed**")
            lines.append("| memory per idle IMAP session (%d sessions, INBOX selected), %s sum | %d"
                         " | %s | %s | %s | %s |" % ((t or d)["target"], lab, size, cell(t),
                                                     cell(d), ratio, verdict))
            for r in (t, d):
                if r and r["errors"]:
                    warnings.append("%s idle sessions, %d messages: %s" % (
                        NAMES[r["server"]], size, r["errors"]))
    lines += [
        "",
        "ms: median over rounds (lowest-highest in parentheses); the clock runs from just before"
        " the command is sent until its tagged completion (POP3: from connect until the reply"
        " to QUIT) has been received. Each operation on a fresh connection: LOGIN (and SELECT"
        " INBOX, except in the SELECT rows) before the clock starts. Every round starts both"
        " servers anew on a Maildir that no server has indexed (fresh hard links of the same"
        " files), so 'first' rows are the first such command after the index was built by the"
        " first SELECT. Memory rows: (summed RSS or PSS of all the server's processes with the"
        " sessions open - the sum just before) / sessions.",
    ]
    mem_lines = ["", "| server | messages | sessions | RSS before -> after | PSS before -> after |"
                 " processes | time to open |", "|---|---:|---:|---|---|---|---:|"]
    for (s, size), r in sorted(idle.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mem_lines.append("| %s | %d | %d | %.1f -> %.1f MiB | %.1f -> %.1f MiB | %d -> %d | %.1f s |"
                         % (NAMES[s], size, r["opened"], r["before"]["rss_kib"] / 1024,
                            r["after"]["rss_kib"] / 1024, r["before"]["pss_kib"] / 1024,
                            r["after"]["pss_kib"] / 1024, r["before"]["procs"],
                            r["after"]["procs"], r["open_seconds"]))
    if idle:
        lines += mem_lines
    per_round = ["", "Per round (ms):", "", "| operation | messages | server | rounds |",
                 "|---|---:|---|---|"]
    for key, label in OPS:
        for size in sizes:
            for s in NAMES:
                rs = sorted((r for r in ops if r["op"] == key and r["size"] == size
                             and r["server"] == s), key=lambda r: r["round"])
                if rs:
                    per_round.append("| %s | %d | %s | %s |" % (label, size, NAMES[s], ", ".join(
                        _fmt_ms(r["ms"]) if r["ms"] is not None else "failed" for r in rs)))
    lines += per_round
    if warnings:
        lines += ["", "**Warnings** (results that differ from the generated mailbox or between"
                  " the servers, failed operations):", ""]
        lines += ["- " + w.replace("|", "/") for w in warnings[:60]]
        if len(warnings) > 60:
            lines.append("- ... and %d more (see the .jsonl)" % (len(warnings) - 60))
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.md, "w") as f:
        f.write(text)
    return 0


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("gen")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument("--timeout", type=int, default=3600)
    p = sub.add_parser("layout")
    p.add_argument("--src", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--expect", help="write the expected results (JSON) here")
    p.add_argument("--timeout", type=int, default=600)
    p = sub.add_parser("round")
    p.add_argument("--name", required=True, choices=sorted(NAMES))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pop3-port", type=int, default=0, help="0: no POP3 row")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--expect", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--op-timeout", type=float, default=600, help="socket timeout")
    p.add_argument("--timeout", type=int, default=3000, help="the whole round")
    p = sub.add_parser("idle")
    p.add_argument("--name", required=True, choices=sorted(NAMES))
    p.add_argument("--root-pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--results", required=True)
    p.add_argument("--timeout", type=int, default=900)
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("md")
    args = ap.parse_args()
    fn = {"gen": cmd_gen, "layout": cmd_layout, "round": cmd_round, "idle": cmd_idle,
          "report": cmd_report}[args.cmd]
    sys.exit(fn(args) or 0)


if __name__ == "__main__":
    main()
