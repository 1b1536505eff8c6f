"""What a user of `srkd upscale` waits for: whole commands, wall clock, against the network alone.

    SRKD_DATA=... python benchmarks/upscale_e2e.py                    # old path = --old-ref cd49ddc
    python benchmarks/upscale_e2e.py --old-ref HEAD~5 --repeats 3 --folder-images 20

In one run, best of --repeats, every command a fresh subprocess (start-up included):

* ``srkd upscale one.png -o out.png`` on one Urban100 crop (1024x644 -> 4096x2576, 10.6 MP), and on
  a folder of the first --folder-images Urban100 x4 LR images;
* the same commands with the srkd of --old-ref (a temporary git worktree): the path before the
  fast encoder, the pipelined folder loop and the decision cache;
* the anchor, a Real-ESRGAN-style script over the same weights: cv2 read, fp32 torch on the whole
  image, cv2 write;
* the network alone, in process and warm (``srkd.upscale`` on the decoded arrays), the reference
  the goals are stated against: single command <= 1.3x the network time, folder >= 90 % of the
  network's throughput.

A breakdown of the single-image command (import, model and Upscaler set-up, decode, network,
encode and write) is measured in process afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

ANCHOR = r'''
import sys, cv2, numpy as np, torch
from srkd.io.hub import load_model
torch.set_num_threads(%(threads)d)
net = load_model(None).model.eval()
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    img = cv2.imread(src, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255
    with torch.no_grad():
        out = net(torch.from_numpy(img.copy()).permute(2, 0, 1)[None])
    out = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(dst, out[:, :, ::-1])
'''


def best(cmd, repeats, env, clean=None) -> float:
    times = []
    for _ in range(repeats):
        if clean:
            clean()
        t0 = time.perf_counter()
        # cwd outside the checkout: `python -m srkd` would import ./srkd before PYTHONPATH's
        subprocess.run(cmd, check=True, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-ref", default="cd49ddc", help="git ref of the srkd before this change")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--folder-images", type=int, default=20)
    ap.add_argument("--crop", default="1024x644", help="WxH of the single input")
    ap.add_argument("--skip-anchor-single", action="store_true", help="the fp32 whole-image anchor on 10 MP is slow")
    args = ap.parse_args()
    from PIL import Image

    from srkd.evaluate import open_dataset

    work = Path(tempfile.mkdtemp(prefix="srkd-e2e-"))
    bench = open_dataset("urban100", 4)
    w, h = (int(v) for v in args.crop.split("x"))
    first = bench.hr_files[0]
    big = np.asarray(Image.open(first).convert("RGB"))
    big = np.pad(big, ((0, max(0, h - big.shape[0])), (0, max(0, w - big.shape[1])), (0, 0)), mode="reflect")[:h, :w]
    single = work / "one.png"
    Image.fromarray(big).save(single)
    folder = work / "folder"
    folder.mkdir()
    sub = [s for _, s in zip(range(args.folder_images), bench)]
    for s in sub:
        Image.fromarray(s.lr).save(folder / f"{s.name}.png")
    print(f"single: {w}x{h} -> {4 * w}x{4 * h} ({16 * w * h / 1e6:.1f} MP); folder: {len(sub)} Urban100 x4 LR images "
          f"({sum(16 * s.lr.shape[0] * s.lr.shape[1] for s in sub) / 1e6:.1f} MP out)", flush=True)

    old = work / "old"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(old), args.old_ref], check=True)
    env_new = dict(os.environ, PYTHONPATH=str(REPO))
    env_old = dict(os.environ, PYTHONPATH=str(old))
    py = sys.executable
    out1, outd = work / "out.png", work / "out"

    def rm():
        shutil.rmtree(outd, ignore_errors=True)
        out1.unlink(missing_ok=True)

    rows = {}
    try:
        # warm the decision cache (a user's second run), then time
        for env in (env_new, env_old):
            subprocess.run([py, "-m", "srkd", "upscale", str(single), "-o", str(out1), "--overwrite", "-q"], env=env,
                           check=True, cwd=tempfile.gettempdir())
        rows["srkd single"] = best([py, "-m", "srkd", "upscale", str(single), "-o", str(out1), "--overwrite", "-q"], args.repeats, env_new, rm)
        rows["old single"] = best([py, "-m", "srkd", "upscale", str(single), "-o", str(out1), "--overwrite", "-q"], args.repeats, env_old, rm)
        rows["srkd folder"] = best([py, "-m", "srkd", "upscale", str(folder), "-o", str(outd), "-q"], args.repeats, env_new, rm)
        rows["srkd folder, not pipelined"] = best([py, "-m", "srkd", "upscale", str(folder), "-o", str(outd), "-q", "--no-pipeline"], args.repeats, env_new, rm)
        rows["srkd folder, pipelined, 1 torch thread"] = best([py, "-m", "srkd", "upscale", str(folder), "-o", str(outd), "-q"],
                                                              args.repeats, {**env_new, "OMP_NUM_THREADS": "1"}, rm)
        rows["old folder"] = best([py, "-m", "srkd", "upscale", str(folder), "-o", str(outd), "-q"], args.repeats, env_old, rm)
        anchor = work / "anchor.py"
        anchor.write_text(ANCHOR % {"threads": os.cpu_count() or 1})
        if not args.skip_anchor_single:
            rows["anchor single"] = best([py, str(anchor), str(single), str(out1)], args.repeats, env_new, rm)
        pairs = []
        for f in sorted(folder.iterdir()):
            pairs += [str(f), str(work / f"anchor-{f.name}")]
        rows["anchor folder"] = best([py, str(anchor), *pairs], args.repeats, env_new)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)

    # the network alone, in process, warm
    import srkd
    from srkd.infer import Upscaler
    from srkd.io.hub import load_model
    from srkd.io.images import read_image, write_image

    up = Upscaler(load_model(None).model)
    arr = read_image(single)
    srkd.upscale(arr, up)
    net_single = min(_timed(lambda: srkd.upscale(arr, up)) for _ in range(args.repeats))
    arrays = [read_image(f) for f in sorted(folder.iterdir())]
    for a in arrays[:2]:
        srkd.upscale(a, up)
    net_folder = min(_timed(lambda: [srkd.upscale(a, up) for a in arrays]) for _ in range(args.repeats))

    # breakdown of the single command, in process
    t_import = float(subprocess.run([py, "-c", "import time; t=time.perf_counter(); import srkd.cli, torch; print(time.perf_counter()-t)"],
                                    capture_output=True, text=True, env=env_new, cwd=tempfile.gettempdir()).stdout)
    t0 = time.perf_counter()
    fresh = Upscaler(load_model(None).model)
    t_setup = time.perf_counter() - t0
    t_decode = min(_timed(lambda: read_image(single)) for _ in range(3))
    out = srkd.upscale(arr, fresh)
    t_write = min(_timed(lambda: write_image(work / "w.png", out, overwrite=True)) for _ in range(3))

    print("\n| command | seconds (best of %d) | vs the network alone |" % args.repeats)
    print("|---|---|---|")
    print(f"| network alone, in process (single) | {net_single:.2f} | 1.00x |")
    for k in ("srkd single", "old single", "anchor single"):
        if k in rows:
            print(f"| `{k}` | {rows[k]:.2f} | {rows[k] / net_single:.2f}x |")
    print(f"| network alone, in process (folder) | {net_folder:.2f} | 100 % of its throughput |")
    for k in ("srkd folder", "srkd folder, not pipelined", "srkd folder, pipelined, 1 torch thread", "old folder", "anchor folder"):
        print(f"| `{k}` | {rows[k]:.2f} | {net_folder / rows[k] * 100:.0f} % of the network's throughput |")
    print(f"\nsingle-command breakdown: imports {t_import:.2f} s, model + Upscaler set-up (cached decisions) "
          f"{t_setup:.2f} s, decode {t_decode:.2f} s, network {net_single:.2f} s, encode + write {t_write:.2f} s; "
          f"sum {t_import + t_setup + t_decode + net_single + t_write:.2f} s vs measured {rows['srkd single']:.2f} s")
    shutil.rmtree(work, ignore_errors=True)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
