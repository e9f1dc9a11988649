"""Prefect's ephemeral API server (no ``PREFECT_API_URL``) started so that Ctrl-C does not hang a build.

Prefect starts that server as a plain child process, in the caller's process group. A terminal's Ctrl-C (SIGINT to
the whole foreground group) or ``kill -TERM -PGID`` from a scheduler therefore stops the server at the same moment
as the build; the build then reports its crash to a server that is gone, and Prefect's client retries every
request with exponential back-off (2 + 4 + 8 + 16 + 32 s per request, then its events worker) — measured here: a
build stopped that way was still running 60 s later, its server a zombie.

:func:`detach_ephemeral_server` makes Prefect start it in a session of its own, so only its parent stops it (the
``atexit`` hook Prefect registers, once the build has recorded how it ended), and with a parent-death signal, so a
parent killed with SIGKILL still takes the server with it (Linux ``PR_SET_PDEATHSIG``; only when the main thread
starts it, as a flow run does: the signal follows the thread that started the child). It swaps the ``subprocess``
name in Prefect's server module for a proxy whose ``Popen`` adds those two settings;
``tests/test_ephemeral_server.py`` fails if Prefect stops starting the server that way.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any

import prefect.server.api.server as _server

from schemas import procs


class _DetachingSubprocess:
    """The ``subprocess`` module, except that ``Popen`` starts a new session that dies with its parent."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802 - the name Prefect calls
        # the parent-death signal follows the *thread* that started the child: only the main thread lives as long
        # as the process (a flow run starts the server from it; another thread's exit would stop the server early)
        if threading.current_thread() is threading.main_thread():
            kwargs.setdefault("preexec_fn", procs.die_with_parent_preexec(os.getpid()))  # its own session too
        else:
            kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(*args, **kwargs)


def detach_ephemeral_server() -> None:
    """Idempotent; a no-op where Prefect's server module no longer starts its server through ``subprocess``."""
    if getattr(_server, "subprocess", None) is subprocess:
        _server.subprocess = _DetachingSubprocess()
