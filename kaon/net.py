"""Small network helpers shared by the CLI, the demo, the benchmarks and the tests."""

from __future__ import annotations

import errno
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the caller should bind it soon)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """Refuse, before any work, a port that is out of range or that something already
    listens on (uvicorn would fail only after the model has loaded, with its own log line)."""
    from kaon.errors import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (0-65535).",
                          hint="Use e.g. --port 8000.")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.",
                          hint="Another process holds the port: stop it, or choose another "
                               "--port." if exc.errno == errno.EADDRINUSE else
                               "Check --host; 127.0.0.1 or 0.0.0.0 work everywhere.") from None
