"""Upscale every image of a folder with a model (the bundled CARN-M x4 by default).

    python examples/upscale_folder.py photos/ upscaled/ [--model edsr-baseline-x4]
"""

import argparse

import srkd
import srkd.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", help="a folder of images (or one image)")
    parser.add_argument("output", help="the output folder")
    parser.add_argument("--model", default=None, help="path, preset or hf:// reference (default: bundled CARN-M x4)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    # Exact tiling, alpha, 16-bit and EXIF as `srkd upscale`; failures are reported per file.
    report = srkd.upscale.upscale_files([args.inputs], args.output, model=args.model, overwrite=args.overwrite,
                                        progress=False, ext="png")
    for src, dst, seconds, _ in report.done:
        print(f"{src} -> {dst} ({seconds:.2f} s)")
    for src, msg in report.failed:
        print(f"failed: {src}: {msg}")
    print(f"{report.megapixels:.2f} output MP at {report.mp_per_s:.2f} MP/s")

    # One array in, one array out (numpy or PIL), for scripts that hold images in memory:
    import numpy as np

    small = np.zeros((16, 16, 3), np.uint8)
    print("an array:", small.shape, "->", srkd.upscale(small, args.model).shape)


if __name__ == "__main__":
    try:
        main()
    except srkd.errors.SrkdError as exc:  # a user error: one line, no traceback (as the CLI)
        raise SystemExit(f"error: {exc}") from None
