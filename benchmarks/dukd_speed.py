"""Seconds per training iteration of DUKD against plain KD, same student, teacher and batch.

    python benchmarks/dukd_speed.py                       # EDSR-baseline x4 teacher -> EDSR 16/32 student
    python benchmarks/dukd_speed.py --batch 16 --patch 48 --steps 5 --threads 2

An iteration is what the engine does per batch, including DUKD's optional second optimiser step
(``two_step``): forward of the student (and of the teacher under no_grad in the fastest
precision) on every input the method uses, backward, Adam step(s). Weights are random: speed does
not depend on them. The first ``--warmup`` iterations of each variant are not timed; the
variants are timed round-robin so that load from other processes affects them alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from srkd.distill import build_distiller
from srkd.models import build_from_spec

VARIANTS = {
    "kd": ("kd", {}),
    "kd+upcycle (zoom-in only)": ("kd", {"upcycle": True, "zoom_out": False}),
    "dukd (EDSR recipe)": ("dukd", {"recipe": "edsr"}),
    "dukd (RCAN recipe)": ("dukd", {"recipe": "rcan"}),
    "dukd two_step (official)": ("dukd", {"recipe": "edsr", "two_step": True}),
}


class Variant:
    """One method with its own networks and optimiser; :meth:`iteration` is one timed engine step."""

    def __init__(self, method, params, args):
        torch.manual_seed(0)
        teacher = build_from_spec(args.teacher).eval()
        student = build_from_spec(args.student)
        if args.channels_last:
            student = student.to(memory_format=torch.channels_last)
            teacher = teacher.to(memory_format=torch.channels_last)
        self.d = build_distiller(method, student, teacher, params, teacher_precision=args.teacher_precision)
        self.d.train()
        self.opt = torch.optim.Adam(self.d.trainable_parameters(), lr=1e-4)
        self.bf16 = args.precision == "bf16"

    def iteration(self, lr, hr) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) of one iteration."""
        d, opt = self.d, self.opt
        phases = d.steps_per_batch
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        for phase in range(phases):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                terms = d(lr, hr) if phases == 1 else d(lr, hr, phase=phase)
            sum(v.float() for v in terms.values()).backward()
            opt.step()
            if phase + 1 < phases and not d.carry_grad:
                opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="edsr-baseline-x4")
    ap.add_argument("--student", default="edsr:n_resblocks=16,n_feats=32,scale=4")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=48, help="LR patch side")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="student step precision (autocast)")
    ap.add_argument("--teacher-precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from the list above")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    scale = build_from_spec(args.student).scale
    lr = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    hr = torch.rand(args.batch, 3, args.patch * scale, args.patch * scale, generator=g)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "kd" not in names:
        names.insert(0, "kd")
    variants = {name: Variant(*VARIANTS[name], args) for name in names}
    for _ in range(args.warmup):
        for v in variants.values():
            v.iteration(lr, hr)
    # Round-robin, one iteration of each variant per round: load from other processes on a
    # shared machine then hits every variant alike instead of whichever ran at the time.
    times = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for _ in range(args.steps):
        for name, v in variants.items():
            wall, used = v.iteration(lr, hr)
            times[name].append(wall)
            cpu[name].append(used)
    rows = {name: statistics.median(t) for name, t in times.items()}
    # CPU seconds of this process barely depend on what else runs on the machine, so their
    # ratio is the robust cost figure on a shared machine; wall time is what a user waits.
    cpu_rows = {name: statistics.median(t) for name, t in cpu.items()}
    if not args.json:
        for name, sec in rows.items():
            print(f"{name:28s} {sec:7.3f} s/it  x{sec / rows['kd']:.2f}  (min {min(times[name]):.3f})  "
                  f"cpu {cpu_rows[name]:.3f} s  x{cpu_rows[name] / cpu_rows['kd']:.2f}", flush=True)
    info = {
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "teacher": args.teacher, "student": args.student,
        "batch": args.batch, "patch": args.patch, "precision": args.precision,
        "teacher_precision": args.teacher_precision, "iterations_timed": args.steps,
        "seconds_per_iteration": {m: round(s, 4) for m, s in rows.items()},
        "relative_to_kd": {m: round(s / rows["kd"], 2) for m, s in rows.items()},
        "cpu_seconds_per_iteration": {m: round(s, 4) for m, s in cpu_rows.items()},
        "cpu_relative_to_kd": {m: round(s / cpu_rows["kd"], 2) for m, s in cpu_rows.items()},
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"\n{info['machine']}, torch {info['torch']}, {info['threads']} threads, batch {args.batch}, "
              f"LR patch {args.patch}, step precision {args.precision}, teacher precision {args.teacher_precision}")
        print("| variant | s/iteration (wall) | x kd | CPU s/iteration | x kd |\n|---|---|---|---|---|")
        for m, s in rows.items():
            print(f"| {m} | {s:.3f} | {s / rows['kd']:.2f} | {cpu_rows[m]:.3f} | {cpu_rows[m] / cpu_rows['kd']:.2f} |")


if __name__ == "__main__":
    main()
