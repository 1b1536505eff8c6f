"""Faults a long run meets: a full disk, two processes on one run folder, a corrupt training image."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import run_cli
from srkd.errors import SrkdError
from srkd.io.files import FolderLock, LOCK_NAME
from srkd.train import config as C
from srkd.train.engine import train
from srkd.train.runs import RunDir, read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = "edsr:n_resblocks=1,n_feats=8"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:64, 0:80] / 7.0
    for i in range(3):
        img = np.stack([np.sin(xx * (1 + c / 4) + yy * c / 3 + rng.uniform(0, 6)) for c in range(3)], -1)
        Image.fromarray(((img + 1) * 127.5).astype(np.uint8)).save(folder / f"s{i}.png")
    return folder


def config(images: Path, out: Path, steps: int = 6) -> C.TrainConfig:
    return C.from_dict({"model": {"arch": TINY, "scale": 2}, "data": {"sources": [str(images)], "batch": 2, "patch": 16},
                        "train": {"steps": steps, "precision": "fp32", "threads": 1}, "val": {"sets": []},
                        "run": {"out": str(out), "ckpt_every": 2, "tensorboard": False}})


def _weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def _full_disk_on(match: str):
    """A write_bytes that writes half the data, then fails with ENOSPC, for paths containing ``match``."""
    from srkd.io import files

    real = files.write_bytes

    def write(path, data):
        if match in Path(path).name or match in str(path):
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    return write


# ----------------------------------------------------------------------------------- full disk


def test_full_disk_at_a_checkpoint_keeps_the_previous_one_and_resumes_exactly(images, tmp_path, monkeypatch):
    ref = train(config(images, tmp_path / "ref"), progress=False)
    run = tmp_path / "run"
    import srkd.train.runs as runs

    monkeypatch.setattr(runs, "write_bytes", _full_disk_on("step_00000004"))
    with pytest.raises(SrkdError) as err:
        train(config(images, run), progress=False)
    msg = str(err.value)
    assert "no space left on the device" in msg and "\n" not in msg and "run the same command again" in msg
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000002.pt"]  # the failed one left no file, the previous one is whole
    RunDir(run).read_checkpoint(run / "checkpoints" / "step_00000002.pt")  # checksum verified
    assert not list((run / "checkpoints").glob(".*tmp*")), "a temporary file was left behind"
    monkeypatch.undo()
    again = train(config(images, run), progress=False)
    assert again.step == 6
    a, b = _weights(ref.run_dir), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed from step 2, exactly


def test_full_disk_at_export_keeps_the_existing_file_and_is_one_cli_line(images, tmp_path, monkeypatch):
    from srkd.io import checkpoint
    from srkd.models import build_from_spec

    target = tmp_path / "student.safetensors"
    checkpoint.save_model(build_from_spec(TINY + ",scale=2"), target)
    before = target.read_bytes()
    monkeypatch.setattr(checkpoint, "write_bytes", _full_disk_on("student"))
    with pytest.raises(SrkdError, match="the existing file is untouched"):
        checkpoint.save_model(build_from_spec(TINY + ",scale=2"), target, overwrite=True)
    assert target.read_bytes() == before and not list(tmp_path.glob(".student*"))
    # the same through the CLI: one line, exit 2, no traceback
    monkeypatch.setattr(checkpoint, "write_bytes", _full_disk_on(".model."))
    code, _, err = run_cli("teacher-train", "--arch", TINY, "--scale", "2", "--data", str(images), "--val", "none",
                           "--steps", "2", "--batch", "2", "--patch", "16", "--precision", "fp32", "--threads", "1",
                           "--out", str(tmp_path / "cli"), "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no space left" in err and "Traceback" not in err
    monkeypatch.undo()
    code, _, err = run_cli("teacher-train", "--arch", TINY, "--scale", "2", "--data", str(images), "--val", "none",
                           "--steps", "2", "--batch", "2", "--patch", "16", "--precision", "fp32", "--threads", "1",
                           "--out", str(tmp_path / "cli"), "--quiet")
    assert code == 0, err
    assert (tmp_path / "cli" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------ one run, one process


def test_a_second_process_on_the_same_run_folder_is_refused(images, tmp_path):
    out = tmp_path / "busy"
    args = ["teacher-train", "--arch", TINY, "--scale", "2", "--data", str(images), "--val", "none", "--steps", "3",
            "--batch", "2", "--patch", "16", "--precision", "fp32", "--threads", "1", "--out", str(out), "--quiet"]
    with FolderLock(out):  # as if another srkd were training there
        code, _, err = run_cli(*args)
        assert code == 2 and "is in use by another srkd process" in err and f"pid {os.getpid()}" in err
        assert len(err.strip().splitlines()) == 1
        code, _, err = run_cli("distill", "--method", "scratch", "--student", TINY, "--data", str(images), "--val",
                               "none", "--steps", "2", "--patch", "16", "--batch", "2", "--out", str(out), "-q")
        assert code == 2 and "in use by another srkd process" in err
    code, _, err = run_cli(*args)  # released: the folder (holding only the lock file) is usable
    assert code == 0, err


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "f"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from srkd.io.files import FolderLock\n"
        "with FolderLock(%r):\n    print('locked', flush=True); time.sleep(60)\n") % (str(REPO), str(folder))],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(SrkdError, match=rf"in use by another srkd process \(pid {holder.pid}"):
        with FolderLock(folder):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_NAME).exists()  # the file stays; the kernel dropped the lock with the process
    with FolderLock(folder):
        pass


def test_bench_folder_is_locked(tmp_path):
    proto = tmp_path / "p.yaml"
    proto.write_text("student: edsr:n_resblocks=1,n_feats=8\nconfig: {train: {steps: 1}, val: {sets: []}}\n"
                     "entries: [{label: scratch, method: scratch}]\n")
    with FolderLock(tmp_path / "bench", "bench folder"):
        code, _, err = run_cli("bench", str(proto), "--out", str(tmp_path / "bench"), "--no-report", "-q")
    assert code == 2 and "in use by another srkd process" in err


# ------------------------------------------------------------------------- a corrupt training image


def test_corrupt_training_image_is_reported_by_name_and_skipped(images, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in images.glob("*.png"):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))  # a PNG cut short
    (folder / "empty.jpg").write_bytes(b"")
    cfg = config(folder, tmp_path / "run", steps=2)
    result = train(cfg, progress=False)
    assert result.step == 2
    note = next(n for n in result.notes if "unreadable" in n)
    assert "skipped 2 unreadable training image(s) of 5" in note and "broken.png" in note and "empty.jpg" in note
    start = next(r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "start")
    assert sorted(Path(f).name for f in start["unreadable"]) == ["broken.png", "empty.jpg"] and start["images"] == 3
    # every image unreadable: refused before the run starts, one line
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"junk")
    with pytest.raises(SrkdError, match="none of the 1 training images could be read"):
        train(config(bad, tmp_path / "run2", steps=1), progress=False)
