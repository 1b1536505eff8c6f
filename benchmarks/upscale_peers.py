"""srkd's default upscale against every CPU runtime a practitioner could export to.

    SRKD_DATA=../shared/data python benchmarks/upscale_peers.py [--repeats 3] [--json out.json]

Same weights, same input, one fresh subprocess per (model, runtime) so that peak resident memory
(ru_maxrss) is the runtime's own, best of ``--repeats`` warm runs after one cold call:

* torch fp32 eager (``model(x)`` under no_grad, the anchors' way);
* onnxruntime fp32 (CPUExecutionProvider) on ``srkd export``'s ONNX file;
* OpenVINO f32 and bf16 (``INFERENCE_PRECISION_HINT``) on ``srkd export``'s IR;
* ``srkd upscale`` defaults (``srkd`` row): ``--backend auto``, the fastest installed backend within
  0.02 dB of fp32, chosen on first use in a fresh cache (``setup_s`` is that one-time cost);
* ``srkd upscale --backend torch`` (``srkd-torch``: precision auto, tile auto, channels_last, fusion).

Models: the bundled CARN-M x4 on a 512x512 Urban100 crop and the bundled demo EDSR-baseline x4
on 256x256. For each it prints seconds, output MP/s, peak RSS and the Set5 Y-PSNR of that
runtime's output (official LR files, protocol of srkd.metrics), with the change against fp32.
A runtime whose Set5 loss exceeds 0.02 dB counts as a speed reference, not a quality-equal peer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "srkd" / "assets"
MODELS = {"carn-m-x4": (ASSETS / "carn-m.safetensors", 512), "edsr-baseline-x4": (ASSETS / "demo-teacher-edsr-baseline-x4.safetensors", 256)}
RUNTIMES = ("torch-fp32", "onnxruntime-fp32", "openvino-f32", "openvino-bf16", "srkd-torch", "srkd")


def _runner(runtime: str, model_path: Path, exports: dict):
    import torch

    from srkd.io.checkpoint import load_model_file

    model = load_model_file(model_path, scale=4).model.eval()
    if runtime in ("srkd", "srkd-torch"):
        from srkd.backends import default_backend
        from srkd.infer import Upscaler
        from srkd.upscale import upscale_array

        up = Upscaler(model, device="cpu", backend="torch" if runtime == "srkd-torch" else default_backend())
        return lambda img: upscale_array(img, up), f"{up.backend} {up.precision}"
    if runtime == "torch-fp32":
        def net(x):
            with torch.no_grad():
                return model(x)
    else:
        from srkd.export import load_runtime

        fmt, precision = {"onnxruntime-fp32": ("onnx", "fp32"), "openvino-f32": ("openvino", "fp32"),
                          "openvino-bf16": ("openvino", "bf16")}[runtime]
        net = load_runtime(Path(exports[fmt]), fmt, precision)

    def run(img):
        x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float().div(255)
        return net(x).clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).numpy()

    return run, runtime.split("-")[-1]


def child(runtime: str, model: str, size: int, repeats: int, exports: dict) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from upscale_speed import _input

    from srkd.evaluate import open_dataset
    from srkd.metrics import psnr

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    t0 = time.perf_counter()
    run, precision = _runner(runtime, MODELS[model][0], exports)
    setup = time.perf_counter() - t0
    img = _input(size)
    t0 = time.perf_counter()
    out = run(img)
    cold = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(img)
        best = min(best, time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scores = [psnr(run(np.ascontiguousarray(s.lr)), s.hr, 4) for s in open_dataset("set5", 4, None)]
    return {"model": model, "runtime": runtime, "precision": precision, "size": size, "setup_s": setup, "cold_s": cold, "warm_s": best,
            "mp_s": out.shape[0] * out.shape[1] / 1e6 / best, "peak_rss_mib": rss, "set5_psnr": float(np.mean(scores))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=4, metavar=("RUNTIME", "MODEL", "SIZE", "EXPORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        runtime, model, size, exports = args.child
        print(json.dumps(child(runtime, model, int(size), args.repeats, json.loads(exports))))
        return
    from srkd.export import export_model
    from srkd.io.checkpoint import load_model_file

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, (path, size) in MODELS.items():
            mf = load_model_file(path, scale=4)
            exports = {}
            for fmt, suffix in (("onnx", ".onnx"), ("openvino", ".xml")):
                report = export_model(mf, Path(tmp) / f"{model}{suffix}")
                exports[fmt] = str(report.path)
                print(f"# {report.summary()}", flush=True)
            for runtime in RUNTIMES:
                cmd = [sys.executable, __file__, "--repeats", str(args.repeats), "--child", runtime, model, str(size),
                       json.dumps(exports)]
                # a fresh srkd cache per model: the srkd row pays backend auto's first-use cost
                env = {**os.environ, "PYTHONWARNINGS": "ignore", "SRKD_CACHE": str(Path(tmp) / f"cache-{model}")}
                env.pop("SRKD_BACKEND", None)
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode:
                    raise SystemExit(res.stderr[-2000:])
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print("| model | runtime | precision | setup s | warm s | MP/s | peak RSS MiB | Set5 Y-PSNR | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next(x for x in rows if x["model"] == r["model"] and x["runtime"] == "torch-fp32")
        print(f"| {r['model']} {r['size']}x{r['size']} | {r['runtime']} | {r['precision']} | {r['setup_s']:.1f} | {r['warm_s']:.2f} | "
              f"{r['mp_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['set5_psnr']:.3f} | {r['set5_psnr'] - ref['set5_psnr']:+.3f} |")
    for model in MODELS:
        mine = next(r for r in rows if r["model"] == model and r["runtime"] == "srkd")
        equal = [r for r in rows if r["model"] == model and not r["runtime"].startswith("srkd")
                 and r["set5_psnr"] - next(x for x in rows if x["model"] == model and x["runtime"] == "torch-fp32")["set5_psnr"] >= -0.02]
        fastest = min(equal, key=lambda r: r["warm_s"])
        print(f"{model}: srkd upscale defaults ({mine['precision']}) {mine['warm_s']:.2f} s vs fastest quality-equal peer {fastest['runtime']} "
              f"{fastest['warm_s']:.2f} s: {fastest['warm_s'] / mine['warm_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
