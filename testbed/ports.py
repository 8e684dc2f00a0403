"""Free TCP ports on 127.0.0.1 for the test bed's servers.

Called by every component module (``testbed.kube``, ``testbed.observability``,
``testbed.postgres``) before it starts a server; starting and stopping the processes
is ``testbed.processes``. The kernel picks the port (bind to port 0), so two
components never race on a hard-coded number; a server that still loses the port to
another process between this call and its own ``bind`` fails to start, and the caller
retries with a new port.
"""

from __future__ import annotations

import contextlib
import socket

__all__ = ["LOOPBACK", "free_port", "free_ports", "is_port_free"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def is_port_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:``port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a connection of a stopped server lingering in TIME_WAIT does
        # not keep the port from a new server; a socket still listening does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True
