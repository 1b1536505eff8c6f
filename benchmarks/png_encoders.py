"""PNG (and JPEG/WebP) encode time and size on real upscaled images, per encoder and level.

    SRKD_DATA=... python benchmarks/png_encoders.py                 # 3 Urban100 images through CARN-M x4
    python benchmarks/png_encoders.py --images img_004 --repeats 3

The images are the bundled CARN-M's x4 outputs of Urban100 crops (up to 1024x644 LR, so about
10 MP out), the kind of file `srkd upscale` writes. Each encoder runs in this process, one thread,
best of --repeats. The table in docs/upscale.md ("Output encoding") was made with this script.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch


def outputs(names, side):
    from srkd.evaluate import open_dataset
    from srkd.upscale import upscale

    bench = open_dataset("urban100", 4)
    chosen = [p for p in bench.hr_files if p.stem in names]
    out = []
    from PIL import Image

    for p in chosen:
        hr = np.asarray(Image.open(p).convert("RGB"))
        lr = hr[:side[1], :side[0]]  # a real crop as the LR input; the output is 4x its size
        out.append((p.stem, upscale(lr)))
    return out


def encoders():
    import cv2
    from PIL import Image

    def pil(level):
        def enc(a):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG", compress_level=level)
            return buf.getvalue()
        return enc

    def ocv(level, strategy=None):
        def enc(a):
            params = [cv2.IMWRITE_PNG_COMPRESSION, level]
            if strategy is not None:
                params += [cv2.IMWRITE_PNG_STRATEGY, strategy]
            ok, buf = cv2.imencode(".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), params)
            return buf.tobytes()
        return enc

    rows = [(f"PIL png level {lv}", pil(lv)) for lv in (0, 1, 2, 3, 6, 9)]
    rows += [(f"OpenCV png level {lv}", ocv(lv)) for lv in (0, 1, 2, 3, 6, 9)]
    rows += [(f"OpenCV png level {lv}, RLE", ocv(lv, cv2.IMWRITE_PNG_STRATEGY_RLE)) for lv in (1, 2, 3, 6, 9)]
    rows += [("OpenCV png level 1, filtered", ocv(1, cv2.IMWRITE_PNG_STRATEGY_FILTERED))]

    def jpeg(q):
        def enc(a):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=q)
            return buf.getvalue()
        return enc

    def webp(q):
        def enc(a):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="WEBP", quality=q, lossless=q == 100, exact=True)
            return buf.getvalue()
        return enc

    rows += [("PIL jpeg q95", jpeg(95)), ("PIL webp q90", webp(90))]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", default=["img_004", "img_044", "img_092"])
    ap.add_argument("--side", default="1024x644", help="LR crop WxH (output 4x)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    side = tuple(int(v) for v in args.side.split("x"))
    imgs = outputs(args.images, side)
    torch.set_num_threads(2)
    import cv2

    cv2.setNumThreads(1)
    mp = sum(a.shape[0] * a.shape[1] for _, a in imgs) / 1e6
    print(f"{len(imgs)} CARN-M x4 outputs, {mp:.1f} MP in all ({', '.join(f'{n} {a.shape[1]}x{a.shape[0]}' for n, a in imgs)})")
    print("| encoder | seconds per 10 MP | size (MB per 10 MP) | size vs PIL level 6 |\n|---|---|---|---|")
    base = None
    results = []
    for name, enc in encoders():
        total_t, total_b = 0.0, 0
        for _, a in imgs:
            best = min(_timed(enc, a) for _ in range(args.repeats))
            total_t += best[0]
            total_b += best[1]
        results.append((name, total_t, total_b))
        if name == "PIL png level 6":
            base = total_b
    for name, t, b in results:
        rel = f"{b / base:.2f}x" if base else ""
        print(f"| {name} | {t / mp * 10:.2f} | {b / 1e6 / mp * 10:.1f} | {rel} |")


def _timed(enc, a):
    t0 = time.perf_counter()
    data = enc(a)
    return time.perf_counter() - t0, len(data)


if __name__ == "__main__":
    main()
