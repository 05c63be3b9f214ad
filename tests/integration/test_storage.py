"""Durability when the disk is full: a message that cannot be stored gets 452 and
leaves nothing behind, and the server goes on working once there is room."""

import os
import subprocess

import pytest

from conftest import DEMO, T, make_message, message_id_of


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path],
                       capture_output=True, text=True, timeout=30)
    return p.returncode == 0


@pytest.fixture
def small_disk_tern(make_tern):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    t = make_tern(start=False, accounts=False, smtp={"max_message_size": "8M"})
    if not mount_tmpfs(t.data_dir, "1m"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        t.setup_accounts()
        t.start()
        yield t
    finally:
        t.stop()
        subprocess.run(["umount", "-l", t.data_dir], capture_output=True, timeout=30)


def test_disk_full_answers_452_and_leaves_nothing(small_disk_tern):
    t = small_disk_tern
    big = make_message(body=("x" * 998 + "\r\n") * 3000)  # about 3 MB: more than the disk
    with t.raw("smtp", timeout=T(30)) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@y.test>").code == 250
        assert c.cmd("RCPT TO:<%s>" % DEMO).code == 250
        r = c.send_data(big)
        assert r.code == 452 and r.enhanced == "4.3.1", r
        # The session is still in sync and usable.
        assert c.cmd("RSET").code == 250
    qdir = os.path.join(t.data_dir, "queue")
    leftovers = [n for n in os.listdir(qdir) if n not in ("tmp",)]
    leftovers += ["tmp/" + n for n in os.listdir(os.path.join(qdir, "tmp"))]
    assert leftovers == [], leftovers
    assert not t.find_messages(DEMO, message_id_of(big))
    # With room again (nothing was kept), a normal message goes through.
    small = make_message()
    t.send(small)
    t.wait_message(DEMO, message_id_of(small))
    events = t.events("reject")
    assert any("452" in e.get("reply", "") for e in events), events
