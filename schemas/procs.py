"""Loopback ports and the one subprocess supervisor of the servers emoforge starts (llama.cpp, Label Studio,
Prefect). Standard library only.

A supervised server runs in its own process group (its own session), so stopping it reaches every process it
spawned (Prefect's server runs uvicorn in a grandchild, Label Studio a Django runner): :func:`stop_group` sends
SIGTERM to the group, waits ``grace`` seconds, then SIGKILLs what is left and reaps our child. A busy port is a clear
error before anything starts (a server would otherwise die on bind, or silently move to another port).
``die_with_parent`` asks Linux to SIGTERM the server when the process that started it dies, even by kill -9
(for foreground servers; a daemon such as ``emoforge labelstudio start`` outlives its starter).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

DEFAULT_HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class PortBusy(RuntimeError):
    """The port a server should listen on is taken."""


def port_free(port: int, host: str = DEFAULT_HOST) -> bool:
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


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.25,
               progress: Callable[[float], None] | None = None, alive: Callable[[], bool] | None = None) -> bool:
    """Poll ``check`` until it is true (True), ``alive()`` turns false or ``timeout`` passes (False);
    ``progress(seconds so far)`` after each miss."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if alive is not None and not alive():
            return False
        if check():
            return True
        if progress is not None:
            progress(time.monotonic() - t0)
        time.sleep(interval)
    return False


# looked up here, not in a forked child (where a lookup could wait on a lock another thread held at the fork)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent_preexec(parent: int, new_session: bool = True) -> Callable[[], None]:
    """A ``preexec_fn`` (it runs in the child between fork and exec): a session of its own (``new_session``) and
    SIGTERM when ``parent``, the process starting the child, dies, even by kill -9 (Linux); a child whose parent
    died before that was set exits at once. The signal follows the *thread* that started the child: start it from
    one that lives as long as the process."""
    def preexec() -> None:
        if new_session:
            os.setsid()
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:
                os._exit(1)
    return preexec


@dataclass
class Supervised:
    """A server process started by :func:`start`; ``stop()`` ends its whole process group."""

    name: str
    proc: subprocess.Popen
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 25) -> str:
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def wait_healthy(self, check: Callable[[], bool], timeout: float, interval: float = 0.25,
                     progress: Callable[[float], None] | None = None) -> bool:
        """Poll ``check`` until it is true (True), the process exits or ``timeout`` passes (False)."""
        return wait_until(check, timeout, interval, progress, alive=self.alive)

    def stop(self, grace: float = 15.0) -> None:
        stop_group(self.proc.pid, grace)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent: it cannot linger
            pass


def start(cmd: Sequence[str], *, name: str, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
          log_path: Path | None = None, port: int | None = None, host: str = DEFAULT_HOST,
          die_with_parent: bool = False) -> Supervised:
    """Start ``cmd`` in its own process group, output appended to ``log_path`` (or discarded). ``port``: refuse
    at once with :class:`PortBusy` when something already listens there."""
    if port is not None and not port_free(port, host):
        raise PortBusy(f"port {port} on {host} is already in use: {name} cannot listen there; choose another port "
                       "or stop what listens there")
    out = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=not die_with_parent,
                                preexec_fn=die_with_parent_preexec(os.getpid()) if die_with_parent else None)
    finally:
        if out is not subprocess.DEVNULL:
            out.close()
    return Supervised(name, proc, log_path)


def stop_group(pid: int, grace: float = 15.0) -> None:
    """SIGTERM the process group led by ``pid``, wait up to ``grace`` seconds, then SIGKILL what is left.
    Reaps ``pid`` when it is our child, so no zombie lingers."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid == os.getpgid(0):  # never signal our own group
        pgid = None
    try:
        os.killpg(pgid, signal.SIGTERM) if pgid else os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid and pgid is None:
                return
        except ChildProcessError:
            pass
        try:
            os.killpg(pgid, 0) if pgid else os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL) if pgid else os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class StopSignals:
    """While entered, SIGTERM and SIGINT only set ``stopping``: enter it before starting a foreground child, so a
    signal that arrives during its start-up is kept (a SIGINT inherited as ignored, as under a background job,
    would otherwise be lost until a handler is installed)."""

    def __init__(self) -> None:
        self.stopping = False
        self._old: dict = {}

    def _set(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.stopping = True

    def __enter__(self) -> "StopSignals":
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def run_foreground(sup: Supervised, grace: float = 15.0, signals: StopSignals | None = None) -> int:
    """Wait for ``sup`` until it exits or this process gets SIGTERM/SIGINT (then stop its group); its exit code.
    ``signals``: the :class:`StopSignals` entered before ``sup`` started (a signal during its start-up counts)."""
    with StopSignals() if signals is None else contextlib.nullcontext(signals) as sig:
        try:
            while sup.alive() and not sig.stopping:
                time.sleep(0.2)
        finally:
            sup.stop(grace)
    return 0 if sig.stopping else (sup.proc.returncode or 0)
