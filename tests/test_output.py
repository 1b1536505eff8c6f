"""Tables never cut an identifier: piped, in a narrow terminal, or as JSON."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from rich.console import Console
from rich.table import Table

from srkd.cli.output import show
from srkd.distill import METHODS, method_doc
from srkd.models.registry import PRESETS


def _run(*args, env=None) -> str:
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "srkd", *args], capture_output=True, text=True, env=e, timeout=120,
                          check=True).stdout


def _in_pty(*args, columns: int) -> str:
    """Run the CLI on a pseudo-terminal COLUMNS wide (rich sees a real terminal)."""
    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS=str(columns), LINES="50", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "srkd", *args], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_models_piped_keeps_whole_preset_names():
    out = _run("models")
    assert "…" not in out
    lines = out.splitlines()
    for name in PRESETS:
        assert any(line.split()[:1] == [name] for line in lines), name  # `srkd models | grep NAME` finds a full row
    row = next(line for line in lines if line.startswith("edsr-baseline-x4 "))
    assert "1.518M" in row and "download" in row


def test_models_in_a_60_column_terminal_cuts_nothing():
    out = _in_pty("models", columns=60)
    assert "…" not in out and "edsr-baseline-x4" in out and "carn-m-x4" in out


def test_list_methods_piped_and_narrow_keep_every_description_whole():
    for out in (_run("distill", "--list-methods"), _in_pty("distill", "--list-methods", columns=60)):
        flat = out.replace("\r", "")
        assert "…" not in flat
        for cls in METHODS.values():
            for name, _, _, help_ in method_doc(cls).params:
                assert any(name in line and help_ in line for line in flat.splitlines()), (cls.name, name)


def test_json_for_scripts():
    models = json.loads(_run("models", "--json"))
    assert {m["preset"] for m in models} == set(PRESETS)
    assert next(m for m in models if m["preset"] == "edsr-baseline-x4")["params"] == 1517571  # 1.518 M without the mean shifts
    methods = json.loads(_run("distill", "--list-methods", "--json"))
    assert [m["name"] for m in methods] == list(METHODS)
    assert any(p["name"] == "lambda_kd" for p in methods[1]["params"])


def test_show_prints_the_rich_table_when_it_fits(capsys):
    table = Table(title="t")
    table.add_column("name")
    table.add_row("a-long-identifier-x4")
    wide = Console(force_terminal=True, width=120, color_system=None)
    with wide.capture() as cap:
        show(wide, table)
    assert "┃" in cap.get() or "│" in cap.get()
    narrow = Console(force_terminal=True, width=10, color_system=None, file=sys.stdout)
    show(narrow, table)
    assert "a-long-identifier-x4" in capsys.readouterr().out
