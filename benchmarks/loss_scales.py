"""Each loss term's value and gradient norm on the student, relative to the L1 term, on real batches.

    python benchmarks/loss_scales.py                                        # start of a run (random student)
    python benchmarks/loss_scales.py --student-weights RUN/model.safetensors  # a trained student ("middle")

Teacher: the bundled demo EDSR-baseline x4. Student: EDSR-baseline width 32 (the mini-x4 bench
student). Batches: the engine's own sampler on the bundled T91 images (batch 16, LR patch 32,
seed 0, steps 1..--batches), fp32. For every method the terms come from its ``forward`` and each
gradient norm is ``||d term / d student||`` over the student's parameters (adapters excluded), as a
ratio to the same for ``rec`` (L1 to HR, weight 1 in every method measured here except FAKD, whose
rec weight 0.5 is taken out of the ratio).

Frozen encoders have no real weights on an offline machine: DCKD's VQGAN is the full-size f16
encoder with random weights and CSD's VGG-19 is random, so their rows give the scale of the terms,
not the values with real weights. The table in docs/distill.md ("Loss scales") was made with
this script.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from srkd.data.patches import TrainingSet
from srkd.distill import build_distiller
from srkd.io.checkpoint import load_model_file
from srkd.models import build_from_spec

ASSETS = Path(__file__).resolve().parents[1] / "srkd" / "assets"
CASES = [
    ("fakd", {}),
    ("facd", {}),
    ("facd", {"lambda_facd": 1.0}),
    ("dckd", {"vqgan": "random", "ce_variant": "paper"}),
    ("dckd", {"vqgan": "random", "ce_variant": "code"}),
    ("csd", {"vgg_weights": "random"}),
]


def grad_norm(term: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student-weights", default=None, help="a trained student (.safetensors) for the 'middle' rows")
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_model_file(ASSETS / "demo-teacher-edsr-baseline-x4.safetensors").model.eval()
    data = TrainingSet([ASSETS / "train" / "T91"], 4, 32, progress=False)
    batches = []
    for step in range(1, args.batches + 1):
        lr, hr = data.sample(0, step, 0, 16)
        batches.append((torch.from_numpy(lr).permute(0, 3, 1, 2).float().div(255),
                        torch.from_numpy(hr).permute(0, 3, 1, 2).float().div(255)))
    where = "trained student" if args.student_weights else "random student (start)"
    print(f"{where}; {args.batches} real batches of 16 (T91, LR patch 32); teacher demo EDSR-baseline x4")
    print("| method | term | value | value / rec | grad norm / rec grad norm |\n|---|---|---|---|---|")
    for method, params in CASES:
        torch.manual_seed(0)
        if method == "csd":  # CSD trains the teacher's own network (it starts from the teacher's weights)
            from srkd.models.registry import build_model

            student = build_model(teacher.arch, **teacher.config())
        else:
            student = build_from_spec("edsr-baseline-x4:n_feats=32")
            if args.student_weights:
                student.load_state_dict(load_model_file(args.student_weights).model.state_dict())
        d = build_distiller(method, student, teacher, params, "fp32")
        d.train()
        net = d.student  # csd: the shared full-width network
        ps = [p for p in net.parameters() if p.requires_grad]
        rows: dict[str, list[tuple[float, float]]] = {}
        for lr, hr in batches:
            terms = d(lr, hr)
            rec_w = float(getattr(d.params, "lambda_rec", 1.0)) or 1.0
            g_rec = grad_norm(terms["rec"], ps) / rec_w
            v_rec = float(terms["rec"]) / rec_w
            for name, t in terms.items():
                if not t.requires_grad:
                    continue
                rows.setdefault(name, []).append((float(t), grad_norm(t, ps) / g_rec if g_rec else float("nan")))
                rows[name][-1] = (rows[name][-1][0], rows[name][-1][1], float(t) / v_rec)
        label = method + (" (" + ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("vqgan", "vgg_weights")) + ")"
                          if any(k not in ("vqgan", "vgg_weights") for k in params) else "")
        for name, vals in rows.items():
            v = statistics.mean(x[0] for x in vals)
            g = statistics.mean(x[1] for x in vals)
            r = statistics.mean(x[2] for x in vals)
            print(f"| {label} | {name} | {v:.4g} | {r:.3g} | {g:.3g} |", flush=True)
        if hasattr(d, "close"):
            d.close()


if __name__ == "__main__":
    main()
