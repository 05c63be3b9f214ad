"""IMAP and POP3 logins when the directory cannot answer: a temporary failure, never a
login.  (A stored hash too long for the worker's buffer makes the lookup fail the way
a damaged tern.db would.)"""

import imaplib
import os
import poplib
import sqlite3

import pytest

from conftest import DEMO, T, client_ssl_context


def break_hash(t, address):
    db = sqlite3.connect(os.path.join(t.data_dir, "tern.db"), timeout=10)
    with db:
        n = db.execute("UPDATE accounts SET password_hash = ? WHERE address = ?",
                       ("$y$" + "x" * 700, address)).rowcount
    db.close()
    assert n == 1


def test_directory_error_is_not_a_login(make_tern):
    t = make_tern()
    password = t.passwords[DEMO]
    break_hash(t, DEMO)
    with imaplib.IMAP4_SSL("127.0.0.1", t.imaps_port, ssl_context=client_ssl_context(),
                           timeout=T(15)) as c:
        with pytest.raises(imaplib.IMAP4.error) as e:
            c.login(DEMO, password)
        assert "UNAVAILABLE" in str(e.value), e.value
    p = poplib.POP3_SSL("127.0.0.1", t.pop3s_port, context=client_ssl_context(),
                        timeout=T(15))
    try:
        p.user(DEMO)
        with pytest.raises(poplib.error_proto) as e:
            p.pass_(password)
        assert e.value.args[0].startswith(b"-ERR"), e.value
    finally:
        p.close()
