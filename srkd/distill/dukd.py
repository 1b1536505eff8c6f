"""``dukd``: Data Upcycling Knowledge Distillation (Zhang et al., arXiv 2309.14162; code yun224/DUKD).

DUKD is output KD plus the upcycled terms of :mod:`srkd.distill.upcycle` with the official
configurations' values. The class adds only the per-teacher-family recipe: the official configs
use different weights and switches for EDSR, RCAN and SwinIR teachers (and two zoom-in tiles at
x2 for EDSR). ``recipe=auto`` picks the teacher's family; every value stays settable by name,
and a value given with ``--set`` always wins over the recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .base import hp
from .kd import KD, KDParams

RECIPES = ("auto", "edsr", "rcan", "swinir", "none")


# The official configs (yun224/DUKD options/{EDSR,RCAN,Swinir}/dukd_*_x{2,3,4}*.yml), per family
# AND per scale: pixel_opt.loss_weight, kd_opt.loss_weight, dukd_opt.n_gt_sub, dukd_opt.zoom_out and
# noisy.prob (label consistency). They differ between scales of one family: RCAN x3 weighs the
# pixel loss 2 and turns zoom-out and label consistency on, where x2 and x4 do not.
_EDSR = {"lambda_rec": 5.0, "lambda_kd": 1.0, "n_gt_sub": 1, "zoom_out": True, "label_consistency": True, "lc_prob": 0.3}
_RCAN = {"lambda_rec": 1.0, "lambda_kd": 1.0, "n_gt_sub": 1, "zoom_out": False, "label_consistency": False}
_SWINIR = {"lambda_rec": 5.0, "lambda_kd": 1.0, "n_gt_sub": 1, "zoom_out": False, "label_consistency": True, "lc_prob": 0.3}
OFFICIAL_CONFIGS: dict[tuple[str, int], dict] = {
    ("edsr", 2): {**_EDSR, "n_gt_sub": 2},  # two of the four tiles at x2
    ("edsr", 3): dict(_EDSR),
    ("edsr", 4): dict(_EDSR),  # the official x4 student also starts from the x2 student (--init)
    ("rcan", 2): dict(_RCAN),  # no noisy key
    ("rcan", 3): {"lambda_rec": 2.0, "lambda_kd": 1.0, "n_gt_sub": 1, "zoom_out": True, "label_consistency": True,
                  "lc_prob": 0.3},
    ("rcan", 4): dict(_RCAN),  # noisy.prob 0: the augmentations are drawn but none applies
    ("swinir", 2): dict(_SWINIR),
    ("swinir", 3): dict(_SWINIR),
    ("swinir", 4): dict(_SWINIR),
}
# The official loop: two optimiser steps per batch, the second also applying the first step's
# gradient (no zero_grad in between), and the label-consistency revert in the code's order.
OFFICIAL_LOOP = {"two_step": True, "carry_grad": True, "lc_revert": "official"}


def recipe_values(family: str, scale: int, loop: str = "srkd") -> dict:
    """The official config's values for a family at a scale (scales without a config: its x4 values)."""
    if family not in {f for f, _ in OFFICIAL_CONFIGS}:
        return dict(OFFICIAL_LOOP) if loop == "official" else {}
    values = dict(OFFICIAL_CONFIGS.get((family, int(scale)), OFFICIAL_CONFIGS[(family, 4)]))
    if loop == "official":
        values.update(OFFICIAL_LOOP)
    return values


@dataclass
class DUKDParams(KDParams):
    """KD + upcycling with the EDSR x4 config's values as field defaults (the recipe may change them)."""

    lambda_rec: float = hp(5.0, "weight of L1(S, HR) and of the zoom-out L1(S, LR) (recipe: 5 EDSR/SwinIR, 1 RCAN)", min=0.0)
    upcycle: bool = hp(True, "DUKD data upcycling: zoom-in HR tiles (and zoom-out) as inputs labelled by the teacher")
    label_consistency: bool = hp(True, "random invertible augmentations on the zoom-in inputs, student output mapped back "
                                 "(recipe: on for EDSR/SwinIR, off for RCAN)")
    recipe: str = hp("auto", "official per-teacher-family and per-scale values for the settings not given with --set "
                     "(auto: from the teacher's arch; other archs use edsr; none: the defaults shown here)", choices=RECIPES)
    loop: str = hp("srkd", "srkd: one optimiser step per batch, exact label-consistency revert; official: the released "
                   "code's two steps per batch (two_step, carry_grad, lc_revert=official), needed to reproduce its numbers",
                   choices=("srkd", "official"))

    # Names given through from_mapping/replace (the CLI's --set and YAML): the recipe never
    # overrides them. Not a dataclass field, so it stays out of --list-methods and provenance.
    _explicit = frozenset()

    def replace(self, key, value, method=""):
        new = super().replace(key, value, method)
        new._explicit = self._explicit | {key}
        return new


class DUKD(KD):
    name = "dukd"
    Params = DUKDParams
    summary = "data upcycling KD: KD + zoom-in/zoom-out teacher-labelled inputs + label consistency"

    def setup(self) -> None:
        self.recipe = self._pick_recipe()
        values = recipe_values(self.recipe, int(self.student.scale), self.params.loop)
        defaults = {f.name: f.default for f in dataclasses.fields(DUKDParams)}
        # A value differs from the field default, or was named explicitly: the user chose it.
        chosen = self.params._explicit | {k for k in values if getattr(self.params, k) != defaults[k]}
        applied = {k: v for k, v in values.items() if k not in chosen}
        explicit = self.params._explicit
        self.params = dataclasses.replace(self.params, **applied)
        self.params._explicit = explicit
        super().setup()

    def _pick_recipe(self) -> str:
        if self.params.recipe != "auto":
            return self.params.recipe
        arch = str(getattr(self.teacher, "arch", "")).lower()
        return arch if arch in ("edsr", "rcan", "swinir") else "edsr"

    def describe(self) -> dict:
        d = super().describe()
        d["recipe"] = self.recipe
        return d
