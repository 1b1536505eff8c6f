"""What channel splitting buys: EDSR (256 features, 32 blocks) at widths 1, 0.5 and 0.25.

For each width: parameters, multiply-adds (at the timing input and for a 720p output, the
field's usual unit) and the measured inference time of the extracted plain model, in fp32 and
bf16 (channels_last, autocast), on this machine's CPU and on CUDA when present. Each time is the
fastest of the repeats, the widths timed in turn within every repeat so that they share whatever
else loads the machine:

    python benchmarks/compress_speed.py                       # x4, 128x128 LR input, 3 repeats
    python benchmarks/compress_speed.py --size 64 --repeats 5 --precisions fp32 --json out.json

Weights are random (speed does not depend on them). The paper's claims for comparison (CSD,
IJCAI 2021, abstract and Fig. 4): width 0.5 -> 4x compression and a 1.77x GPU speed-up;
width 0.25 -> "16x compression" (2.7M parameters against 43M).
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from srkd.complexity import count_params
from srkd.compress import extract_student, macs_of, measure_seconds_many
from srkd.models import build_from_spec

TEACHER = "edsr:n_resblocks=32,n_feats=256,res_scale=0.1,scale={scale}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--widths", default="1,0.5,0.25")
    ap.add_argument("--size", type=int, default=128, help="LR side of the timing input")
    ap.add_argument("--repeats", type=int, default=3, help="timed forwards (the fastest is reported); one warm-up is not timed")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    teacher = build_from_spec(TEACHER.format(scale=args.scale)).eval()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    widths = [float(w) for w in args.widths.split(",")]
    precisions = args.precisions.split(",")
    size = (args.size, args.size)
    hd = (720 // args.scale, 1280 // args.scale)

    nets, rows = [], []
    for w in widths:
        net = extract_student(teacher, w) if w < 1 else teacher
        nets.append(net)
        rows.append({"width": w, "n_feats": net.n_feats, "params": count_params(net), "macs": macs_of(net, size),
                     "macs_720p": macs_of(net, hd), "seconds": {}})
    for dev in devices:
        for prec in precisions:
            # the widths are timed in turn within each repeat, so that they share the machine's load
            for row, sec in zip(rows, measure_seconds_many(nets, size, args.repeats, prec, dev)):
                row["seconds"][f"{dev}-{prec}"] = sec
            print(f"{dev} {prec}: " + ", ".join(f"width {r['width']:g} {r['seconds'][f'{dev}-{prec}'] * 1e3:.0f} ms"
                                                for r in rows), flush=True)

    base = rows[0]
    print()
    print(f"EDSR 32x256 x{args.scale}, LR input {args.size}x{args.size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}")
    keys = list(base["seconds"])
    head = "| width | features | params | compression | GMACs (720p out) | " + " | ".join(f"{k} ms | speed-up" for k in keys) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        cells = [f"{r['width']:g}", str(r["n_feats"]), f"{r['params'] / 1e6:.2f} M", f"{base['params'] / r['params']:.2f}x",
                 f"{r['macs_720p'] / 1e9:.0f}"]
        for k in keys:
            cells += [f"{r['seconds'][k] * 1e3:.0f}", f"{base['seconds'][k] / r['seconds'][k]:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    print("\npaper (CSD, IJCAI 2021): width 0.5 = 4x compression, 1.77x speed-up (GPU); width 0.25 = 16x compression")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scale": args.scale, "size": args.size, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
