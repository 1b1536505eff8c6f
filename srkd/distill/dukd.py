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


def recipe_values(family: str, scale: int) -> dict:
    """The official configs' values (``options/{EDSR,RCAN,Swinir}/dukd_*.yml``) for a family."""
    if family == "edsr":
        # pixel weight 5, zoom-out on, label consistency p = 0.3; two of the four tiles at x2
        return {"lambda_rec": 5.0, "lambda_kd": 1.0, "n_gt_sub": 2 if scale == 2 else 1, "zoom_out": True,
                "label_consistency": True, "lc_prob": 0.3}
    if family == "rcan":
        # the RCAN configs: pixel weight 1, no zoom-out, no label consistency (prob 0 or no key)
        return {"lambda_rec": 1.0, "lambda_kd": 1.0, "n_gt_sub": 1, "zoom_out": False, "label_consistency": False}
    if family == "swinir":
        return {"lambda_rec": 5.0, "lambda_kd": 1.0, "n_gt_sub": 1, "zoom_out": False,
                "label_consistency": True, "lc_prob": 0.3}
    return {}


@dataclass
class DUKDParams(KDParams):
    """KD + upcycling with the EDSR x4 config's values as field defaults (the recipe may change them)."""

    lambda_rec: float = hp(5.0, "weight of L1(S, HR) and of the zoom-out L1(S, LR) (recipe: 5 EDSR/SwinIR, 1 RCAN)", min=0.0)
    upcycle: bool = hp(True, "DUKD data upcycling: zoom-in HR tiles (and zoom-out) as inputs labelled by the teacher")
    label_consistency: bool = hp(True, "random invertible augmentations on the zoom-in inputs, student output mapped back "
                                 "(recipe: on for EDSR/SwinIR, off for RCAN)")
    recipe: str = hp("auto", "official per-teacher-family values for the settings not given with --set "
                     "(auto: from the teacher's arch; other archs use edsr; none: the defaults shown here)", choices=RECIPES)

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
        values = recipe_values(self.recipe, int(self.student.scale))
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
