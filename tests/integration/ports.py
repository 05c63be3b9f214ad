"""Free ports for the servers a test run starts.  A port is found by binding port 0 and
closing; the kernel may hand the same number out again right away, so every number
given out in this run is remembered and never given twice."""

import socket

_given = set()


def free_port(host="127.0.0.1", family=socket.AF_INET, kind=socket.SOCK_STREAM):
    for _ in range(200):
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
    raise RuntimeError("no fresh free port on %s" % host)
