"""Shared fixtures. Tests that need ../shared/data skip with a reason when SRKD_DATA is unset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ENV = os.environ.get("SRKD_DATA")
# The torch path is what most tests pin down exactly (module-scoped fixtures included, which run
# before the per-test fixture below); test_backends.py sets its own backends.
os.environ["SRKD_BACKEND"] = "torch"
DATA = Path(DATA_ENV) if DATA_ENV else None


def data_path(*parts: str) -> Path:
    """Path under SRKD_DATA, skipping the test when the real data is not available."""
    if DATA is None or not DATA.is_dir():
        pytest.skip("real data not available: set SRKD_DATA to the shared data folder (CI does)")
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present in SRKD_DATA")
    return path


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test runs with TORCH_NUM_THREADS torch threads (default 2, CI's cores) and leaves the
    count as it found it: srkd no longer changes it process-wide, so neither do the tests."""
    from srkd.infer.device import torch_threads

    with torch_threads(int(os.environ.get("TORCH_NUM_THREADS") or 2)):
        yield


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Keep srkd's and the Hub's caches out of the user's home during tests."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SRKD_CACHE", str(cache / "srkd"))
    monkeypatch.setenv("HF_HOME", str(cache / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_NUM_THREADS", os.environ.get("TORCH_NUM_THREADS", "2"))
    monkeypatch.setenv("SRKD_BACKEND", "torch")


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from srkd.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()
