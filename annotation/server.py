"""Run a real Label Studio server (its own virtual environment) on loopback, with its data under the emoforge home.

Secrets come from environment variables only (never files, argv or logs):

=====================  ==========================================================================
username (e-mail)      ``EMOFORGE_LS_USERNAME`` or ``LABEL_STUDIO_USERNAME``
password               ``EMOFORGE_LS_PASSWORD`` or ``LABEL_STUDIO_PASSWORD``
API token              ``EMOFORGE_LS_TOKEN`` or ``LABEL_STUDIO_USER_TOKEN`` or ``LABEL_STUDIO_API_KEY``
=====================  ==========================================================================

The token is installed as the admin's legacy API token on the first start (legacy tokens are enabled before the
first start; Label Studio 1.23 refuses them otherwise). Sign-up without an invite link is off, and every outbound
call (Sentry, version check, analytics) is switched off. ``server.json`` under the data directory records pid,
port and URL (no secrets) so ``stop``/``status`` find the process again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from schemas import procs

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8081
DEFAULT_HOST = "127.0.0.1"
STATE_FILE = "server.json"

_ENV_NAMES = {
    "username": ("EMOFORGE_LS_USERNAME", "LABEL_STUDIO_USERNAME"),
    "password": ("EMOFORGE_LS_PASSWORD", "LABEL_STUDIO_PASSWORD"),
    "token": ("EMOFORGE_LS_TOKEN", "LABEL_STUDIO_USER_TOKEN", "LABEL_STUDIO_API_KEY"),
}


class LabelStudioError(RuntimeError):
    """Label Studio cannot be started, reached or used; the message says what to do."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    token: str

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r}, password=***, token=***)"


def _env_first(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def api_token() -> str:
    token = _env_first(_ENV_NAMES["token"])
    if not token:
        raise LabelStudioError(
            "no Label Studio API token: set EMOFORGE_LS_TOKEN (or LABEL_STUDIO_USER_TOKEN / LABEL_STUDIO_API_KEY)"
        )
    return token


def credentials() -> Credentials:
    missing = [names[0] for key, names in _ENV_NAMES.items() if not _env_first(names)]
    if missing:
        raise LabelStudioError(
            "Label Studio credentials come from the environment; missing: " + ", ".join(missing)
            + " (or LABEL_STUDIO_USERNAME / LABEL_STUDIO_PASSWORD / LABEL_STUDIO_USER_TOKEN)"
        )
    creds = Credentials(*(_env_first(_ENV_NAMES[k]) for k in ("username", "password", "token")))  # type: ignore[arg-type]
    if "@" not in creds.username:
        raise LabelStudioError("EMOFORGE_LS_USERNAME must be an e-mail address (Label Studio logs in by e-mail)")
    if len(creds.token) < 16:
        raise LabelStudioError("EMOFORGE_LS_TOKEN is too short: use at least 16 random characters")
    if len(creds.password) < 8:
        raise LabelStudioError("EMOFORGE_LS_PASSWORD is too short: Label Studio needs at least 8 characters")
    return creds


def venv_dir() -> Path:
    return Path(os.environ.get("EMOFORGE_LS_VENV") or ROOT / ".venv-labelstudio")


def executable() -> Path:
    exe = venv_dir() / "bin" / "label-studio"
    if not exe.exists():
        raise LabelStudioError(
            f"Label Studio is not installed ({exe} is missing): run `bash scripts/labelstudio-setup.sh` "
            "(or point EMOFORGE_LS_VENV at a virtual environment with label-studio==1.23.2)"
        )
    return exe


def data_dir(home: Path) -> Path:
    return Path(home) / "labelstudio"



def server_env(home: Path, creds: Credentials) -> dict[str, str]:
    """The child's environment: data under the home, secrets from ours, no outbound calls, no open sign-up."""
    ddir = data_dir(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "HEARTEX_", "EMOFORGE_LS_"))}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(ddir),
        DJANGO_DB="sqlite",
        LABEL_STUDIO_USERNAME=creds.username,
        LABEL_STUDIO_PASSWORD=creds.password,
        LABEL_STUDIO_USER_TOKEN=creds.token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        # speech clips for the audio players: served only below a local storage registered for a project
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="/",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        XDG_CONFIG_HOME=str(ddir / "xdg-config"),
        XDG_DATA_HOME=str(ddir / "xdg-data"),
        XDG_CACHE_HOME=str(ddir / "xdg-cache"),
        PYTHONUNBUFFERED="1",
        DO_NOT_TRACK="1",
    )
    return env


def _read_state(home: Path) -> dict | None:
    path = data_dir(home) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _process(state: dict | None) -> psutil.Process | None:
    """The server process recorded in ``state`` if it still runs (same pid and start time)."""
    if not state:
        return None
    try:
        proc = psutil.Process(int(state["pid"]))
        if abs(proc.create_time() - float(state["create_time"])) > 1.0 or not proc.is_running():
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.Error, KeyError, ValueError, TypeError):
        return None


def health(url: str, timeout: float = 3.0) -> bool:
    try:
        r = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        return r.status_code == 200 and r.json().get("status") == "UP"
    except (httpx.HTTPError, ValueError):
        return False


