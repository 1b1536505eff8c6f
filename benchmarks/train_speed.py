"""Training speed: a plain fp32 eager loop against srkd's engine with its defaults.

    SRKD_DATA=/path/to/shared/data python benchmarks/train_speed.py [--steps-plain 12] [--steps-srkd 30]
        [--workers] [--json out.json]

(a) "plain": what EDSR-PyTorch and BasicSR do -- fp32, NCHW, eager, Adam, L1, one optimiser
    step per batch -- over the same model (EDSR-baseline x4), batch 16 and LR patch 48, fed by the
    same in-memory patch sampler.
(b) "srkd": ``srkd.train.train`` with its default configuration (bf16 autocast where the CPU has
    it, channels_last, EMA, image-space convolutions in fp32, metrics logging), validation and
    checkpoints pushed past the end of the run so that only training steps are timed.

Both report steps per second after two warm-up steps; (b) also reports the share of step time
spent assembling batches. ``--workers`` adds (b) with one background data thread, with and
without giving it a core of its own (threads = cores - 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srkd.data.patches import TrainingSet  # noqa: E402
from srkd.models.registry import build_from_spec  # noqa: E402
from srkd.train import config as C  # noqa: E402
from srkd.train.engine import Supervised, train  # noqa: E402

WARMUP = 2


def data_sources() -> list[str]:
    root = Path(os.environ.get("SRKD_DATA", ""))
    t91 = root / "train" / "T91"
    if not t91.is_dir():
        sys.exit("set SRKD_DATA to the shared data folder (needs train/T91)")
    return [str(t91)]


def plain_loop(sources, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = TrainingSet(sources, 4, 48, progress=False)
    model = build_from_spec("edsr-baseline-x4")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    marks = [(time.perf_counter(), time.process_time())]
    for step in range(1, steps + 1):
        lr_np, hr_np = data.sample(0, step, 0, 16)
        lr = torch.from_numpy(lr_np).permute(0, 3, 1, 2).float().div(255).contiguous()
        hr = torch.from_numpy(hr_np).permute(0, 3, 1, 2).float().div(255).contiguous()
        loss = torch.nn.functional.l1_loss(model(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        marks.append((time.perf_counter(), time.process_time()))
    return _stats(marks[WARMUP:])


def _stats(marks: list[tuple[float, float]]) -> dict:
    """Median wall and CPU seconds per step from (wall, cpu) marks taken at the end of each step.

    On a shared machine other jobs inflate wall time; CPU time (all threads of this process) is
    much less sensitive to them, so both are reported.
    """
    wall = sorted(b[0] - a[0] for a, b in zip(marks, marks[1:]))
    cpu = sorted(b[1] - a[1] for a, b in zip(marks, marks[1:]))
    med, cmed = wall[len(wall) // 2], cpu[len(cpu) // 2]
    return {"steps_per_second": 1 / med, "seconds_per_step": med, "fastest_step": wall[0], "cpu_seconds_per_step": cmed,
            "steps": len(wall)}


class _Timed(torch.nn.Module):
    """srkd's supervised method, recording wall and CPU time at the end of every step."""

    def __init__(self, student):
        super().__init__()
        self.inner = Supervised(student)
        self.marks = []

    def forward(self, lr, hr):
        return self.inner(lr, hr)

    def trainable_modules(self):
        return self.inner.trainable_modules()

    def on_step_end(self, i):
        self.marks.append((time.perf_counter(), time.process_time()))


def srkd_loop(sources, steps: int, workers: int = 0, threads: int = 0) -> dict:
    made = []

    def factory(student):
        made.append(_Timed(student))
        return made[-1]

    with tempfile.TemporaryDirectory() as tmp:
        cfg = C.TrainConfig()
        cfg.data.sources = sources
        cfg.data.workers = workers
        cfg.train.threads = threads
        cfg.train.steps = steps
        cfg.val.sets = []
        cfg.run.out = str(Path(tmp) / "run")
        cfg.run.ckpt_every = steps  # only the end-of-run checkpoint, after the last timed step
        result = train(cfg, factory, progress=False)
    out = _stats(made[0].marks[WARMUP - 1:])
    out.update(data_fraction=result.data_fraction, precision=result.precision, threads=threads or "auto", workers=workers)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-plain", type=int, default=12)
    ap.add_argument("--steps-srkd", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=1, help="alternate (a) and (b) this many times")
    ap.add_argument("--workers", action="store_true", help="also time one background data thread")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sources = data_sources()
    cores = len(os.sched_getaffinity(0))
    out = {"cpu_cores": cores, "torch": torch.__version__, "model": "edsr-baseline-x4", "batch": 16, "lr_patch": 48}
    print(f"{cores} cores, torch {torch.__version__}; EDSR-baseline x4, batch 16, LR patch 48")
    out["rounds"] = []
    for r in range(args.rounds):
        a = plain_loop(sources, args.steps_plain, cores)
        print(f"(a) plain fp32 eager : {a['steps_per_second']:.3f} steps/s (median {a['seconds_per_step']:.2f} s/step, "
              f"fastest {a['fastest_step']:.2f}; {a['cpu_seconds_per_step']:.2f} CPU-s/step)", flush=True)
        b = srkd_loop(sources, args.steps_srkd)
        print(f"(b) srkd defaults    : {b['steps_per_second']:.3f} steps/s (median {b['seconds_per_step']:.2f} s/step, "
              f"fastest {b['fastest_step']:.2f}; {b['cpu_seconds_per_step']:.2f} CPU-s/step; {b['precision']}), "
              f"data loading {100 * b['data_fraction']:.2f}% of step time",
              flush=True)
        out["rounds"].append({"plain_fp32": a, "srkd_default": b, "speedup": a["seconds_per_step"] / b["seconds_per_step"],
                              "cpu_speedup": a["cpu_seconds_per_step"] / b["cpu_seconds_per_step"]})
        print(f"round {r + 1} speed-up (b)/(a): {out['rounds'][-1]['speedup']:.2f}x wall, "
              f"{out['rounds'][-1]['cpu_speedup']:.2f}x CPU time", flush=True)
    out["speedup"] = statistics.median(x["speedup"] for x in out["rounds"])
    if args.workers:
        for threads in (cores, max(cores - 1, 1)):
            key = f"srkd_worker1_threads{threads}"
            out[key] = srkd_loop(sources, args.steps_srkd, workers=1, threads=threads)
            r = out[key]
            print(f"    1 data thread, {threads} torch threads: {r['steps_per_second']:.3f} steps/s "
                  f"({r['cpu_seconds_per_step']:.2f} CPU-s/step), data {100 * r['data_fraction']:.2f}% of step time")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
