"""Refuse a busy port before any work: training a teacher for minutes, then failing on
`[Errno 98] Address already in use`, names neither the port nor the option that sets it."""

from __future__ import annotations

import errno
import socket


def check_port_free(host: str, port: int, option: str = "--port") -> None:
    """Raise a one-line OSError naming `port` and `option` when `host:port` cannot be bound.

    Binds with SO_REUSEADDR, as uvicorn does, so a port a closed server left in TIME_WAIT
    counts as free; port 0 (any free port) always is. Another process can still take the port
    between this check and the server's own bind; the check is for the common case, a server
    already running there.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            busy = exc.errno == errno.EADDRINUSE
            why = "is already in use" if busy else f"cannot be used ({exc.strerror})"
            raise OSError(f"port {port} on {host} {why}; choose another with {option}") from None
