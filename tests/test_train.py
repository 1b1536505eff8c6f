"""The training engine end to end: exact resume, determinism, signals, corrupted checkpoints, DDP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import data_path, run_cli
from srkd.train import config as C
from srkd.train.engine import Supervised, train
from srkd.train.method import Method
from srkd.train.runs import CheckpointWarning, read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = "edsr:n_resblocks=1,n_feats=8"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three smooth synthetic images (a learnable signal, unlike noise)."""
    folder = tmp_path_factory.mktemp("train-images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:88] / 9.0
    for i in range(3):
        phase = rng.uniform(0, 6, 3)
        img = np.stack([np.sin(xx * (1 + c / 3) + yy * (c - 1) / 2 + phase[c]) for c in range(3)], -1)
        Image.fromarray(((img + 1) * 127.5).astype(np.uint8)).save(folder / f"s{i}.png")
    return folder


def cli_args(images: Path, out: Path, steps: int, *extra: str, batch: int = 4) -> list[str]:
    return ["teacher-train", "--arch", TINY, "--scale", "2", "--data", str(images), "--val", "none",
            "--steps", str(steps), "--batch", str(batch), "--patch", "16", "--precision", "fp32", "--threads", "1",
            "--out", str(out), "--quiet", *extra]


def config(images: Path, out: Path, steps: int, **sections) -> C.TrainConfig:
    raw = {"model": {"arch": TINY, "scale": 2}, "data": {"sources": [str(images)], "batch": 4, "patch": 16},
           "train": {"steps": steps, "precision": "fp32", "threads": 1}, "val": {"sets": []},
           "run": {"out": str(out), "ckpt_every": 5}}
    for sec, vals in sections.items():
        raw.setdefault(sec, {}).update(vals)
    return C.from_dict(raw)


def losses(run: Path) -> dict[int, float]:
    recs = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    steps = [r["step"] for r in recs]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["loss"] for r in recs}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _env() -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)


def _last_step(run: Path) -> int:
    recs = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    return recs[-1]["step"] if recs else 0


