"""The `tern` administration commands: check, config reference, domain, user, alias,
queue.  Most tests use a data directory without a running server."""

import os
import subprocess

import pytest

from conftest import BOB, DEMO, T, TERN_BIN, Tern, make_message


@pytest.fixture
def offline(tern_bin):
    """A config and data directory, no server."""
    t = Tern()
    yield t
    t.cleanup()


def assert_error(p, code=1):
    assert p.returncode == code, "exit %d, stderr: %s" % (p.returncode, p.stderr)
    assert p.stderr.startswith("tern:") or "tern:" in p.stderr, p.stderr


def test_check_accepts_the_harness_config(offline):
    p = offline.cli("check")
    assert p.returncode == 0
    assert "ok" in (p.stdout + p.stderr).lower()


def test_check_names_file_and_line_of_unknown_key(offline):
    lines = ["[server]",                           # 1
             "hostname = mx.test.local",           # 2
             "data_dir = %s" % offline.data_dir,   # 3
             "[smtp]",                             # 4
             "max_recipients = 10",                # 5
             "max_message_size = 1M",              # 6
             "no_such_key = 1",                    # 7
             "[listener mx]",
             "protocol = smtp",
             "address = 127.0.0.1:%d" % offline.smtp_port]
    offline.write_config("\n".join(lines) + "\n")
    p = offline.cli("check", check=False)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "conf:7" in p.stderr, p.stderr
    assert "no_such_key" in p.stderr, p.stderr


@pytest.mark.parametrize("line,bad", [
    ("max_message_size = 12Q", "max_message_size"),
    ("max_recipients = -3", "max_recipients"),
    ("command_timeout = soon", "command_timeout"),
    ("auth_plaintext_loopback = maybe", "auth_plaintext_loopback"),
])
def test_check_rejects_bad_values(offline, line, bad):
    text = offline.config_text().replace("[smtp]\n", "[smtp]\n" + line + "\n", 1)
    offline.write_config(text)
    lineno = text.splitlines().index(line) + 1
    p = offline.cli("check", check=False)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "conf:%d" % lineno in p.stderr, p.stderr


def test_check_rejects_bad_listener_protocol(offline):
    text = offline.config_text().replace("protocol = submission\n", "protocol = smtps\n", 1)
    offline.write_config(text)
    p = offline.cli("check", check=False)
    assert p.returncode == 1
    assert "tern" in p.stderr and "conf" in p.stderr, p.stderr


def test_check_missing_file(offline):
    p = subprocess.run([TERN_BIN, "-c", os.path.join(offline.base, "nope.conf"), "check"],
                       capture_output=True, text=True, timeout=T(30))
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "tern:" in p.stderr and "nope.conf" in p.stderr, p.stderr


def test_config_reference_is_markdown_with_every_key(tern_bin):
    p = subprocess.run([TERN_BIN, "config", "reference"], capture_output=True, text=True,
                       timeout=T(30))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.lstrip().startswith("#"), out[:200]
    for key in ("hostname", "data_dir", "workers", "log_file", "max_message_size",
                "max_recipients", "max_connections_per_ip", "command_timeout",
                "data_timeout", "auth_plaintext_loopback", "auth_max_failures",
                "auth_failure_window", "trusted_networks", "cert", "key", "protocol",
                "address"):
        assert key in out, key
    assert "25M" in out  # the documented default of max_message_size


@pytest.mark.parametrize("args", [["frobnicate"], ["domain"], ["domain", "explode", "x.test"],
                                  ["user", "add"]])
def test_usage_errors_exit_2(offline, args):
    p = offline.cli(*args, check=False)
    assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
    assert p.stderr.strip(), "a usage error says something on stderr"


def test_domain_add_list_del(offline):
    offline.cli("domain", "add", "example.test")
    offline.cli("domain", "add", "second.test")
    out = offline.cli("domain", "list").stdout
    assert "example.test" in out and "second.test" in out
    assert_error(offline.cli("domain", "add", "example.test", check=False))
    offline.cli("domain", "del", "second.test")
    out = offline.cli("domain", "list").stdout
    assert "second.test" not in out and "example.test" in out
    assert_error(offline.cli("domain", "del", "second.test", check=False))


def test_domain_add_rejects_garbage(offline):
    for bad in ("not a domain", "", "-x.test"):
        p = offline.cli("domain", "add", bad, check=False)
        assert p.returncode in (1, 2), (bad, p.returncode)


def test_user_add_list_passwd_del(offline):
    offline.cli("domain", "add", "example.test")
    pw = offline.add_user(DEMO)
    offline.add_user(BOB)
    out = offline.cli("user", "list").stdout
    assert DEMO in out and BOB in out
    assert pw not in out
    # Duplicate, and unknown domain.
    assert_error(offline.cli("user", "add", DEMO, input="x-password-1\n", check=False))
    assert_error(offline.cli("user", "add", "eve@unknown.test", input="x-password-1\n",
                             check=False))
    offline.cli("user", "passwd", DEMO, input="another-password-2\n")
    offline.cli("user", "del", BOB)
    out = offline.cli("user", "list").stdout
    assert BOB not in out and DEMO in out
    assert_error(offline.cli("user", "del", BOB, check=False))
    assert_error(offline.cli("user", "passwd", BOB, input="zzz-password-3\n", check=False))


def test_user_add_with_empty_password_fails(offline):
    offline.cli("domain", "add", "example.test")
    p = offline.cli("user", "add", DEMO, input="\n", check=False)
    assert p.returncode == 1, (p.stdout, p.stderr)
    p = offline.cli("user", "add", DEMO, input="", check=False)
    assert p.returncode == 1, (p.stdout, p.stderr)


def test_passwords_are_stored_hashed(offline):
    offline.cli("domain", "add", "example.test")
    pw = offline.add_user(DEMO)
    blob = b""
    for root, _, files in os.walk(offline.data_dir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                blob += fh.read()
    assert blob, "no data written"
    assert pw.encode() not in blob, "the password is stored in clear in the data directory"
    assert b"$y$" in blob, "expected a yescrypt hash ($y$...) in tern.db"


def test_alias_add_list_del(offline):
    offline.cli("domain", "add", "example.test")
    offline.add_user(DEMO)
    offline.cli("alias", "add", "postmaster@example.test", DEMO)
    offline.cli("alias", "add", "friend@example.test", "someone@elsewhere.test")
    offline.cli("alias", "add", "@example.test", DEMO)
    out = offline.cli("alias", "list").stdout
    assert "postmaster@example.test" in out and "someone@elsewhere.test" in out
    assert "@example.test" in out
    offline.cli("alias", "del", "friend@example.test", "someone@elsewhere.test")
    out = offline.cli("alias", "list").stdout
    assert "friend@example.test" not in out
    assert "postmaster@example.test" in out
    assert_error(offline.cli("alias", "add", "x@unknown.test", DEMO, check=False))


def test_queue_list_empty(offline):
    offline.cli("domain", "add", "example.test")
    p = offline.cli("queue", "list")
    assert p.returncode == 0


def test_cli_changes_reach_a_running_server(make_tern):
    """Accounts added while the server runs receive mail; a deleted one is refused."""
    t = make_tern()
    t.add_user("carol@example.test")
    msg = make_message(subject="for-carol", to="carol@example.test")
    t.send(msg, to=["carol@example.test"])
    t.wait_message("carol@example.test", b"for-carol")
    t.cli("user", "del", BOB)
    with t.raw("smtp") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        r = c.cmd("RCPT TO:<%s>" % BOB)
        assert r.code == 550 and r.enhanced == "5.1.1", r
