"""The ``dukd`` method and ``kd --set upcycle=true``: loss values against hand computations,
label alignment, gradient routing, per-family recipes and the official two-step option in the
real training engine. Tiny networks, CPU, fp32."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import data_path
from srkd.distill import METHODS, build_distiller, method_doc
from srkd.distill.upcycle import draw_augmentations
from srkd.errors import SrkdError
from srkd.models import build_from_spec
from test_dukd_upcycle import _numpy_augment, _ref_down


TEACHER = "edsr:n_resblocks=2,n_feats=16,scale=2"
STUDENT = "edsr:n_resblocks=1,n_feats=8,scale=2"


def nets(student=STUDENT, teacher=TEACHER, seed=0):
    torch.manual_seed(seed)
    return build_from_spec(student), build_from_spec(teacher).eval()


def batch(b=2, size=8, scale=2, seed=1, dyadic=False):
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(b, 3, size, size, generator=g)
    hr = torch.rand(b, 3, size * scale, size * scale, generator=g)
    if dyadic:
        lr, hr = (torch.round(x * 256) / 256 for x in (lr, hr))
    return lr, hr


def make(method="dukd", params=None, student=STUDENT, teacher=TEACHER, seed=0):
    s, t = nets(student, teacher, seed)
    return build_distiller(method, s, t, params, teacher_precision="fp32")


def _numpy_revert(img: np.ndarray, combo) -> np.ndarray:
    inv, fr, fc, tr = combo
    if tr:
        img = np.swapaxes(img, 1, 2)
    if fc:
        img = img[:, :, ::-1]
    if fr:
        img = img[:, ::-1, :]
    if inv:
        img = 1.0 - img
    return img


def _run(net, x_np):
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(x_np)).float()).double().numpy()


# ----------------------------------------------------------------------------- values


def test_registered_with_the_edsr_x4_values_as_defaults():
    assert METHODS["dukd"].name == "dukd"
    rows = {r[0]: r[2] for r in method_doc(METHODS["dukd"]).params}
    assert rows["lambda_rec"] == 5.0 and rows["lambda_kd"] == 1.0 and rows["upcycle"] is True
    assert rows["zoom_out"] is True and rows["label_consistency"] is True and rows["lc_prob"] == 0.3
    assert rows["lc_revert"] == "exact" and rows["two_step"] is False and rows["recipe"] == "auto"
    kd_rows = {r[0]: r[2] for r in method_doc(METHODS["kd"]).params}
    assert kd_rows["upcycle"] is False and kd_rows["label_consistency"] is False


@pytest.mark.parametrize("revert_kind", ["exact", "official"])
def test_loss_values_match_a_hand_computation(revert_kind):
    """Every term of one DUKD batch at x2 (two tiles, p = 0.5) recomputed in numpy."""
    lr, hr = batch()
    p = {"recipe": "none", "n_gt_sub": 2, "lc_prob": 0.5, "lc_revert": revert_kind, "lambda_rec": 3.0,
         "lambda_kd": 0.5, "lambda_upcycle": 2.0}
    d = make(params=p)
    torch.manual_seed(42)
    terms = d(lr, hr)
    assert set(terms) == {"rec", "kd", "zoom_in", "zoom_out_rec", "zoom_out_kd"}

    S, T = d.student, d.teacher
    lr_np, hr_np = lr.double().numpy(), hr.double().numpy()
    s_out, t_out = _run(S, lr_np), _run(T, lr_np)
    assert terms["rec"].item() == pytest.approx(3.0 * np.abs(s_out - hr_np).mean(), rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.5 * np.abs(s_out - t_out).mean(), rel=1e-5)

    # the same random stream: tile positions first, then the per-sample augmentation draws
    torch.manual_seed(42)
    order = torch.randperm(4)[:2].tolist()
    tiles = np.concatenate([hr_np[:, :, (k // 2) * 8:(k // 2 + 1) * 8, (k % 2) * 8:(k % 2 + 1) * 8] for k in order])
    combos = (torch.rand(len(tiles), 4) < 0.5).tolist()
    label = _run(T, tiles)
    errs = []
    for n, combo in enumerate(combos):
        out = _run(S, _numpy_augment(tiles[n], combo)[None])[0]
        back = _numpy_revert(out, combo) if revert_kind == "exact" else _numpy_augment(out, combo)
        errs.append(np.abs(back - label[n]))
    assert terms["zoom_in"].item() == pytest.approx(2.0 * 0.5 * np.mean(errs), rel=1e-5)

    small = _ref_down(lr_np, 2)
    s_small, t_small = _run(S, small), _run(T, small)
    assert terms["zoom_out_rec"].item() == pytest.approx(2.0 * 3.0 * np.abs(s_small - lr_np).mean(), rel=1e-4)
    assert terms["zoom_out_kd"].item() == pytest.approx(2.0 * 0.5 * np.abs(s_small - t_small).mean(), rel=1e-4)


class NearestSR(nn.Module):
    """An SR 'network' that commutes with every augmentation: 1x1 identity conv + nearest upscale."""

    arch = "edsr"

    def __init__(self, scale=2):
        super().__init__()
        self.scale, self.scales = scale, (scale,)
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        return nn.functional.interpolate(self.conv(x), scale_factor=self.scale, mode="nearest")


def test_zoom_in_labels_align_with_the_reverted_student_output():
    """With an equivariant student equal to the teacher, a correctly aligned and reverted zoom-in
    term is exactly zero for any draw; the official revert is not, on exactly the 180-degree cases."""
    lr, hr = batch(b=8, dyadic=True)
    base = {"recipe": "none", "zoom_out": False, "n_gt_sub": 4, "lc_prob": 0.5}
    exact = build_distiller("dukd", NearestSR(), NearestSR().eval(), base, teacher_precision="fp32")
    official = build_distiller("dukd", NearestSR(), NearestSR().eval(), {**base, "lc_revert": "official"},
                               teacher_precision="fp32")
    hit = miss = 0
    for seed in range(6):
        torch.manual_seed(seed)
        assert exact(lr, hr)["zoom_in"].item() == 0.0
        torch.manual_seed(seed)
        value = official(lr, hr)["zoom_in"].item()
        torch.manual_seed(seed)
        torch.randperm(4)
        draws = draw_augmentations(32, 0.5)
        rotated = (draws[:, 3] & (draws[:, 1] ^ draws[:, 2])).any().item()
        assert (value > 0) == rotated
        hit, miss = hit + rotated, miss + (not rotated)
    assert hit > 0  # the draws did exercise the bug


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("method,params", [("dukd", {"recipe": "none"}), ("kd", {"upcycle": "true", "label_consistency": "true"})])
def test_gradients_reach_the_student_only(method, params):
    d = make(method, params)
    before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    lr, hr = batch()
    terms = d(lr, hr)
    assert {"zoom_in", "zoom_out_rec", "zoom_out_kd"} <= set(terms)
    for name in ("zoom_in", "zoom_out_kd"):
        d.student.zero_grad(set_to_none=True)
        terms[name].backward(retain_graph=True)
        grads = [p.grad for p in d.student.parameters() if p.requires_grad]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum().item() for g in grads) > 0, name
    assert all(p.grad is None and not p.requires_grad for p in d.teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in d.teacher.state_dict().items())
    assert [id(p) for p in d.trainable_parameters()] == [id(p) for p in d.student.parameters() if p.requires_grad]


def test_kd_with_upcycle_equals_dukd_with_the_same_values():
    p = {"recipe": "none", "lambda_rec": 5.0, "upcycle": True, "label_consistency": True}
    lr, hr = batch()
    a, b = make("dukd", p), make("kd", {k: v for k, v in p.items() if k != "recipe"})
    torch.manual_seed(7)
    ta = a(lr, hr)
    torch.manual_seed(7)
    tb = b(lr, hr)
    assert set(ta) == set(tb)
    for k in ta:
        assert ta[k].item() == pytest.approx(tb[k].item(), rel=1e-6), k
    plain = make("kd")(lr, hr)
    assert set(plain) == {"rec", "kd"}


# ----------------------------------------------------------------------------- recipes and options


def test_recipe_follows_the_teacher_family_and_explicit_values_win():
    d = make(teacher="rcan:n_resgroups=1,n_resblocks=1,n_feats=16,scale=2")
    assert d.recipe == "rcan"
    assert (d.params.lambda_rec, d.params.zoom_out, d.params.label_consistency) == (1.0, False, False)
    terms = d(*batch())
    assert set(terms) == {"rec", "kd", "zoom_in"}

    d = make(params={"lambda_rec": "5", "zoom_out": "true"}, teacher="rcan:n_resgroups=1,n_resblocks=1,n_feats=16,scale=2")
    assert (d.params.lambda_rec, d.params.zoom_out, d.params.label_consistency) == (5.0, True, False)

    d = make()  # EDSR teacher at x2: two of the four tiles, zoom-out and p = 0.3 on
    assert d.recipe == "edsr" and d.params.n_gt_sub == 2 and d.params.zoom_out and d.params.lc_prob == 0.3
    assert d.describe()["recipe"] == "edsr" and d.describe()["params"]["n_gt_sub"] == 2
    d = make(student="edsr:n_resblocks=1,n_feats=8,scale=4", teacher="edsr:n_resblocks=1,n_feats=8,scale=4")
    assert d.params.n_gt_sub == 1 and d.params.lambda_rec == 5.0
    d = make(params={"recipe": "swinir"})
    assert (d.params.zoom_out, d.params.label_consistency, d.params.lambda_rec) == (False, True, 5.0)


# Written from yun224/DUKD options/*/dukd_*.yml (pixel_opt, kd_opt, dukd_opt.n_gt_sub, dukd_opt.zoom_out, noisy.prob)
OFFICIAL = {
    ("edsr", 2): (5.0, 1.0, 2, True, 0.3), ("edsr", 3): (5.0, 1.0, 1, True, 0.3), ("edsr", 4): (5.0, 1.0, 1, True, 0.3),
    ("rcan", 2): (1.0, 1.0, 1, False, None), ("rcan", 3): (2.0, 1.0, 1, True, 0.3), ("rcan", 4): (1.0, 1.0, 1, False, None),
    ("swinir", 2): (5.0, 1.0, 1, False, 0.3), ("swinir", 3): (5.0, 1.0, 1, False, 0.3), ("swinir", 4): (5.0, 1.0, 1, False, 0.3),
}


@pytest.mark.parametrize("family,scale", sorted(OFFICIAL))
def test_recipe_is_the_official_config_of_each_family_and_scale(family, scale):
    rec, kd, n_sub, zoom_out, prob = OFFICIAL[(family, scale)]
    s = f"edsr:n_resblocks=1,n_feats=8,scale={scale}"
    d = make(student=s, teacher=s, params={"recipe": family})
    p = d.params
    assert (p.lambda_rec, p.lambda_kd, p.n_gt_sub, p.zoom_out) == (rec, kd, n_sub, zoom_out)
    assert p.label_consistency is (prob is not None)
    if prob is not None:
        assert p.lc_prob == prob
    assert (p.two_step, p.lc_revert) == (False, "exact") and d.steps_per_batch == 1  # srkd's loop by default
    o = make(student=s, teacher=s, params={"recipe": family, "loop": "official"})
    assert (o.params.two_step, o.params.carry_grad, o.params.lc_revert) == (True, True, "official")
    assert o.steps_per_batch == 2 and (o.params.lambda_rec, o.params.n_gt_sub) == (rec, n_sub)
    e = make(student=s, teacher=s, params={"recipe": family, "loop": "official", "lc_revert": "exact"})
    assert e.params.lc_revert == "exact" and e.params.two_step  # a value given by name still wins


def test_rcan_x3_recipe_comes_from_an_rcan_teacher():
    d = make(student="edsr:n_resblocks=1,n_feats=8,scale=3", teacher="rcan:n_resgroups=1,n_resblocks=1,n_feats=16,scale=3")
    assert d.recipe == "rcan"
    assert (d.params.lambda_rec, d.params.zoom_out, d.params.label_consistency, d.params.lc_prob) == (2.0, True, True, 0.3)


def test_bad_options_are_one_line_errors():
    with pytest.raises(SrkdError, match="upcycle=true"):
        make("kd", {"label_consistency": "true"})
    with pytest.raises(SrkdError, match="upcycle=true"):
        make("kd", {"two_step": "true"})
    with pytest.raises(SrkdError, match="recipe"):
        make(params={"recipe": "vdsr"})
    with pytest.raises(SrkdError, match="lc_prob"):
        make(params={"lc_prob": "1.5"})
    with pytest.raises(SrkdError, match="n_gt_sub"):
        make(params={"n_gt_sub": "5"})  # 4 cells at x2: refused before any batch
    with pytest.raises(SrkdError, match="square"):
        make(params={"recipe": "none", "zoom_out": False})(torch.rand(2, 3, 6, 8), torch.rand(2, 3, 12, 16))
    terms = make(params={"recipe": "none", "label_consistency": False})(torch.rand(2, 3, 6, 8), torch.rand(2, 3, 12, 16))
    assert terms["zoom_in"].shape == () and terms["zoom_out_rec"].shape == ()


def test_phases_split_the_terms():
    d = make(params={"recipe": "none", "two_step": "true"})
    assert d.steps_per_batch == 2 and d.carry_grad
    lr, hr = batch()
    assert set(d(lr, hr, phase=0)) == {"rec", "kd"}
    assert set(d(lr, hr, phase=1)) == {"zoom_in", "zoom_out_rec", "zoom_out_kd"}
    assert make(params={"recipe": "none"}).steps_per_batch == 1


# ----------------------------------------------------------------------------- two optimiser steps


class Recorder:
    """Wraps a method: records the batch and RNG state it saw, and the gradient of every step."""

    def __init__(self, method):
        self.method = method
        self.seen, self.steps = [], []

    def install(self, state):
        def pre_step(opt, args, kwargs):
            self.steps.append({
                "grads": [p.grad.detach().clone() for p in self.method.student.parameters() if p.requires_grad],
                "weights": copy.deepcopy(self.method.student.state_dict()),
            })

        state.optimizer.register_step_pre_hook(pre_step)


def _engine_run(tmp_path, params, scale=2):
    from srkd.train import config as C
    from srkd.train.engine import train

    root = data_path("benchmarks", "Set5")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{root}/HR/{n}.png {root}/LR_bicubic/X{scale}/{n}x{scale}.png\n"
                             for n in ("bird", "butterfly")))
    cfg = C.from_dict({
        "model": {"arch": STUDENT, "scale": scale},
        "data": {"sources": [str(pairs)], "patch": 8, "batch": 2, "augment": False},
        "schedule": {"kind": "constant"},
        "train": {"steps": 1, "precision": "fp32", "ema": 0, "channels_last": False, "threads": 1},
        "val": {"sets": []},
        "run": {"out": str(tmp_path / "run"), "tensorboard": False},
        "method": {"name": "dukd"},
    })
    recorder = None

    def factory(student):
        nonlocal recorder
        torch.manual_seed(0)
        teacher = build_from_spec(TEACHER).eval()
        method = build_distiller("dukd", student, teacher, params, teacher_precision="fp32")
        recorder = Recorder(method)
        original_forward, original_bind = method.forward, method.bind_engine

        def forward(lr, hr, phase=None):
            recorder.seen.append({"lr": lr.clone(), "hr": hr.clone(), "rng": torch.get_rng_state(), "phase": phase,
                                  "weights": copy.deepcopy(method.student.state_dict())})
            return original_forward(lr, hr, phase=phase)

        def bind(state):
            original_bind(state)
            recorder.install(state)

        method.forward, method.bind_engine = forward, bind
        return method

    train(cfg, factory, overwrite=True, progress=False)
    return recorder


def _grads(method, weights, seen, phase):
    """Gradient of one phase's terms, recomputed on a copy of the student at ``weights``."""
    m = copy.deepcopy(method)
    m.student.load_state_dict(weights)
    m.student.zero_grad(set_to_none=True)
    torch.set_rng_state(seen["rng"])
    terms = type(m).forward(m, seen["lr"], seen["hr"], phase=phase)
    sum(v.float() for v in terms.values()).backward()
    return [p.grad.clone() for p in m.student.parameters() if p.requires_grad]


