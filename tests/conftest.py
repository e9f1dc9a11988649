"""Test-wide set-up: every cache and home under the checkout, every network switch off."""

from __future__ import annotations

import os
import sys
import uuid
import secrets
from pathlib import Path

import pytest

from tests.procs import stop_tagged

ROOT = Path(__file__).resolve().parent.parent
TEST_HOME = ROOT / ".cache" / "test-home"
TEST_HOME.mkdir(parents=True, exist_ok=True)

# before anything imports prefect / datasets / transformers
os.environ["PREFECT_HOME"] = str(TEST_HOME / "prefect")
os.environ["HF_HOME"] = str(TEST_HOME / "hf")
os.environ["XDG_CACHE_HOME"] = str(TEST_HOME / "xdg-cache")
os.environ["XDG_CONFIG_HOME"] = str(TEST_HOME / "xdg-config")
os.environ["UV_CACHE_DIR"] = os.environ.get("UV_CACHE_DIR", str(ROOT / ".cache" / "uv"))
os.environ.pop("EMOFORGE_HOME", None)
# every process this session starts inherits this tag, even one re-parented to PID 1 after its parent was killed
# (a build killed with -9 leaves its ephemeral Prefect server behind): the session's end finds and stops those only
SESSION_TAG = f"EMOFORGE_TEST_SESSION={uuid.uuid4().hex}"
os.environ["EMOFORGE_TEST_SESSION"] = SESSION_TAG.split("=", 1)[1]

from schemas.home import offline_env  # noqa: E402

offline_env(TEST_HOME)

SHARED = ROOT.parent / "shared"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh emoforge home for one test."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}); the shared reference data is needed for this test")
    return SHARED


@pytest.fixture(scope="session")
def prefect_api_url():
    """The API URL of this test process's ephemeral Prefect server (started once), for build subprocesses to share
    instead of each starting its own."""
    from prefect import flow
    from prefect.server.api.server import SubprocessASGIServer

    @flow(name="emoforge-test-warmup")
    def _noop() -> int:
        return 1

    _noop()
    server = SubprocessASGIServer()
    yield server.api_url
    server.stop()


@pytest.hookimpl(trylast=True)  # after the session fixtures' own teardown (the ephemeral server's stop)
def pytest_sessionfinish(session, exitstatus):
    """Stop whatever this session started and left running (SIGTERM, then SIGKILL), and say what it was."""
    server = sys.modules.get("prefect.server.api.server")
    if server is not None:  # the ephemeral API server a flow run in this process started: Prefect stops it at exit,
        from prefect.events.worker import EventsWorker  # which is after this hook; its log and event workers first
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            worker.drain_all(timeout=10)
        for instance in list(server.SubprocessASGIServer._instances.values()):
            instance.stop()
    stopped = stop_tagged(SESSION_TAG)
    if stopped:
        sys.stderr.write("\ntest session left processes running; stopped: " + "; ".join(stopped) + "\n")


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory):
    """A running Label Studio: (home, url, admin token). Stopped at the end of the session."""
    from annotation.server import executable, start, stop

    try:
        executable()
    except Exception as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs Label Studio: {exc}")
        pytest.skip(f"Label Studio is not installed (run `bash scripts/labelstudio-setup.sh`): {exc}")
    home = tmp_path_factory.mktemp("ls-home")
    saved = {k: os.environ.get(k) for k in ("EMOFORGE_LS_USERNAME", "EMOFORGE_LS_PASSWORD", "EMOFORGE_LS_TOKEN")}
    token = secrets.token_hex(20)
    password = secrets.token_urlsafe(12)
    os.environ.update(EMOFORGE_LS_USERNAME="admin@emoforge.test", EMOFORGE_LS_PASSWORD=password, EMOFORGE_LS_TOKEN=token)
    try:
        info = start(home, port=0, timeout=420)
        yield {"home": home, "url": info["url"], "token": token, "password": password, "info": info}
    finally:
        stop(home)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