def check_token(url: str, token: str) -> None:
    r = httpx.get(url.rstrip("/") + "/api/current-user/whoami", headers={"Authorization": f"Token {token}"}, timeout=10)
    if r.status_code == 401:
        raise LabelStudioError(
            "Label Studio refused the API token (401). The token is installed on the first start of a data directory; "
            f"if EMOFORGE_LS_TOKEN changed since, set it back or start with a fresh data directory ({url})"
        )
    r.raise_for_status()


def status(home: Path) -> dict:
    state = _read_state(home)
    proc = _process(state)
    if proc is None:
        return {"running": False, "data_dir": str(data_dir(home))}
    url = state["url"]
    return {"running": True, "healthy": health(url), "url": url, "port": state["port"], "pid": state["pid"],
            "data_dir": str(data_dir(home)), "log": state.get("log")}


def start(home: Path, port: int | None = None, timeout: float = 240.0, progress=None) -> dict:
    """Start Label Studio for ``home`` (or return the one already running) and wait until it is healthy.

    ``port=None`` takes ``$EMOFORGE_LS_PORT`` or 8081; ``port=0`` picks a free one. A busy port is an error
    (Label Studio itself would silently move to the next port).
    """
    home = Path(home).resolve()
    creds = credentials()
    current = status(home)
    if current["running"]:
        if not current["healthy"] and not procs.wait_until(lambda: health(current["url"], timeout=2.0), timeout, 1.0, progress):
            raise LabelStudioError(f"Label Studio (pid {current['pid']}) runs but {current['url']}/health does not answer")
        check_token(current["url"], creds.token)
        return current | {"healthy": True, "started": False}

    if port is None:
        port = int(os.environ.get("EMOFORGE_LS_PORT") or DEFAULT_PORT)
    if port == 0:
        port = procs.free_port()
    if not procs.port_free(port):
        raise LabelStudioError(
            f"port {port} on {DEFAULT_HOST} is in use; choose another with --port (or EMOFORGE_LS_PORT), "
            "or --port 0 for any free port"
        )
    exe = executable()
    ddir = data_dir(home)
    ddir.mkdir(parents=True, exist_ok=True)
    log_path = ddir / "server.log"
    first_start = not (ddir / "label_studio.sqlite3").exists()
    if first_start:
        _seed_database(ddir)
    cmd = [str(exe), "start", "--no-browser", "--internal-host", DEFAULT_HOST, "--port", str(port),
           "--data-dir", str(ddir), "--enable-legacy-api-token"]
    sup = procs.start(cmd, name="Label Studio", cwd=ddir, env=server_env(home, creds), log_path=log_path)
    proc = sup.proc
    url = f"http://{DEFAULT_HOST}:{port}"
    state = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "port": port, "url": url,
             "log": str(log_path), "started_at": time.time()}
    tmp = ddir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, ddir / STATE_FILE)

    if not sup.wait_healthy(lambda: health(url, timeout=2.0), timeout, interval=1.0, progress=progress):
        tail = sup.log_tail()
        exited = not sup.alive()
        sup.stop()
        (ddir / STATE_FILE).unlink(missing_ok=True)
        what = "exited" if exited else f"did not answer {url}/health within {timeout:.0f} s"
        raise LabelStudioError(f"Label Studio {what}; last lines of {log_path}:\n{tail}")
    if not _listens_on(proc.pid, port):
        sup.stop()
        (ddir / STATE_FILE).unlink(missing_ok=True)
        raise LabelStudioError(f"Label Studio did not bind {DEFAULT_HOST}:{port} (another process took it?)")
    check_token(url, creds.token)
    return {"running": True, "healthy": True, "started": True, "first_start": first_start, "url": url,
            "port": port, "pid": proc.pid, "data_dir": str(ddir), "log": str(log_path)}


def template_database() -> Path | None:
    """The migrated empty database built by scripts/labelstudio-setup.sh, if present."""
    path = venv_dir() / "emoforge-template" / "label_studio.sqlite3"
    return path if path.is_file() else None


def _seed_database(ddir: Path) -> None:
    """Copy the migrated empty template into a fresh data directory (the first start then skips migrations)."""
    tpl = template_database()
    if tpl is None:
        return
    tmp = ddir / "label_studio.sqlite3.tmp"
    tmp.write_bytes(tpl.read_bytes())
    os.replace(tmp, ddir / "label_studio.sqlite3")


def _listens_on(pid: int, port: int) -> bool:
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return False
    for p in procs:
        try:
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                    return True
        except psutil.Error:
            continue
    return False


def stop(home: Path) -> bool:
    """Stop the server started for ``home``; False when none was running."""
    state = _read_state(home)
    proc = _process(state)
    (data_dir(home) / STATE_FILE).unlink(missing_ok=True)
    if proc is None:
        return False
    procs.stop_group(proc.pid)
    return True


if __name__ == "__main__":  # pragma: no cover - manual use: python -m annotation.server start|stop|status HOME
    cmd, home_arg = sys.argv[1], Path(sys.argv[2])
    out = {"start": start, "stop": stop, "status": status}[cmd](home_arg)
    print(json.dumps(out, indent=1))