@pytest.mark.parametrize("carry", [True, False])
def test_two_steps_carry_the_first_gradient_exactly_when_asked(tmp_path, carry):
    rec = _engine_run(tmp_path, {"recipe": "none", "zoom_out": "false", "two_step": "true", "carry_grad": str(carry)})
    assert [s["phase"] for s in rec.seen] == [0, 1] and len(rec.steps) == 2
    first, second = rec.seen
    g_a = _grads(rec.method, first["weights"], first, 0)
    g_b = _grads(rec.method, second["weights"], second, 1)
    # the second phase ran on the weights after the first step
    assert any(not torch.equal(a, b) for a, b in zip(first["weights"].values(), second["weights"].values()))
    for got, a in zip(rec.steps[0]["grads"], g_a):
        torch.testing.assert_close(got, a, rtol=1e-5, atol=1e-7)
    for got, a, b in zip(rec.steps[1]["grads"], g_a, g_b):
        torch.testing.assert_close(got, a + b if carry else b, rtol=1e-5, atol=1e-7)


def test_single_step_default_applies_all_terms_once(tmp_path):
    rec = _engine_run(tmp_path, {"recipe": "none", "zoom_out": "false"})
    assert [s["phase"] for s in rec.seen] == [None] and len(rec.steps) == 1
    seen = rec.seen[0]
    g = _grads(rec.method, seen["weights"], seen, None)
    for got, want in zip(rec.steps[0]["grads"], g):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
