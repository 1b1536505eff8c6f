"""Seconds per training step of every distillation method, relative to ``scratch``.

Same student, teacher, batch and precision for every method, on this machine, in one run:

    python benchmarks/distill_speed.py                      # EDSR-baseline x4 teacher -> EDSR 16/32 student
    python benchmarks/distill_speed.py --batch 16 --patch 48 --steps 10 --precision bf16

A step is what the engine does per iteration: the method's forward (student with feature hooks,
teacher under no_grad in the fastest precision, loss terms), backward, Adam step. Weights are
random: speed does not depend on them. The first ``--warmup`` steps of each method are not timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from srkd.distill import METHODS, build_distiller
from srkd.models import build_from_spec


def time_method(method, args, lr, hr):
    torch.manual_seed(0)
    teacher = build_from_spec(args.teacher).eval()
    student = build_from_spec(args.student)
    if args.channels_last:
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
    d = build_distiller(method, student, teacher, teacher_precision=args.teacher_precision)
    d.train()
    opt = torch.optim.Adam(d.trainable_parameters(), lr=1e-4)
    enabled = args.precision == "bf16"
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            terms = d(lr, hr)
        sum(terms.values()).backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), {k: round(float(v), 4) for k, v in terms.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="edsr-baseline-x4")
    ap.add_argument("--student", default="edsr:n_resblocks=16,n_feats=32,scale=4")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=48, help="LR patch side")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="student step precision (autocast)")
    ap.add_argument("--teacher-precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    scale = build_from_spec(args.student).scale
    lr = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    hr = torch.rand(args.batch, 3, args.patch * scale, args.patch * scale, generator=g)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "scratch" not in methods:
        methods.insert(0, "scratch")
    rows = {}
    for m in methods:
        sec, terms = time_method(m, args, lr, hr)
        rows[m] = sec
        if not args.json:
            print(f"{m:8s} {sec:7.3f} s/step  x{sec / rows['scratch']:.2f}  {terms}", flush=True)
    info = {
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "teacher": args.teacher, "student": args.student,
        "batch": args.batch, "patch": args.patch, "precision": args.precision,
        "teacher_precision": args.teacher_precision, "steps_timed": args.steps,
        "seconds_per_step": {m: round(s, 4) for m, s in rows.items()},
        "relative_to_scratch": {m: round(s / rows["scratch"], 2) for m, s in rows.items()},
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"\n{info['machine']}, torch {info['torch']}, {info['threads']} threads, batch {args.batch}, "
              f"LR patch {args.patch}, step precision {args.precision}, teacher precision {args.teacher_precision}")
        print("| method | s/step | x scratch |\n|---|---|---|")
        for m, s in rows.items():
            print(f"| {m} | {s:.3f} | {s / rows['scratch']:.2f} |")


if __name__ == "__main__":
    main()
