"""Real mailbox clients nobody here wrote, against a real `tern serve`: fetchmail in
batch mode over POP3 (STLS and pop3s) and IMAP (STARTTLS and imaps), and curl's
imap/imaps/pop3/pop3s URLs.  Mail reaches the mailbox by SMTP first."""

import os
import shutil
import subprocess

import pytest

from conftest import DEMO, T, make_message, message_id_of, uniq


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.skip("%s is not installed (tools/deps.sh installs it)" % tool)
    return path


def deliver(t, n=1, body="Hello from the client test.\r\n"):
    """Sends n messages to DEMO by SMTP and waits until they are in the Maildir."""
    msgs = []
    for _ in range(n):
        marker = uniq("client")
        msg = make_message(subject=marker, body=body + marker + "\r\n")
        t.send(msg)
        t.wait_message(DEMO, message_id_of(msg))
        msgs.append((marker, msg))
    return msgs


def run_fetchmail(t, tmp_path, proto, port, tls, keep=True):
    """One fetchmail run; messages go through an MDA into one file each.  Returns
    (completed process, [message bytes])."""
    fetchmail = need("fetchmail")
    home = tmp_path / ("fm-" + uniq())
    out = home / "out"
    out.mkdir(parents=True)
    rc = home / "fetchmailrc"
    tls_opt = "ssl" if tls == "implicit" else "sslproto 'TLS1.2+'"
    rc.write_text(
        "set no syslog\n"
        "poll 127.0.0.1 with proto %s port %d timeout 20\n"
        "  user \"%s\" there with password \"%s\" is \"root\" here\n"
        "  options %s no sslcertck %s fetchall\n"
        "  mda \"/bin/sh -c 'cat > %s/msg.$$'\"\n"
        % (proto, port, DEMO, t.passwords[DEMO], tls_opt, "keep" if keep else "nokeep", out))
    os.chmod(rc, 0o600)
    env = dict(os.environ, FETCHMAILHOME=str(home), HOME=str(home))
    p = subprocess.run([fetchmail, "-f", str(rc), "--nodetach", "-v"], env=env,
                       capture_output=True, text=True, timeout=T(60))
    got = [open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))]
    return p, got


@pytest.mark.parametrize("proto,tls", [("POP3", "starttls"), ("POP3", "implicit"),
                                       ("IMAP", "starttls"), ("IMAP", "implicit")])
def test_fetchmail_fetches_the_mail(make_tern, tmp_path, proto, tls):
    t = make_tern()
    sent = deliver(t, 3)
    port = {("POP3", "starttls"): t.pop3_port, ("POP3", "implicit"): t.pop3s_port,
            ("IMAP", "starttls"): t.imap_port, ("IMAP", "implicit"): t.imaps_port}[(proto, tls)]
    p, got = run_fetchmail(t, tmp_path, proto, port, tls)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(got) == 3, p.stdout + p.stderr
    for marker, msg in sent:
        assert any(marker.encode() in g for g in got), marker
        # The body arrives intact (fetchmail adds its own Received line on top).
        body = msg.split(b"\r\n\r\n", 1)[1]
        assert any(body.replace(b"\r\n", b"\n") in g.replace(b"\r\n", b"\n") for g in got)


def test_fetchmail_pop3_nokeep_empties_the_mailbox(make_tern, tmp_path):
    t = make_tern()
    deliver(t, 2)
    p, got = run_fetchmail(t, tmp_path, "POP3", t.pop3s_port, "implicit", keep=False)
    assert p.returncode == 0 and len(got) == 2, p.stdout + p.stderr
    # Deleted on QUIT: the next run finds nothing (fetchmail exits 1: no mail).
    p, got = run_fetchmail(t, tmp_path, "POP3", t.pop3s_port, "implicit", keep=False)
    assert p.returncode == 1 and got == [], p.stdout + p.stderr


def test_fetchmail_wrong_password_fails(make_tern, tmp_path):
    t = make_tern()
    deliver(t, 1)
    t.passwords[DEMO] = "not-the-password"
    p, got = run_fetchmail(t, tmp_path, "IMAP", t.imaps_port, "implicit")
    assert p.returncode == 3, p.stdout + p.stderr  # 3: authentication failed
    assert got == []


def curl(*args):
    return subprocess.run([need("curl"), "-sS", "--max-time", str(int(T(30))), "-k"] +
                          list(args), capture_output=True, timeout=T(40))


def test_curl_imap_and_pop3(make_tern):
    t = make_tern()
    sent = deliver(t, 2)
    user = "%s:%s" % (DEMO, t.passwords[DEMO])
    # imaps: list the mailboxes, then fetch message 1 by UID.
    p = curl("imaps://127.0.0.1:%d/" % t.imaps_port, "-u", user)
    assert p.returncode == 0, p.stderr
    listing = p.stdout.decode()
    for box in ("INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"):
        assert box in listing, listing
    p = curl("imaps://127.0.0.1:%d/INBOX;UID=1" % t.imaps_port, "-u", user)
    assert p.returncode == 0, p.stderr
    assert sent[0][0].encode() in p.stdout
    # imap with STARTTLS required (--ssl-reqd): SEARCH by subject.
    p = curl("imap://127.0.0.1:%d/INBOX?SUBJECT%%20%s" % (t.imap_port, sent[1][0]),
             "--ssl-reqd", "-u", user)
    assert p.returncode == 0, p.stderr
    assert b"SEARCH 2" in p.stdout, p.stdout
    # pop3s: LIST, then RETR 2.
    p = curl("pop3s://127.0.0.1:%d/" % t.pop3s_port, "-u", user)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().split("\r\n")
    assert lines[0].startswith("1 ") and lines[1].startswith("2 "), p.stdout
    p = curl("pop3://127.0.0.1:%d/2" % t.pop3_port, "--ssl-reqd", "-u", user)
    assert p.returncode == 0, p.stderr
    assert sent[1][0].encode() in p.stdout
    # Without TLS, curl's plain IMAP login is refused (LOGINDISABLED before STARTTLS).
    p = curl("imap://127.0.0.1:%d/" % t.imap_port, "-u", user)
    assert p.returncode != 0
