"""Cut the quarter-width student out of a model (srkd compress) and compare it with the original.

    python examples/compress_and_compare.py [--model edsr-baseline-x4] [--width 0.25] [-o student.safetensors]
By default the bundled demo teacher (EDSR-baseline x4) is cut.
"""

import argparse
from pathlib import Path

import srkd
import srkd.errors

DEMO = Path(srkd.__file__).resolve().parent / "assets" / "demo-teacher-edsr-baseline-x4.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO))
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("-o", "--output", default="student-w0.25.safetensors")
    parser.add_argument("--datasets", nargs="*", default=["set5"])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    result = srkd.compress(args.model, args.width, args.output, datasets=args.datasets, overwrite=args.overwrite)
    r = result.report
    print(f"wrote {result.output}: {r.student.params:,} of {r.teacher.params:,} parameters ({r.compression:.2f}x fewer), "
          f"{r.speedup:.2f}x faster")
    for name in r.teacher.psnr:
        print(f"{name}: {r.teacher.psnr[name]:.2f} -> {r.student.psnr[name]:.2f} dB (untrained slice: distil it next)")


if __name__ == "__main__":
    try:
        main()
    except srkd.errors.SrkdError as exc:  # a user error: one line, no traceback (as the CLI)
        raise SystemExit(f"error: {exc}") from None
