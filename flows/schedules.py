"""Scheduled jobs: the flows that ``prefect.yaml`` deploys (build, review pull, publish) and the plain functions
that serve or deploy them against a Prefect server.

Jobs (each a thin Prefect flow over a plain function of the same name without ``_flow``):

``build_job``        ``flows.build.run_build``: new dialogues for a models config (optionally on Dask), then publish
``review_pull_job``  pull the annotations of Label Studio into the ``reviews`` table (``annotation``)
``publish_job``      ``warehouse.publish.publish_release``, skipped when nothing changed since the last release

Overlapping runs: every deployment has a Prefect ``concurrency_limit`` of 1 (a second scheduled run waits in
the queue), and every job holds a per-home job lock (``<home>/.jobs/<job>.lock``): a second run of the same job
in the same home — from another deployment, a manual ``emoforge build`` or another server — is refused at once
with :class:`JobBusy`, naming who holds the lock. Publishing also holds the warehouse write lock, so two
publishes never interleave. Nothing here needs a Prefect server: the functions run as plain Python too.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb
import httpx
import yaml
from filelock import FileLock, Timeout
from prefect import flow
from prefect import serve as prefect_serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.schedules import Cron, Interval

from annotation.client import connect
from annotation.pull import pull
from annotation.push import DEFAULT_PROJECT
from flows.build import load_build_config, run_build
from flows.runners import make_task_runner
from flows.unresponsive import DEFAULT_CRASHED_AFTER_S, check_window, ensure_crash_detection, heartbeat_env
from schemas import procs
from schemas.config import load_config
from schemas.config.models import load_models_config
from schemas.home import offline_env, resolve_home
from schemas.records import Run
from warehouse.effective import effective_views
from warehouse.publish import publish_release
from warehouse.releases import list_releases
from warehouse.store import Warehouse

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = REPO_ROOT / "prefect.yaml"
DEFAULT_POOL = "emoforge"


class JobBusy(RuntimeError):
    """Another run of the same job holds the home's job lock."""


class ScheduleError(RuntimeError):
    """A deployment spec, server or work pool that cannot be used; the message says which and why."""


class StorageError(RuntimeError):
    """The home's file system refused a write (full, over quota, read-only); nothing stored before was lost."""


