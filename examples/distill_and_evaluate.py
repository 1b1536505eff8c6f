"""Distil the bundled demo teacher into a half-width student with FAKD, then score it on Set5.

    python examples/distill_and_evaluate.py                     # about 5 minutes on 2 CPU cores
    python examples/distill_and_evaluate.py --steps 20 --out /tmp/fakd   # a quick look
"""

import argparse

import srkd
import srkd.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="fakd")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--out", default="runs/example-distill")
    args = parser.parse_args()

    # Bundled teacher, data and student; the demo recipe (patch 32, lr 1e-3 cosine, teacher-slice init).
    result = srkd.distill(args.method, steps=args.steps, out=args.out, init="teacher-slice", patch=32, lr=1e-3,
                          schedule="cosine", warmup=max(1, args.steps // 10), val=["none"], overwrite=True)
    print(f"student: {result.model_path}")
    c = result.comparison
    print(f"{c['params_ratio']:.2f}x the teacher's parameters, {c['speedup']:.2f}x faster")

    for r in srkd.evaluate(str(result.model_path), ["set5"], progress=False):
        print(f"{r.dataset}: {r.psnr:.2f} dB / {r.ssim:.4f} (Y, the field's protocol)")


if __name__ == "__main__":
    try:
        main()
    except srkd.errors.SrkdError as exc:  # a user error: one line, no traceback (as the CLI)
        raise SystemExit(f"error: {exc}") from None
