"""Seconds per training step of every distillation method, relative to ``scratch``.

Same student, teacher, batch and precision for every method, on this machine, in one run:

    python benchmarks/distill_speed.py                      # EDSR-baseline x4 teacher -> EDSR 16/32 student
    python benchmarks/distill_speed.py --batch 16 --patch 48 --steps 10 --precision bf16

A step is what the engine does per iteration: the method's forward (student with feature hooks,
teacher under no_grad in the fastest precision, loss terms), backward, Adam step, with the
engine's bf16 autocast, channels-last and fp32 image convolutions. Weights are random: speed does
not depend on them. Methods run interleaved, one step each per round; the first ``--warmup``
rounds are not timed; medians of wall-clock and of process CPU time are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from srkd.compress import teacher_slice_width
from srkd.distill import METHODS, build_distiller, get_method
from srkd.models import build_from_spec
from srkd.provenance import cpu_name
from srkd.precision import image_convs_fp32


def make_step(method, args):
    """Build the method on fresh networks and return a closure running one training step."""
    torch.manual_seed(0)
    teacher = build_from_spec(args.teacher).eval()
    student = build_from_spec(args.student)
    params = {}
    if get_method(method).shares_teacher:
        # csd trains the teacher-size network and the slice that is --student, jointly; its
        # contrastive term needs VGG-19 ImageNet weights, which this machine cannot download, so
        # it is timed as mini-x4 runs it (lambda_cl 0).
        params = {"width": teacher_slice_width(student, teacher), "lambda_cl": 0}
        student = build_from_spec(args.teacher)
    if args.channels_last:
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
    d = build_distiller(method, student, teacher, params, teacher_precision=args.teacher_precision)
    d.train()
    opt = torch.optim.Adam(d.trainable_parameters(), lr=1e-4)
    enabled = args.precision == "bf16"
    last = {}

    def step(lr, hr):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled), image_convs_fp32(student, enabled):
            terms = d(lr, hr)
        sum(terms.values()).backward()
        opt.step()
        last.update({k: round(float(v.detach()), 4) for k, v in terms.items()})

    return step, last


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
    ap.add_argument("--methods", default="scratch,kd,fitnet,at,fakd,facd", help=f"comma-separated, from {', '.join(METHODS)}")
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
    steps = {m: make_step(m, args) for m in methods}
    # Rounds of one step per method, interleaved: load from other processes on a shared machine then
    # hits every method alike, and the median per method discards the disturbed rounds.
    wall = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    for i in range(args.warmup + args.steps):
        for m in methods:
            w0, c0 = time.perf_counter(), time.process_time()
            steps[m][0](lr, hr)
            if i >= args.warmup:
                wall[m].append(time.perf_counter() - w0)
                cpu[m].append(time.process_time() - c0)
    rows = {m: statistics.median(wall[m]) for m in methods}
    cpu_rows = {m: statistics.median(cpu[m]) for m in methods}
    if not args.json:
        for m in methods:
            print(f"{m:8s} {rows[m]:7.3f} s/step  x{rows[m] / rows['scratch']:.2f}   cpu {cpu_rows[m]:7.3f} s  "
                  f"x{cpu_rows[m] / cpu_rows['scratch']:.2f}  {steps[m][1]}", flush=True)
    info = {
        "machine": cpu_name(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "teacher": args.teacher, "student": args.student,
        "batch": args.batch, "patch": args.patch, "precision": args.precision,
        "teacher_precision": args.teacher_precision, "steps_timed": args.steps,
        "seconds_per_step": {m: round(s, 4) for m, s in rows.items()},
        "relative_to_scratch": {m: round(s / rows["scratch"], 2) for m, s in rows.items()},
        "cpu_seconds_per_step": {m: round(s, 4) for m, s in cpu_rows.items()},
        "cpu_relative_to_scratch": {m: round(s / cpu_rows["scratch"], 2) for m, s in cpu_rows.items()},
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"\n{info['machine']}, torch {info['torch']}, {info['threads']} threads, batch {args.batch}, "
              f"LR patch {args.patch}, step precision {args.precision}, teacher precision {args.teacher_precision}")
        print("| method | s/step (wall) | x scratch | CPU s/step | x scratch |\n|---|---|---|---|---|")
        for m, s in rows.items():
            c = cpu_rows[m]
            print(f"| {m} | {s:.3f} | {s / rows['scratch']:.2f} | {c:.3f} | {c / cpu_rows['scratch']:.2f} |")


if __name__ == "__main__":
    main()
