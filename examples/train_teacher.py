"""Train a teacher from a YAML config (examples/configs/teacher-edsr-baseline-x4.yaml by default).

    SRKD_DATA=../shared/data python examples/train_teacher.py            # the config as written
    python examples/train_teacher.py --steps 10 --warmup 0 --out /tmp/teacher   # a quick look, bundled images
Any option given here overrides the config; re-running the same command resumes the run.
"""

import argparse
import os
from pathlib import Path

import srkd
import srkd.errors

CONFIG = Path(__file__).resolve().parent / "configs" / "teacher-edsr-baseline-x4.yaml"
BUNDLED = Path(srkd.__file__).resolve().parent / "assets" / "train" / "T91"


def default_data() -> list[str]:
    shared = os.environ.get("SRKD_DATA")
    if shared and (Path(shared) / "train" / "T91").is_dir():
        return [str(Path(shared) / "train" / "T91"), str(Path(shared) / "train" / "BSD200")]
    return [str(BUNDLED)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps; default: the config's")
    parser.add_argument("--out", default=None)
    parser.add_argument("--data", action="append", default=None,
                        help="training folder(s); default: T91 + BSD200 under $SRKD_DATA, else the bundled T91 images")
    parser.add_argument("--val", default=None, help="validation sets, e.g. set5 or none; default: the config's")
    args = parser.parse_args()

    result = srkd.train(config=args.config, steps=args.steps, out=args.out, data=args.data or default_data(),
                        val=[args.val] if args.val else None, warmup=args.warmup)
    print(f"{result.step}/{result.steps} steps in {result.seconds:.0f} s -> {result.model_path}")
    for name, v in result.val.items():
        print(f"{name}: {v['psnr']:.2f} dB / {v['ssim']:.4f}")


if __name__ == "__main__":
    try:
        main()
    except srkd.errors.SrkdError as exc:  # a user error: one line, no traceback (as the CLI)
        raise SystemExit(f"error: {exc}") from None
