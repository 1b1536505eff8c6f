"""Seconds per training step of ``dckd`` against ``kd``, peak memory, and where DCKD's time goes.

    python benchmarks/dckd_speed.py                          # batch 4, LR 32 px, x4, full-size VQGAN, bf16
    python benchmarks/dckd_speed.py --batch 16 --patch 48 --precision fp32 --steps 3

The VQGAN encoder has the full f16 n1024 architecture (29.6M parameters) with random weights:
speed does not depend on the weights. A step is what the engine does per iteration (method
forward, backward, Adam step), under bf16 autocast with channels_last unless told otherwise.
Each method runs in its own process so that the peak resident memory (ru_maxrss) is its own.
Besides wall-clock seconds, the process's CPU seconds per step are reported: on a shared machine
they are the steadier measure of cost. The DCKD step is split by the CPU time of each forward
part; "backward + Adam" is the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import torch


def run_child(args) -> dict:
    from srkd.distill import build_distiller
    from srkd.models import build_from_spec
    from srkd.train.engine import image_convs_fp32

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = build_from_spec(args.teacher).eval()
    student = build_from_spec(args.student)
    params = {}
    if args.method == "dckd":
        params = {"vqgan": "random", "lcr": args.lcr}
    d = build_distiller(args.method, student, teacher, params, teacher_precision="auto")
    if args.channels_last:
        d.to(memory_format=torch.channels_last)
    d.train()
    opt = torch.optim.Adam(d.trainable_parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    scale = student.scale
    lr = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    hr = torch.rand(args.batch, 3, args.patch * scale, args.patch * scale, generator=g)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    lr, hr = lr.contiguous(memory_format=fmt), hr.contiguous(memory_format=fmt)

    parts: dict[str, float] = defaultdict(float)

    def timed(name_grad, name_nograd, fn):
        def wrapper(*a, **k):
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                parts[name_grad if torch.is_grad_enabled() else name_nograd] += time.process_time() - t0

        return wrapper

    d.run_student = timed("student forward", "student forward", d.run_student)
    d.run_teacher = timed("teacher forward", "teacher forward", d.run_teacher)
    if args.method == "dckd":
        d.run_history = timed("history forward (negatives)", "history forward (negatives)", d.run_history)
        vq = d.vqgan
        for name in ("features", "features_and_latent", "latent"):
            setattr(vq, name, timed("VQGAN forward on S (with graph)", "VQGAN forward on T and negatives", getattr(vq, name)))

    amp = torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
    times, cpu_times, per_step = [], [], []
    with image_convs_fp32(student, args.precision == "bf16"):
        for i in range(args.warmup + args.steps):
            parts.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad(set_to_none=True)
            with amp:
                terms = d(lr, hr)
            c_fwd = time.process_time() - c0
            sum(v.float() for v in terms.values()).backward()
            opt.step()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if i >= args.warmup:
                times.append(dt)
                cpu_times.append(dc)
                step_parts = dict(parts)
                step_parts["loss terms and glue"] = c_fwd - sum(parts.values())
                step_parts["backward + Adam"] = dc - c_fwd
                per_step.append(step_parts)
    median = statistics.median(times)
    keys = per_step[0].keys()
    breakdown = {k: statistics.median(p[k] for p in per_step) for k in keys}
    return {
        "method": args.method + ("+lcr" if args.lcr else ""),
        "seconds_per_step": median,
        "cpu_seconds_per_step": statistics.median(cpu_times),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "breakdown": breakdown,
        "terms": sorted(terms),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="edsr-baseline-x4")
    ap.add_argument("--student", default="edsr:n_resblocks=16,n_feats=32,scale=4")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--patch", type=int, default=32, help="LR patch side (HR = patch x scale)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--lcr", action="store_true", help="also time DCKD* (label consistency: one more teacher pass)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()

    if args.method:
        print(json.dumps(run_child(args)))
        return

    base = [sys.executable, __file__, "--teacher", args.teacher, "--student", args.student, "--batch", str(args.batch),
            "--patch", str(args.patch), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--precision", args.precision, "--threads", str(args.threads)]
    if not args.channels_last:
        base.append("--no-channels-last")
    runs = [["--method", "kd"], ["--method", "dckd"]] + ([["--method", "dckd", "--lcr"]] if args.lcr else [])
    results = []
    for extra in runs:
        out = subprocess.run(base + extra, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    info = {
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "lr_patch": args.patch,
        "precision": args.precision,
        "channels_last": args.channels_last,
    }
    if args.json:
        print(json.dumps({"setup": info, "results": results}, indent=1))
        return
    kd = results[0]["seconds_per_step"]
    print(f"student {args.student}, teacher {args.teacher}, batch {args.batch}, LR {args.patch}px, {args.precision}, "
          f"channels_last={args.channels_last}, {info['threads']} threads, torch {torch.__version__}")
    kd_cpu = results[0]["cpu_seconds_per_step"]
    print(f"{'method':<10} {'s/step':>8} {'x kd':>6} {'CPU s/step':>11} {'x kd':>6} {'peak RSS GiB':>13}")
    for r in results:
        print(f"{r['method']:<10} {r['seconds_per_step']:8.3f} {r['seconds_per_step'] / kd:6.1f} "
              f"{r['cpu_seconds_per_step']:11.3f} {r['cpu_seconds_per_step'] / kd_cpu:6.1f} {r['peak_rss_gib']:13.2f}")
    for r in results[1:]:
        total = r["cpu_seconds_per_step"]
        print(f"\n{r['method']} step breakdown (median CPU seconds, share):")
        for k, v in sorted(r["breakdown"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<36} {v:7.3f}  {100 * v / total:5.1f}%")


if __name__ == "__main__":
    main()