def test_resume_after_sigkill_is_exact(images, tmp_path):
    steps = 60
    base = [sys.executable, "-m", "srkd"]
    ref = tmp_path / "ref"
    subprocess.run(base + cli_args(images, ref, steps, "--ckpt-every", "10", batch=32), check=True, env=_env(), timeout=120)

    run = tmp_path / "killed"
    proc = subprocess.Popen(base + cli_args(images, run, steps, "--ckpt-every", "10", batch=32), env=_env())
    deadline = time.time() + 90
    while _last_step(run) < 13 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _last_step(run)
    assert proc.returncode == -signal.SIGKILL and 13 <= killed_at < steps, "the run was not killed mid-way"
    assert not (run / "model.safetensors").exists()
    ckpt = max(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))
    assert ckpt < steps

    again = subprocess.run(base + cli_args(images, run, steps, "--ckpt-every", "10", batch=32), env=_env(), timeout=120,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    want, got = losses(ref), losses(run)
    assert sorted(got) == list(range(1, steps + 1))
    assert got == want  # the same value at every step, before and after the kill
    assert same_weights(ref, run)


def test_determinism_and_seed(images, tmp_path):
    a = train(config(images, tmp_path / "a", 8), progress=False)
    b = train(config(images, tmp_path / "b", 8), progress=False)
    c = train(config(images, tmp_path / "c", 8, train={"seed": 1}), progress=False)
    assert losses(a.run_dir) == losses(b.run_dir) and same_weights(a.run_dir, b.run_dir)
    assert losses(a.run_dir)[1] != losses(c.run_dir)[1]


class SignalAt(Method):
    """Supervised training that sends this process a signal after a given step (deterministic timing)."""

    def __init__(self, student, step: int, signum: int):
        super().__init__()
        self.inner, self.step, self.signum = Supervised(student), step, signum

    def forward(self, lr, hr):
        return self.inner(lr, hr)

    def trainable_modules(self):
        return self.inner.trainable_modules()

    def on_step_end(self, i: int) -> None:
        if i + 1 == self.step:
            os.kill(os.getpid(), self.signum)


def test_sigterm_checkpoints_then_resume_is_exact(images, tmp_path):
    ref = train(config(images, tmp_path / "ref", 30), progress=False)
    cfg = config(images, tmp_path / "run", 30, run={"ckpt_every": 100})
    stopped = train(cfg, lambda s: SignalAt(s, 7, signal.SIGTERM), progress=False)
    assert stopped.interrupted == signal.SIGTERM and stopped.step == 7
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")] == ["step_00000007.pt"]
    assert not (tmp_path / "run" / "model.safetensors").exists()
    # --resume needs only the run folder: every other option comes from its config
    code, out, err = run_cli("teacher-train", "--resume", "--out", str(tmp_path / "run"), "--steps", "12", "--quiet")
    assert code == 2 and "different configuration: train.steps: 30 -> 12" in err
    code, out, err = run_cli("teacher-train", "--resume", "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, err
    assert losses(tmp_path / "run") == losses(ref.run_dir) and same_weights(tmp_path / "run", ref.run_dir)


def test_sigterm_from_outside_exits_143_with_a_checkpoint(images, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "srkd", *cli_args(images, run, 100000, "--ckpt-every", "100000")],
                            env=_env(), stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while _last_step(run) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted at step" in out
    (ckpt,) = (run / "checkpoints").glob("step_*.pt")
    assert int(ckpt.stem.split("_")[1]) == _last_step(run) >= 3


def test_corrupted_latest_checkpoint_falls_back_with_warning(images, tmp_path):
    cfg = config(images, tmp_path / "run", 10)
    first = train(cfg, progress=False)
    reference = weights(first.run_dir)
    latest = first.run_dir / "checkpoints" / "step_00000010.pt"
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    latest.write_bytes(bytes(data))
    (first.run_dir / "model.safetensors").unlink()
    with pytest.warns(CheckpointWarning, match="step_00000010.pt is damaged"):
        again = train(cfg, progress=False)
    assert any("falling back" in n for n in again.notes)
    assert again.step == 10 and again.steps_per_second > 0  # steps 6..10 were trained again
    got = weights(again.run_dir)
    assert all(torch.equal(got[k], reference[k]) for k in reference)


def test_best_and_last_k_checkpoints_are_kept(images, tmp_path):
    cfg = config(images, tmp_path / "run", 12, run={"ckpt_every": 2, "keep": 2})
    train(cfg, progress=False)
    steps = sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert steps == [10, 12]
    for p in (tmp_path / "run" / "checkpoints").glob("step_*.pt"):
        assert (p.parent / (p.name + ".sha256")).is_file()


@pytest.mark.data
def test_loss_falls_on_real_images_and_export_evaluates(tmp_path):
    import shutil

    from srkd.evaluate import evaluate
    from srkd.io.checkpoint import load_model_file

    t91 = data_path("train", "T91")
    sub = tmp_path / "t91"
    sub.mkdir()
    for name in sorted(os.listdir(t91))[:4]:
        shutil.copy(t91 / name, sub / name)
    cfg = C.from_dict({
        "model": {"arch": "edsr:n_resblocks=2,n_feats=16", "scale": 2},
        "data": {"sources": [str(sub)], "batch": 8, "patch": 24},
        "optim": {"lr": 1e-3}, "train": {"steps": 80},  # default precision: bf16 on this CPU
        "val": {"sets": ["set5"], "every": 40}, "run": {"out": str(tmp_path / "run"), "ckpt_every": 40},
    })
    result = train(cfg, progress=False)
    curve = losses(result.run_dir)
    early, late = np.mean([curve[s] for s in range(1, 11)]), np.mean([curve[s] for s in range(61, 81)])
    assert late < 0.5 * early, (early, late)
    vals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r.get("kind") == "val"]
    assert [r["step"] for r in vals] == [40, 80] and vals[-1]["set5_psnr"] > 27
    loaded = load_model_file(result.model_path)
    prov = loaded.provenance
    assert prov["steps"] == 80 and prov["method"]["method"] == "scratch" and "set5" in prov["val"]
    (res,) = evaluate(loaded.model, ["set5"], progress=False)
    assert res.psnr == pytest.approx(result.val["set5"]["psnr"], abs=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ranks_agree(images, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "srkd",
           *cli_args(images, run, 6, "--device", "cpu", "--ckpt-every", "3")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)  # slack for a loaded machine
    assert proc.returncode == 0, proc.stderr[-2000:]
    end = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "end"][-1]
    assert len(end["rank_hashes"]) == 2 and end["rank_hashes"][0] == end["rank_hashes"][1]
    start = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "start"][0]
    assert start["world"] == 2
    state = torch.load(sorted((run / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    assert len(state["rng"]) == 2  # each rank's generators, for an exact multi-process resume
    from srkd.evaluate import evaluate
    from srkd.io.checkpoint import load_model_file

    model = load_model_file(run / "model.safetensors").model
    (res,) = evaluate(model, ["set5"], progress=False)
    assert res.n_images == 5 and np.isfinite(res.psnr)


# --------------------------------------------------------------------------------- bad input


def test_bad_inputs_give_one_line(images, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (cli_args(empty, tmp_path / "r1", 5), "no PNG, BMP or JPEG images"),
        (cli_args(images, tmp_path / "r2", 5, "--patch", "60"), "smaller than the LR patch"),
        (["teacher-train", "--arch", "edsrr", "--data", str(images), "--out", str(tmp_path / "r3")], "unknown model 'edsrr'"),
        (cli_args(images, tmp_path / "r4", 5, "--set", "optim.lrr=1"), "unknown config key 'optim.lrr'"),
        (cli_args(images, tmp_path / "r5", 5, "--precision", "int8"), "train.precision must be one of"),
        (cli_args(images, tmp_path / "r6", 0), "train.steps must be at least 1"),
        (["teacher-train", "--data", str(images)], "no run folder"),
        (cli_args(images, tmp_path / "r8", 5, "--val", "set6"), "unknown dataset 'set6'"),
    ]
    yml = tmp_path / "bad.yaml"
    yml.write_text("optim: {lr: 1e-4, betaz: [0.9, 0.99]}\n")
    cases.append((cli_args(images, tmp_path / "r7", 5, "--config", str(yml)), "did you mean 'betas'"))
    for args, needle in cases:
        code, out, err = run_cli(*args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)


def test_different_config_is_refused_unless_overwrite(images, tmp_path):
    run = tmp_path / "run"
    assert run_cli(*cli_args(images, run, 3))[0] == 0
    code, _, err = run_cli(*cli_args(images, run, 3, "--lr", "0.01"))
    assert code == 2 and "different configuration: optim.lr: 0.0001 -> 0.01" in err
    code, out, err = run_cli(*cli_args(images, run, 3))  # the same command: nothing left to do
    assert code == 0
    code, _, err = run_cli(*cli_args(images, run, 3, "--lr", "0.01", "--overwrite"))
    assert code == 0, err
    assert C.from_dict(C.load_yaml(run / "config.yaml")).optim.lr == 0.01
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    code, _, err = run_cli(*cli_args(images, other, 3))
    assert code == 2 and "not an srkd run folder" in err


def test_cli_error_has_no_traceback_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "srkd", "teacher-train", "--arch", "nope", "--data", str(tmp_path),
                           "--out", str(tmp_path / "r")], env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "unknown model 'nope'" in proc.stderr


def test_tensorboard_scalars_when_available(tmp_path, monkeypatch):
    import types

    from srkd.train.runs import MetricsLog, RunDir

    calls = []

    class Writer:
        def __init__(self, logdir):
            calls.append(("dir", logdir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("closed",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    log = MetricsLog(RunDir(tmp_path), tensorboard=True)
    log.write({"step": 3, "loss": 0.5, "l1": 0.5, "lr": 1e-4})
    log.write({"kind": "val", "step": 3, "set5_psnr": 30.0})
    log.close()
    assert ("dir", str(tmp_path / "tb")) in calls and ("train/loss", 0.5, 3) in calls and ("val/set5_psnr", 30.0, 3) in calls
    assert calls[-1] == ("closed",) and len(read_metrics(tmp_path / "metrics.jsonl")) == 2


# --------------------------------------------------------------------------------- warm start


def test_init_warm_starts_from_another_scale(images, tmp_path):
    """--init x2 weights into a x4 run (EDSR's recipe): everything but the upsampler starts from the
    file, the upsampler is fresh, the reference is recorded, and a wrong file fails before any run
    folder is written."""
    from srkd.io.checkpoint import load_model_file, save_model
    from srkd.models import build_from_spec

    torch.manual_seed(3)
    src = build_from_spec(TINY + ",scale=2")
    src_file = save_model(src, tmp_path / "x2.safetensors")
    args = cli_args(images, tmp_path / "run", 1, "--lr", "1e-12", "--ema", "0", "--init", str(src_file))
    args[args.index("--scale") + 1] = "4"
    code, out, err = run_cli(*args)
    assert code == 0, err
    mf = load_model_file(tmp_path / "run" / "model.safetensors")
    assert mf.model.scale == 4 and mf.provenance["init"] == str(src_file.resolve())
    got, ref = mf.model.state_dict(), src.state_dict()
    body = [k for k in got if not k.startswith("tail.")]
    assert body and all(torch.allclose(got[k], ref[k], atol=1e-6) for k in body)
    # the last conv has the same shape at x2 and x4 but belongs to the upsampler: not copied
    assert got["tail.1.weight"].shape == ref["tail.1.weight"].shape
    assert not torch.allclose(got["tail.1.weight"], ref["tail.1.weight"], atol=1e-3)

    wrong = save_model(build_from_spec("edsr:n_resblocks=1,n_feats=4,scale=2"), tmp_path / "narrow.safetensors")
    code, out, err = run_cli(*cli_args(images, tmp_path / "run2", 1, "--init", str(wrong)))
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "run2").exists(), err
    code, out, err = run_cli(*cli_args(images, tmp_path / "run3", 1, "--init", str(tmp_path / "missing.safetensors")))
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "run3").exists(), err
