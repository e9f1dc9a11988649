"""The console script loads only the command module it needs; its index must name every command's module."""

from __future__ import annotations

import ast
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
