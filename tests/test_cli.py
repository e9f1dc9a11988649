"""The console script loads only the command module it needs; its index must name every command's module."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from emoforge.cli import build_app, command_index, command_modules


def _names(app) -> set[str]:
    return ({c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
            | {g.name for g in app.registered_groups})


def test_index_names_every_command_with_its_module():
    index = command_index()
    assert _names(build_app()) == set(index)
    for mod in command_modules():
        assert _names(build_app([mod])) == {n for n, m in index.items() if m == mod}, mod


def test_console_script_loads_only_the_module_asked_for(tmp_path):
    code = ("import sys; sys.argv = ['emoforge', 'releases', '--help']\n"
            "import emoforge.cli as c\n"
            "try:\n    c.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('emoforge.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "--json" in out.stdout  # the releases command's own help
    loaded = set(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
    assert "emoforge.commands.warehouse" in loaded
    # the other commands' modules (and what only they import) stay unloaded
    assert not loaded & {f"emoforge.commands.{m}" for m in ("build", "review", "train", "llm", "ops", "speech")}, loaded


def test_console_script_sets_the_homes_prefect_settings_before_prefect_is_imported(tmp_path):
    """Prefect reads its settings when it is imported; the build command's module imports it. Run from a clean
    environment (as a new user's shell), the console script must still put Prefect's database under the home and
    give its ephemeral server the long start-up timeout (a first start migrates the database: 20 s, Prefect's
    default, was too short on a loaded machine and the README's main job failed)."""
    home = tmp_path / "h"
    code = ("import sys; sys.argv = ['emoforge', 'build', '--home', sys.argv[1], '--help']\n"
            "import emoforge.cli as c\n"
            "try:\n    c.main()\nexcept SystemExit:\n    pass\n"
            "assert 'prefect' in sys.modules\n"
            "from prefect.settings import PREFECT_HOME as H, PREFECT_LOGGING_LEVEL as L\n"
            "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as T\n"
            "print(repr((str(H.value()), T.value(), L.value())))")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "HF_", "EMOFORGE_")) and k not in ("MPLCONFIGDIR", "DO_NOT_TRACK")}
    out = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "Failed to create the Prefect home directory" not in out.stderr  # the home did not exist before
    prefect_home, timeout, level = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert prefect_home == str(home.resolve() / ".prefect")
    assert timeout == 120 and level == "WARNING"
