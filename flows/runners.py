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

import os
import re
from typing import Any

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import ThreadPoolTaskRunner

from flows.ephemeral_server import detach_ephemeral_server

detach_ephemeral_server()  # every flow module imports this one: Ctrl-C must not stop the server before the build

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


def api_url_for_workers() -> str | None:
    """The Prefect API that task runs in other processes must report to: ``PREFECT_API_URL`` when set, else the
    ephemeral server this process started (Prefect's no-server mode), else None."""
    url = PREFECT_API_URL.value()
    if url:
        return url
    for server in list(SubprocessASGIServer._instances.values()):
        proc = getattr(server, "server_process", None)
        if proc is not None and proc.poll() is None and getattr(server, "port", None):
            return server.api_url
    return None


def _dask_runner_class():
    if EmoforgeDaskTaskRunner is None:
        raise RunnerSpecError(
            f"a Dask task runner needs prefect-dask and distributed ({_DASK_IMPORT_ERROR}); install them with "
            "`uv pip install prefect-dask distributed` (both are in emoforge's dependencies)"
        )
    return EmoforgeDaskTaskRunner


try:
    from prefect_dask import DaskTaskRunner as _DaskTaskRunner
except ImportError as _exc:  # pragma: no cover - prefect-dask is a main dependency
    EmoforgeDaskTaskRunner = None
    _DASK_IMPORT_ERROR = str(_exc)
else:

    class EmoforgeDaskTaskRunner(_DaskTaskRunner):
        """``DaskTaskRunner`` that points its workers at this process's Prefect API.

        Without ``PREFECT_API_URL`` Prefect runs an ephemeral API server per process: Dask workers would each start
        their own (slow; on a busy machine they time out). A local cluster's workers get this process's API URL in
        their environment; a remote cluster's workers must be started with ``PREFECT_API_URL``
        (docs/operations.md).
        """

        @property
        def client(self):
            if not self._client:
                url = api_url_for_workers()
                if self.address is None and self._cluster is None:
                    if url:
                        env = dict(self.cluster_kwargs.get("env") or {})
                        env.setdefault("PREFECT_API_URL", url)
                        self.cluster_kwargs = {**self.cluster_kwargs, "env": env}
                elif not os.environ.get("PREFECT_API_URL"):
                    self.logger.warning(
                        "PREFECT_API_URL is not set: the workers of the Dask cluster at %s cannot report to this "
                        "run's API; start a Prefect server and export PREFECT_API_URL on this host and on every "
                        "worker (docs/operations.md)", self.address)
            return super().client


def make_task_runner(spec: str | None = None):
    """A Prefect task runner for ``spec`` (see the module doc). Raises :class:`RunnerSpecError` on a bad spec."""
    kind, arg = parse_runner_spec(spec)
    if kind == "threads":
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

