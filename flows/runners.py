"""Choose where a flow's tasks run: Prefect's thread pool (default) or a Dask cluster through ``prefect-dask``.

``make_task_runner(spec)`` turns a short string (CLI ``--runner``, config, deployment parameter) into a Prefect
task runner:

=====================  =====================================================================================
spec                    runner
=====================  =====================================================================================
``None``, ``""``,       ``ThreadPoolTaskRunner()`` (Prefect's default)
``threads``
``threads:N``           ``ThreadPoolTaskRunner(max_workers=N)``
``dask://HOST:PORT``    ``DaskTaskRunner(address="tcp://HOST:PORT")``: an existing ``distributed`` scheduler
``tcp://HOST:PORT``     (started with ``dask scheduler`` / ``dask worker``; same code and home on every worker)
``dask-local:N``        ``DaskTaskRunner`` over a ``distributed.LocalCluster`` of N worker processes (1 thread
                        each), created for the flow run and closed after it
=====================  =====================================================================================

Tasks that run on Dask workers execute in other processes (possibly other machines): they must be
module-level functions, their arguments must pickle, and every worker must see the same emoforge home (and the
same LLM endpoints) — see docs/operations.md.
"""

from __future__ import annotations

import re
from typing import Any

ENV_VAR = "EMOFORGE_TASK_RUNNER"

_HOSTPORT = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class RunnerSpecError(ValueError):
    """A task-runner spec that cannot be used; the message names it and the accepted forms."""


_FORMS = "threads, threads:N, dask://HOST:PORT, tcp://HOST:PORT or dask-local:N"


def parse_runner_spec(spec: str | None) -> tuple[str, Any]:
    """``("threads", max_workers|None)``, ``("dask", "tcp://host:port")`` or ``("dask-local", n_workers)``."""
    s = (spec or "").strip()
    if s in ("", "threads", "default", "thread", "threadpool"):
        return "threads", None
    if s.startswith("threads:"):
        n = s.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise RunnerSpecError(f"task runner {spec!r}: threads:N needs a positive worker count")
        return "threads", int(n)
    for prefix in ("dask://", "tcp://"):
        if s.startswith(prefix):
            hostport = s[len(prefix):].rstrip("/")
            m = _HOSTPORT.match(hostport)
            if not m or not (0 < int(m.group(1)) < 65536):
                raise RunnerSpecError(f"task runner {spec!r}: expected {prefix}HOST:PORT (e.g. {prefix}127.0.0.1:8786)")
            return "dask", f"tcp://{hostport}"
    if s.startswith("dask-local"):
        n = s.split(":", 1)[1] if ":" in s else "2"
        if not n.isdigit() or not (1 <= int(n) <= 256):
            raise RunnerSpecError(f"task runner {spec!r}: dask-local:N needs a worker count between 1 and 256")
        return "dask-local", int(n)
    raise RunnerSpecError(f"unknown task runner {spec!r}; use {_FORMS}")


def _dask_runner_class():
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # pragma: no cover - prefect-dask is a main dependency
        raise RunnerSpecError(
            f"a Dask task runner needs prefect-dask and distributed ({exc}); install them with "
            "`uv pip install prefect-dask distributed` (both are in emoforge's dependencies)"
        ) from None
    return DaskTaskRunner


def make_task_runner(spec: str | None = None):
    """A Prefect task runner for ``spec`` (see the module doc). Raises :class:`RunnerSpecError` on a bad spec."""
    kind, arg = parse_runner_spec(spec)
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=arg)
    DaskTaskRunner = _dask_runner_class()
    if kind == "dask":
        return DaskTaskRunner(address=arg)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": arg,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,  # no web dashboard port; loopback only
            "host": "127.0.0.1",
        },
    )


def describe_task_runner(spec: str | None) -> str:
    """One human line: where the tasks of a run will execute."""
    kind, arg = parse_runner_spec(spec)
    if kind == "threads":
        return f"threads ({arg} workers)" if arg else "threads (Prefect default)"
    if kind == "dask":
        return f"Dask cluster at {arg}"
    return f"local Dask cluster of {arg} worker processes"


def is_distributed(spec: str | None) -> bool:
    return parse_runner_spec(spec)[0] != "threads"
