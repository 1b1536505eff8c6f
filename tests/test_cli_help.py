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


def test_engine_options_are_declared_once_for_both_commands():
    """srkd teacher-train and srkd distill take the same engine options, named as the config maps them."""
    from srkd.cli.options import ENGINE
    from srkd.train.config import OPTION_KEYS

    assert set(ENGINE) == set(OPTION_KEYS)
    for command in ("teacher-train", "distill"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0
        for name in ENGINE:
            flag = "--augment" if name == "augment" else "--" + name.replace("_", "-")
            assert flag in out, (command, flag)


def test_help_fits_80_columns_with_room_for_the_text(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    for command in ("distill", "teacher-train", "upscale", "eval", "bench"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and max(len(line) for line in out.splitlines()) <= 80, command
        # wrapped option help continues at a fixed column that leaves at least 44 columns of text
        # (rich's table left about 22 at 80 columns)
        starts = {len(line) - len(line.lstrip()) for line in out.splitlines() if line.startswith("        ")}
        assert starts and max(starts) <= 36, (command, starts)