_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                   errno.EFBIG: "a file size limit was reached", errno.EROFS: "the file system is read-only",
                   errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def storage_problem(exc: BaseException) -> str | None:
    """'the disk is full' etc. when ``exc`` (or what caused it) is a refused write, else None."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[exc.errno]
        text = str(exc)
        for code, why in _STORAGE_ERRNOS.items():
            if os.strerror(code) in text:
                return why
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


@contextmanager
def storage_errors(home: Path, what: str) -> Iterator[None]:
    """Turn a refused write during ``what`` into a :class:`StorageError` that says so plainly."""
    try:
        yield
    except (JobBusy, StorageError):
        raise
    except Exception as exc:
        why = storage_problem(exc)
        if why is None:
            raise
        raise StorageError(f"{what} stopped: {why} under {home} ({exc}). What was stored before is intact; free space "
                           f"(or make the home writable) and run it again: it resumes.") from exc


# ---- job lock ----------------------------------------------------------------------------------------------
@contextmanager
def job_lock(home: str | os.PathLike, job: str, timeout: float = 0.0) -> Iterator[None]:
    """Hold ``<home>/.jobs/<job>.lock`` (an OS file lock: released when the process dies, even by kill -9).
    ``timeout`` 0 refuses at once with :class:`JobBusy` when another process holds it."""
    folder = Path(home) / ".jobs"
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"{job}.lock"))
    info = folder / f"{job}.holder.json"
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        holder = ""
        try:
            h = json.loads(info.read_text())
            holder = f" (pid {h.get('pid')} on {h.get('host')} since {h.get('since')})"
        except (OSError, ValueError):
            pass
        raise JobBusy(f"another {job} is running in {Path(home)}{holder}; this run was refused, nothing was changed"
                      ) from None
    try:
        try:
            info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                        "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        except OSError:
            pass  # who holds the lock is only informative (e.g. a full disk)
        yield
    finally:
        info.unlink(missing_ok=True)
        lock.release()


# ---- the jobs as plain functions ----------------------------------------------------------------------------
def _home(home: str | None) -> Path:
    path = resolve_home(home)
    offline_env(path)
    return path


def release_fingerprint_current(home: Path, sources: list[str]) -> set[tuple[str, str]]:
    """(dialogue id, labels) of what a publish would take now: accepted dialogues of ``sources``, reviews applied."""
    wh = Warehouse(home)
    if "dialogues" not in wh.tables():
        return set()
    con = wh.connect()
    try:
        effective_views(con)
        src = ", ".join("'" + s.replace("'", "''") + "'" for s in sources)
        rows = con.sql(
            f"""SELECT d.id, string_agg(t.label, '|' ORDER BY t.idx) FROM effective_dialogues d
                JOIN effective_turns t ON t.dialogue_id = d.id
                WHERE d.status = 'accepted' AND d.source IN ({src}) GROUP BY d.id"""
        ).fetchall()
    finally:
        con.close()
    return {(i, lab) for i, lab in rows}


def release_fingerprint(release_dir: Path) -> set[tuple[str, str]]:
    files = sorted((release_dir / "data" / "dialogues").glob("*.parquet"))
    if not files:
        return set()
    lst = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    con = duckdb.connect()
    try:
        rows = con.sql(f"SELECT dialogue_id, array_to_string(emotions, '|') FROM read_parquet([{lst}])").fetchall()
    finally:
        con.close()
    return {(i, lab) for i, lab in rows}


def publish_job(home: str | None = None, config: str | None = None, only_if_changed: bool = True) -> dict[str, Any]:
    """Publish a new release when the accepted set (or a label) changed since the latest release. Waits for the
    warehouse write lock while another writer (a publish from the command line, a compaction) holds it."""
    path = _home(home)
    cfg = load_config(config)
    with storage_errors(path, "publish"), job_lock(path, "publish"):
        if only_if_changed:
            rels = list_releases(Warehouse(path))
            if rels:
                last = rels[-1]
                if release_fingerprint(Path(last["path"])) == release_fingerprint_current(path, cfg.publish.sources):
                    return {"skipped": f"nothing changed since release {last['version']}", "version": last["version"]}
        summary = publish_release(path, cfg)
    return summary


def close_dead_runs(home: Path, command: str) -> list[str]:
    """Mark the ``command`` runs still recorded as running in ``home`` as failed ("its process died"): called while
    holding that job's lock, which every such run held while alive, so none of them can still be running (a
    worker killed with -9 left its record behind). Returns their ids."""
    wh = Warehouse(home)
    if "runs" not in wh.tables():
        return []
    rows = wh.query("SELECT * FROM runs WHERE status = 'running' AND command = ?", [command]).to_pylist()
    fields = set(Run.model_fields)
    dead = []
    for row in rows:
        run = Run.model_validate({k: v for k, v in row.items() if k in fields})
        metrics = json.loads(run.metrics_json or "{}") | {
            "error": "interrupted: its process died (a killed worker or machine); found by the next run, which resumes it"}
        dead.append(run.model_copy(update={"status": "failed", "metrics_json": json.dumps(metrics, sort_keys=True)}))
    if dead:
        wh.upsert(dead)
    return [r.id for r in dead]


def build_job(home: str | None = None, config: str | None = None, models: str | None = None,
              dialogues: int | None = None, seed: int = 0, runner: str | None = None,
              publish: bool = True) -> dict[str, Any]:
    """``emoforge build`` as a job: the same scenarios and cache, so a rerun after a crash only redoes what is
    missing; refused (:class:`JobBusy`) while another build runs in the same home."""
    path = _home(home)
    cfg = load_build_config(config)
    mcfg = load_models_config(models)
    with storage_errors(path, "build"), job_lock(path, "build"):
        close_dead_runs(path, "build-job")
        summary = run_build(path, cfg, mcfg, n_dialogues=dialogues, seed=seed, publish=publish,
                            task_runner=make_task_runner(runner), progress=False, command="build-job")
    return {k: v for k, v in summary.items() if k != "metrics"} | {"metrics": summary.get("metrics", {})}


def review_pull_job(home: str | None = None, project: str | None = None, url: str | None = None) -> dict[str, Any]:
    """``emoforge review pull``: fetch, validate and store the Label Studio annotations (idempotent)."""
    path = _home(home)
    with storage_errors(path, "review pull"), job_lock(path, "review-pull"):
        rep = pull(path, connect(path, url), title=project or DEFAULT_PROJECT)
    return rep.as_dict() | {"problem_list": [str(p) for p in rep.problems][:50]}


# ---- Prefect flows over the jobs (the entrypoints of prefect.yaml) ------------------------------------------
@flow(name="scheduled-publish", persist_result=False, log_prints=True)
def publish_flow(home: str | None = None, config: str | None = None, only_if_changed: bool = True) -> dict:
    """Publish a release of the accepted dialogues when something changed since the last one."""
    return publish_job(home, config, only_if_changed)


@flow(name="scheduled-build", persist_result=False, log_prints=True)
def build_flow(home: str | None = None, config: str | None = None, models: str | None = None,
               dialogues: int | None = None, seed: int = 0, runner: str | None = None, publish: bool = True) -> dict:
    """Generate, check and judge dialogues (``emoforge build``), then publish."""
    return build_job(home, config, models, dialogues, seed, runner, publish)


@flow(name="scheduled-review-pull", persist_result=False, log_prints=True)
def review_pull_flow(home: str | None = None, project: str | None = None, url: str | None = None) -> dict:
    """Pull finished human reviews from Label Studio into the warehouse."""
    return review_pull_job(home, project, url)


# ---- deployment specs (prefect.yaml) ------------------------------------------------------------------------
@dataclass
class DeploymentSpec:
    name: str
    entrypoint: str  # "flows/schedules.py:publish_flow"
    description: str = ""
    cron: str | None = None
    interval_s: float | None = None
    anchor: datetime | None = None  # first run of an interval schedule (default: when it is registered)
    timezone: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int | None = 1
    tags: list[str] = field(default_factory=list)
    paused: bool = False

    @property
    def flow_attr(self) -> str:
        return self.entrypoint.rsplit(":", 1)[1]

    def load_flow(self):
        path, attr = self.entrypoint.rsplit(":", 1)
        module = path.removesuffix(".py").replace("/", ".")
        mod = importlib.import_module(module)
        return getattr(mod, attr)

    def schedule_kwargs(self) -> dict[str, Any]:
        if self.interval_s:
            return {"schedules": [Interval(timedelta(seconds=self.interval_s), anchor_date=self.anchor,
                                           timezone=self.timezone, active=not self.paused)]}
        if self.cron:
            return {"schedules": [Cron(self.cron, timezone=self.timezone, active=not self.paused)]}
        return {}


def load_specs(path: Path = PREFECT_YAML, only: list[str] | None = None) -> list[DeploymentSpec]:
    """The deployments of ``prefect.yaml`` (its ``deployments:`` list) as :class:`DeploymentSpec`."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f"cannot read {path}: {exc}") from None
    specs = []
    for i, d in enumerate(data.get("deployments") or []):
        if not isinstance(d, dict) or not d.get("name") or not d.get("entrypoint"):
            raise ScheduleError(f"{path}: deployments[{i}] needs a name and an entrypoint")
        cron = interval = tz = None
        active = True
        for s in d.get("schedules") or ([d["schedule"]] if d.get("schedule") else []):
            cron = s.get("cron", cron)
            interval = s.get("interval", interval)
            tz = s.get("timezone", tz)
            active = s.get("active", True)
        limit = d.get("concurrency_limit", 1)
        if isinstance(limit, dict):
            limit = limit.get("limit", 1)
        specs.append(DeploymentSpec(
            name=d["name"], entrypoint=d["entrypoint"], description=d.get("description", ""), cron=cron,
            interval_s=float(interval) if interval else None, timezone=tz,
            parameters={k: v for k, v in (d.get("parameters") or {}).items() if v is not None},
            concurrency_limit=limit, tags=list(d.get("tags") or []), paused=not active))
    if only:
        unknown = sorted(set(only) - {s.name for s in specs})
        if unknown:
            raise ScheduleError(f"unknown deployment(s) {unknown}; {path} has {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in only]
    return specs


def _with_home(spec: DeploymentSpec, home: Path | None) -> dict[str, Any]:
    params = dict(spec.parameters)
    if home is not None:
        params["home"] = str(home)
    return params


def to_runner_deployments(specs: list[DeploymentSpec], home: Path | None = None) -> list:
    """``flow.to_deployment(...)`` for each spec (what :func:`serve` runs)."""
    out = []
    for spec in specs:
        fl = spec.load_flow()
        out.append(fl.to_deployment(
            name=spec.name, description=spec.description or None, parameters=_with_home(spec, home),
            concurrency_limit=spec.concurrency_limit, tags=spec.tags, **spec.schedule_kwargs()))
    return out


def serve(specs: list[DeploymentSpec], home: Path | None = None, limit: int | None = None) -> None:
    """Register the deployments with the server at ``PREFECT_API_URL`` and run their scheduled runs in this
    process's subprocesses until interrupted (``prefect.serve``). No work pool or worker needed."""
    deployments = to_runner_deployments(specs, home)
    prefect_serve(*deployments, limit=limit, print_starting_message=True)


def ensure_work_pool(name: str = DEFAULT_POOL) -> bool:
    """Create a ``process`` work pool named ``name`` unless it exists; True when it was created."""
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return True
        if pool.type != "process":
            raise ScheduleError(f"work pool {name!r} exists with type {pool.type!r}; emoforge deploys to a 'process' pool")
        return False


def deploy(specs: list[DeploymentSpec], pool: str = DEFAULT_POOL, home: Path | None = None,
           source: Path = REPO_ROOT, crashed_after_s: float | None = DEFAULT_CRASHED_AFTER_S) -> list[str]:
    """Register every spec as a deployment of the process work pool ``pool`` (created when missing); its code is
    read from ``source`` (this checkout) by the worker; ``EMOFORGE_HOME`` is passed to the flow runs, and heartbeats
    are switched on so that a run whose worker died is marked Crashed after ``crashed_after_s`` seconds by the
    pool's automation (:mod:`flows.unresponsive`; None: no automation). Returns the deployment ids. Start a worker
    with ``prefect worker start --pool <pool>`` (``emoforge deploy --worker``)."""
    if crashed_after_s is not None:
        check_window(crashed_after_s)  # before anything is registered
    ensure_work_pool(pool)
    ids = []
    env = heartbeat_env() | ({"EMOFORGE_HOME": str(home)} if home is not None else {})
    for spec in specs:
        fl = flow.from_source(source=str(source), entrypoint=spec.entrypoint)
        dep_id = fl.deploy(
            name=spec.name, work_pool_name=pool, description=spec.description or None,
            parameters=_with_home(spec, home), concurrency_limit=spec.concurrency_limit, tags=spec.tags,
            job_variables={"env": env, "working_dir": str(source)},
            print_next_steps=False, build=False, push=False, ignore_warnings=True, **spec.schedule_kwargs())
        ids.append(str(dep_id))
    if crashed_after_s is not None:
        try:
            ensure_crash_detection(pool, _pool_deployment_ids(pool, ids), crashed_after_s)
        except (PrefectHTTPStatusError, httpx.HTTPError) as exc:
            raise ScheduleError(
                f"the {len(ids)} deployment(s) are registered, but the automation that marks a run Crashed when its "
                f"worker dies could not be created on the server ({type(exc).__name__}: {exc}); without it a killed "
                "run stays Running and holds its deployment for 5 minutes. Fix the server's events/automations, or "
                "deploy with --crashed-after 0 to go without") from None
    return ids


def _pool_deployment_ids(pool: str, ids: list[str]) -> list[str]:
    """``ids`` plus the pool's other deployments (a deploy of a subset keeps the others covered)."""
    with get_client(sync_client=True) as client:
        others = client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
    return sorted(set(ids) | {str(d.id) for d in others})


# ---- a local Prefect server --------------------------------------------------------------------------------
def server_healthy(api_url: str, timeout: float = 3.0) -> bool:
    try:
        return httpx.get(api_url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def server_env(prefect_home: Path, host: str, port: int, ui: bool) -> dict[str, str]:
    """The server's environment: its database under ``prefect_home``, no telemetry, and the API URL of *this*
    server for the server and its UI (an inherited ``PREFECT_API_URL`` of another server must not leak into the
    UI's settings)."""
    api_url = f"http://{host}:{port}/api"
    env = dict(os.environ)
    env.update({"PREFECT_HOME": str(prefect_home), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_API_URL": api_url, "PREFECT_UI_API_URL": api_url,
                "PREFECT_UI_ENABLED": "true" if ui else "false"})
    return env


def start_server(prefect_home: Path, port: int | None = None, host: str = "127.0.0.1", timeout: float = 180.0,
                 log_path: Path | None = None, extra_env: dict[str, str] | None = None, ui: bool = False,
                 die_with_parent: bool = False) -> tuple[procs.Supervised, str]:
    """Start ``prefect server start`` (loopback, no UI unless ``ui``) with its database under ``prefect_home``, in
    its own process group; wait until its health endpoint answers. Returns (server, api_url); stop it with
    :func:`stop_server` (the whole group: uvicorn included)."""
    port = port or procs.free_port(host)
    api_url = f"http://{host}:{port}/api"
    env = server_env(prefect_home, host, port, ui) | (extra_env or {})
    prefect_home.mkdir(parents=True, exist_ok=True)
    log_path = log_path or prefect_home / "server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    if not ui:
        cmd.append("--no-ui")
    try:
        sup = procs.start(cmd, name="prefect server", env=env, log_path=log_path, port=port, host=host,
                          die_with_parent=die_with_parent)
    except procs.PortBusy as exc:
        raise ScheduleError(str(exc)) from None
    if sup.wait_healthy(lambda: server_healthy(api_url), timeout, interval=0.5):
        return sup, api_url
    exited = not sup.alive()
    sup.stop()
    if exited:
        raise ScheduleError(f"prefect server exited with code {sup.proc.returncode}:\n{sup.log_tail(30)}")
    raise ScheduleError(f"prefect server on {api_url} not healthy after {timeout:.0f}s (log: {log_path})")


def stop_server(server: procs.Supervised, grace: float = 15.0) -> None:
    server.stop(grace)


def run_server(prefect_home: Path, host: str = "127.0.0.1", port: int = 4200, ui: bool = True,
               timeout: float = 180.0, on_ready=None) -> int:
    """``emoforge prefect-server``: a Prefect server (with its UI) in the foreground until SIGTERM/SIGINT, which
    stop its whole process group; it also ends (SIGTERM) when this process is killed."""
    with procs.StopSignals() as signals:  # a SIGINT/SIGTERM while the server starts stops it once it is up
        server, api_url = start_server(prefect_home, port=port, host=host, timeout=timeout, ui=ui,
                                       log_path=prefect_home / "server.log", die_with_parent=True)
        if on_ready is not None and not signals.stopping:
            on_ready(api_url)
        return procs.run_foreground(server, signals=signals)
