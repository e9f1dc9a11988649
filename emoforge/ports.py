"""Loopback ports for the servers emoforge starts (llama.cpp, Label Studio, Prefect)."""

from __future__ import annotations

import socket


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (checked by binding it).

    The check binds with ``SO_REUSEADDR`` as the servers themselves do (Django/uvicorn/llama.cpp): connections of a
    server stopped a moment ago linger in TIME-WAIT for about a minute and do not stop a new server from listening,
    so they must not make the port look busy; a socket that listens still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
