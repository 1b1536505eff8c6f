"""Every command's --help renders (rich markup in help strings can break it) and shows defaults."""

import pytest

from conftest import run_cli
from srkd.cli import build_app


def _commands():
    app = build_app()
    names = [c.name for c in app.registered_commands]
    names += [f"{g.name} {c.name}" for g in app.registered_groups for c in g.typer_instance.registered_commands]
    return names


@pytest.mark.parametrize("command", _commands())
def test_help_renders(command):
    code, out, err = run_cli(*command.split(), "--help")
    assert code == 0, err
    assert "Usage" in out


def test_top_level_help_lists_commands():
    code, out, _ = run_cli("--help")
    assert code == 0
    for name in ("eval", "models", "convert", "upscale", "teacher-train", "distill", "compress", "data"):
        assert name in out
