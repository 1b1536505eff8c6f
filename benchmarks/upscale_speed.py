"""How much faster is ``srkd upscale`` than the way the anchors run a model, and at what cost?

Same weights (the bundled CARN-M x4, official weights), same input, two ways:

  (a) anchor: plain fp32 eager PyTorch on the whole image (model(x) under no_grad, then clamp and
      round to uint8), the way Real-ESRGAN's and EDSR-PyTorch's scripts run a model;
  (b) srkd:   ``srkd.upscale`` with its defaults (precision auto, tile auto, channels_last,
              the srkd.infer.fusion rewrites); and (b') the same without the rewrites, to show their share.

Measured, each variant in its own fresh subprocess so that peak resident memory (ru_maxrss) is
its own: output megapixels per second on a 512x512 input (x4 -> 2048x2048) after one warm-up
call, plus the cold first call; peak RSS; the PSNR difference on Set5 (Y channel, protocol of
srkd.metrics); and the peak RSS of (b) for a 4096x4096 output (1024x1024 input).

On a shared machine other processes steal cycles, so each timing is repeated in alternating
subprocesses and the best run is kept (the best run is the one least disturbed).

    python benchmarks/upscale_speed.py [--device cpu|cuda] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _input(size: int):
    """A real photo crop (Urban100 if SRKD_DATA is set, else a bundled Set5 image tiled up)."""
    import cv2
    import numpy as np

    data = os.environ.get("SRKD_DATA")
    candidates = []
    if data:
        candidates.append(Path(data) / "benchmarks" / "Urban100" / "HR" / "img_004.png")
    candidates.append(ROOT / "srkd" / "assets" / "benchmarks" / "Set5" / "HR" / "baby.png")
    for path in candidates:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            img = img[:, :, ::-1]
            reps = (-(-size // img.shape[0]), -(-size // img.shape[1]), 1)
            return np.ascontiguousarray(np.tile(img, reps)[:size, :size])
    raise SystemExit("no input image found")


def _model():
    from srkd.io.hub import load_model

    return load_model(None).model


def _anchor_fn(net, device):
    import torch

    net = net.to(device).eval()

    def run(img):
        x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float().div(255).to(device)
        with torch.no_grad():
            y = net(x)
        return y.clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).cpu().numpy()

    return run


def _srkd_fn(net, device, fuse=True):
    from srkd.infer import Upscaler
    from srkd.upscale import upscale_array

    up = Upscaler(net, device=device, fuse=fuse)

    def run(img):
        return upscale_array(img, up)

    run.upscaler = up
    return run


def child(variant: str, size: int, device: str, threads: int, mode: str) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    net = _model()
    img = _input(size)
    t0 = time.perf_counter()
    run = _anchor_fn(net, device) if variant == "anchor" else _srkd_fn(net, device, fuse=variant == "srkd")
    out = run(img)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    cold = time.perf_counter() - t0
    result = {"variant": variant, "size": size, "cold_s": cold, "out_shape": list(out.shape)}
    if mode == "speed":
        t0 = time.perf_counter()
        run(img)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        result["warm_s"] = time.perf_counter() - t0
    if hasattr(run, "upscaler"):
        up = run.upscaler
        result.update(precision=up.precision, tile=up.tile, tile_pad=up.tile_pad, batch=up.batch_tiles)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def set5_psnr(device: str) -> dict:
    """Mean Y-PSNR on Set5 x4 for (a) and (b), with the official LR files."""
    import cv2
    import numpy as np

    from srkd.metrics import psnr

    data = os.environ.get("SRKD_DATA")
    root = Path(data) / "benchmarks" / "Set5" if data and (Path(data) / "benchmarks" / "Set5").is_dir() else (
        ROOT / "srkd" / "assets" / "benchmarks" / "Set5"
    )
    net = _model()
    fns = {"anchor": _anchor_fn(net, device), "srkd": _srkd_fn(net, device)}
    scores = {k: [] for k in fns}
    for hr_path in sorted((root / "HR").glob("*.png")):
        hr = cv2.imread(str(hr_path), cv2.IMREAD_COLOR)[:, :, ::-1]
        lr = cv2.imread(str(root / "LR_bicubic" / "X4" / f"{hr_path.stem}x4.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
        lr = np.ascontiguousarray(lr)
        hr = hr[: lr.shape[0] * 4, : lr.shape[1] * 4]
        for k, fn in fns.items():
            scores[k].append(psnr(fn(lr), hr, 4))
    return {k: float(np.mean(v)) for k, v in scores.items()} | {"set5_root": str(root)}


def _spawn(args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    ap.add_argument("--repeats", type=int, default=3, help="alternating subprocess runs per variant; best kept")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--large", type=int, default=1024, help="input side for the memory test (x4 output)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", nargs=3, metavar=("VARIANT", "SIZE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--psnr-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.device, args.threads, args.child[2])))
        return
    if args.psnr_child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(set5_psnr(args.device)))
        return

    common = ["--device", args.device, "--threads", str(args.threads)]
    runs: dict[str, list[dict]] = {"anchor": [], "srkd": [], "srkd-unfused": []}
    for _ in range(args.repeats):
        for variant in runs:
            runs[variant].append(_spawn(["--child", variant, str(args.size), "speed", *common], args.threads))
    best = {v: min(r, key=lambda d: d["warm_s"]) for v, r in runs.items()}
    large = _spawn(["--child", "srkd", str(args.large), "memory", *common], args.threads)
    quality = _spawn(["--psnr-child", *common], args.threads)

    out_mp = (args.size * 4) ** 2 / 1e6
    a, b, u = best["anchor"], best["srkd"], best["srkd-unfused"]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {__import__('torch').__version__}",
        "device": args.device,
        "input": f"{args.size}x{args.size} -> {args.size * 4}x{args.size * 4}",
        "anchor": {"mp_per_s": out_mp / a["warm_s"], "warm_s": a["warm_s"], "cold_s": a["cold_s"], "peak_rss_mib": a["peak_rss_mib"],
                   "all_warm_s": [r["warm_s"] for r in runs["anchor"]]},
        "srkd": {"mp_per_s": out_mp / b["warm_s"], "warm_s": b["warm_s"], "cold_s": b["cold_s"], "peak_rss_mib": b["peak_rss_mib"],
                 "precision": b["precision"], "tile": b["tile"], "tile_pad": b["tile_pad"], "batch": b["batch"],
                 "all_warm_s": [r["warm_s"] for r in runs["srkd"]]},
        "srkd_unfused": {"mp_per_s": out_mp / u["warm_s"], "warm_s": u["warm_s"], "all_warm_s": [r["warm_s"] for r in runs["srkd-unfused"]]},
        "speedup": a["warm_s"] / b["warm_s"],
        "speedup_unfused": a["warm_s"] / u["warm_s"],
        "speedup_median": statistics.median(r["warm_s"] for r in runs["anchor"]) / statistics.median(r["warm_s"] for r in runs["srkd"]),
        "set5_psnr_anchor": quality["anchor"],
        "set5_psnr_srkd": quality["srkd"],
        "set5_psnr_diff_db": quality["srkd"] - quality["anchor"],
        "large": {"input": f"{args.large}x{args.large}", "output": f"{args.large * 4}x{args.large * 4}",
                  "peak_rss_mib": large["peak_rss_mib"], "seconds": large["cold_s"], "tile": large.get("tile"),
                  "peak_cuda_mib": large.get("peak_cuda_mib")},
    }
    for key in ("peak_cuda_mib",):
        if key in a:
            report["anchor"][key] = a[key]
            report["srkd"][key] = b[key]
    print(f"# upscale speed: bundled CARN-M x4, {report['input']}, {report['machine']}, device {args.device}")
    print("| variant | MP/s (output) | warm s | cold s | peak RSS MiB | Set5 Y-PSNR |")
    print("|---|---|---|---|---|---|")
    print(f"| (a) fp32 eager, whole image | {report['anchor']['mp_per_s']:.2f} | {a['warm_s']:.2f} | {a['cold_s']:.2f} | "
          f"{a['peak_rss_mib']:.0f} | {quality['anchor']:.4f} |")
    print(f"| (b) srkd defaults ({b['precision']}, tile {b['tile']}, pad {b['tile_pad']}) | {report['srkd']['mp_per_s']:.2f} | "
          f"{b['warm_s']:.2f} | {b['cold_s']:.2f} | {b['peak_rss_mib']:.0f} | {quality['srkd']:.4f} |")
    print(f"| (b') srkd defaults without srkd.infer.fusion | {report['srkd_unfused']['mp_per_s']:.2f} | {u['warm_s']:.2f} | "
          f"{u['cold_s']:.2f} | {u['peak_rss_mib']:.0f} | |")
    print(f"speed-up {report['speedup']:.2f}x (best runs), {report['speedup_median']:.2f}x (medians of {args.repeats}); "
          f"PSNR difference {report['set5_psnr_diff_db']:+.4f} dB; without the rewrites {report['speedup_unfused']:.2f}x")
    print(f"{report['large']['output']} output with srkd defaults: peak RSS {large['peak_rss_mib']:.0f} MiB "
          f"(tile {large.get('tile')}), {large['cold_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
