"""Loss terms of every distillation method against independent formulas, gradient routing, the
frozen teacher, FACD's adaptive mask and hyper-parameter validation. Tiny tensors, CPU, fp32."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from srkd.distill import METHODS, Outputs, build_distiller, get_method, method_doc
from srkd.distill.at import attention_map
from srkd.distill.facd import contrastive_ratio
from srkd.distill.fakd import affinity_l1, spatial_affinity
from srkd.errors import SrkdError
from srkd.models import build_from_spec


# The methods of this test file; CSD, DCKD, DUKD have their own tests (CSD trains its teacher).
BASELINES = ("scratch", "kd", "fitnet", "at", "fakd", "facd")
TEACHER = "edsr:n_resblocks=6,n_feats=16,scale=2"
STUDENT = "edsr:n_resblocks=3,n_feats=8,scale=2"


def nets(seed=0):
    torch.manual_seed(seed)
    return build_from_spec(STUDENT), build_from_spec(TEACHER).eval()


def batch(b=4, size=10, scale=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size * scale, size * scale, generator=g)


def make(method, params=None, seed=0):
    s, t = nets(seed)
    return build_distiller(method, s, t, params, teacher_precision="fp32")


def np_(x):
    return x.detach().double().numpy()


# ----------------------------------------------------------------------------- values


def test_scratch_and_kd_values():
    lr, hr = batch()
    d = make("scratch", {"lambda_rec": 2.0})
    terms = d(lr, hr)
    s_sr = d.student(lr)
    assert set(terms) == {"rec"}
    assert terms["rec"].item() == pytest.approx(2.0 * np.abs(np_(s_sr) - np_(hr)).mean(), rel=1e-5)

    d = make("kd", {"lambda_kd": 0.25})
    terms = d(lr, hr)
    s_sr, t_sr = d.student(lr), d.teacher(lr)
    assert terms["rec"].item() == pytest.approx(np.abs(np_(s_sr) - np_(hr)).mean(), rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.25 * np.abs(np_(s_sr) - np_(t_sr)).mean(), rel=1e-5)


def _manual_features(model, x, paths):
    """Features by walking EDSR by hand (no hooks): body blocks and the body-end conv."""
    h = model.head(model.sub_mean(x * model.rgb_range))
    feats, idx = {}, {p: i for i, p in enumerate(paths)}
    for i, block in enumerate(model.body):
        h = block(h)
        if f"body.{i}" in idx:
            feats[f"body.{i}"] = h
    return [feats[p] for p in paths]


def test_hooks_capture_declared_taps():
    lr, _ = batch()
    d = make("fitnet")
    out = d.run_student(lr)
    manual = _manual_features(d.student, lr, [t.student for t in d.taps])
    assert [t.student for t in d.taps] == ["body.0", "body.1", "body.3"]  # 3 blocks: 1/3, 2/3, body conv
    assert [t.teacher for t in d.taps] == ["body.1", "body.3", "body.6"]
    for a, b in zip(out.feats, manual):
        assert torch.equal(a, b)
    # outside a distillation step (validation, export) the hooks record nothing
    recorded = dict(d._student_rec.outputs)
    d.student(lr * 0.5)
    assert d._student_rec.outputs.keys() == recorded.keys()
    assert all(d._student_rec.outputs[k] is v for k, v in recorded.items())


def test_fitnet_value():
    lr, hr = batch()
    d = make("fitnet", {"lambda_feat": 0.5})
    terms = d(lr, hr)
    s, t = d.run_student(lr), d.run_teacher(lr)
    want = 0.0
    for i, (fs, ft) in enumerate(zip(s.feats, t.feats)):
        conv = d.adapters[str(i)]
        # 1x1 conv as an explicit channel matrix product
        w, b = np_(conv.weight)[:, :, 0, 0], np_(conv.bias)
        r = np.einsum("oc,bchw->bohw", w, np_(fs)) + b[None, :, None, None]
        want += (((r - np_(ft)) / 255.0) ** 2).mean()
    assert terms["feat"].item() == pytest.approx(0.5 * want, rel=1e-4)
    assert terms["kd"].item() == pytest.approx(np.abs(np_(s.sr) - np_(t.sr)).mean(), rel=1e-5)


def test_fitnet_l1_and_identity_adapter_for_equal_widths():
    torch.manual_seed(0)
    s, t = build_from_spec(STUDENT), build_from_spec(STUDENT).eval()
    d = build_distiller("fitnet", s, t, {"distance": "l1"}, teacher_precision="fp32")
    assert all(isinstance(a, torch.nn.Identity) for a in d.adapters.values())
    lr, hr = batch()
    terms = d(lr, hr)
    sf, tf = d.run_student(lr).feats, d.run_teacher(lr).feats
    want = sum(np.abs(np_(a) - np_(b)).mean() / 255.0 for a, b in zip(sf, tf))
    assert terms["feat"].item() == pytest.approx(want, rel=1e-4)


def test_attention_map_and_at_value():
    f = torch.randn(2, 5, 3, 4)
    a = np_(f) ** 2
    a = a.sum(1).reshape(2, -1)
    a = a / (np.sqrt((a**2).sum(1, keepdims=True)) + 1e-6)
    assert np.allclose(np_(attention_map(f)), a, atol=1e-6)

    lr, hr = batch()
    d = make("at", {"lambda_at": 3.0})
    terms = d(lr, hr)
    sf, tf = d.run_student(lr).feats, d.run_teacher(lr).feats
    want = sum(np.abs(np_(attention_map(x)) - np_(attention_map(y))).mean() for x, y in zip(sf, tf))
    assert terms["at"].item() == pytest.approx(3.0 * want, rel=1e-5)


def _affinity_loops(f):
    """A[b, i, j] = <f[:, i], f[:, j]> / (|f[:, i]| |f[:, j]|) by explicit loops (eps as FAKD)."""
    f = np_(f).reshape(f.shape[0], f.shape[1], -1)
    b, c, n = f.shape
    out = np.zeros((b, n, n))
    for k, i, j in itertools.product(range(b), range(n), range(n)):
        ni = np.sqrt((f[k, :, i] ** 2).sum()) + 1e-7
        nj = np.sqrt((f[k, :, j] ** 2).sum()) + 1e-7
        out[k, i, j] = (f[k, :, i] / ni) @ (f[k, :, j] / nj)
    return out


def test_fakd_affinity_blocked_equals_full_value_and_gradient():
    fs = torch.randn(2, 4, 3, 3, dtype=torch.float64).float()
    ft = torch.randn(2, 6, 3, 3)
    assert np.allclose(np_(spatial_affinity(fs)), _affinity_loops(fs), atol=1e-5)
    want = np.abs(_affinity_loops(fs) - _affinity_loops(ft)).mean()
    grads = []
    # one tile; 4x4 and 2x2 tiles (uneven last tile) under checkpointing; 1x1 tiles
    for block in (1 << 20, 32, 8, 1):
        x = fs.clone().requires_grad_(True)
        loss = affinity_l1(x, ft, block_elems=block)
        assert loss.item() == pytest.approx(want, rel=1e-5)
        loss.backward()
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    for g in grads[1:]:
        assert torch.allclose(g, grads[0], atol=1e-6)


def test_fakd_terms_and_pixel_range():
    lr, hr = batch()
    d = make("fakd")
    terms = d(lr, hr)
    s, t = d.run_student(lr), d.run_teacher(lr)
    sa = sum(np.abs(_affinity_loops(a) - _affinity_loops(b)).mean() for a, b in zip(s.feats, t.feats))
    assert terms["fakd"].item() == pytest.approx(10 * sa, rel=1e-4)
    assert terms["rec"].item() == pytest.approx(0.5 * 255 * np.abs(np_(s.sr) - np_(hr)).mean(), rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.5 * 255 * np.abs(np_(s.sr) - np_(t.sr)).mean(), rel=1e-5)


def _ratio_loops(a, p, k_neg=None, distance="l1"):
    a, p = np_(a), np_(p)
    b = a.shape[0]
    dist = (lambda x, y: np.abs(x - y).mean()) if distance == "l1" else (lambda x, y: ((x - y) ** 2).mean())
    out = []
    for i in range(b):
        others = [(i - s) % b for s in range(1, (k_neg or b - 1) + 1)]
        d_pos = dist(a[i], p[i])
        d_neg = np.mean([dist(a[i], p[k]) for k in others])
        out.append(d_pos / (d_neg + 1e-7))
    return np.array(out)


def test_facd_contrastive_ratio():
    a, p = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    assert np.allclose(np_(contrastive_ratio(a, p)), _ratio_loops(a, p), rtol=1e-5)
    assert np.allclose(np_(contrastive_ratio(a, p, num_negatives=2)), _ratio_loops(a, p, 2), rtol=1e-5)
    assert np.allclose(np_(contrastive_ratio(a, p, distance="l2")), _ratio_loops(a, p, distance="l2"), rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in fp32 even inside a bf16 step
        assert np.allclose(np_(contrastive_ratio(a, p)), _ratio_loops(a, p), rtol=1e-5)
    # the anchor's own positive is never a negative: identical anchor/positive gives ratio 0
    assert np.allclose(np_(contrastive_ratio(p, p)), 0.0)
    x = a.clone().requires_grad_(True)
    contrastive_ratio(x, p).sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(SrkdError, match="at least 2"):
        contrastive_ratio(a[:1], p[:1])


def test_facd_terms_value():
    lr, hr = batch(b=4)
    d = make("facd", {"adaptive": "off", "lambda_facd": 0.3})
    terms = d(lr, hr)
    s, t = d.run_student(lr), d.run_teacher(lr)
    want = sum(_ratio_loops(d.adapters[str(i)](fs), ft) for i, (fs, ft) in enumerate(zip(s.feats, t.feats))).mean()
    assert terms["facd"].item() == pytest.approx(0.3 * want, rel=1e-4)
    assert terms["kd"].item() == pytest.approx(np.abs(np_(s.sr) - np_(t.sr)).mean(), rel=1e-5)


# ----------------------------------------------------------------------------- FACD's adaptive mask


def test_facd_mask_zero_loss_and_zero_gradient_for_failing_patches():
    torch.manual_seed(3)
    lr, hr = batch(b=6)
    d = make("facd")
    with torch.no_grad():
        s_sr, t_sr = d.student(lr), d.teacher(lr)
    # Put HR within 1e-3 of the student's output on patches 0 and 3: there the teacher cannot beat it.
    hr = hr.clone()
    hr[[0, 3]] = s_sr[[0, 3]] + 1e-3 * torch.randn_like(s_sr[[0, 3]]).sign()
    mask = d.patch_mask(hr, s_sr, t_sr)
    assert not mask[[0, 3]].any() and mask.any()

    x = lr.clone().requires_grad_(True)
    s = d.run_student(x)
    t = d.run_teacher(lr)
    terms = d.loss_terms(x, hr, s, t)
    distill = terms["kd"] + terms["facd"]
    (g,) = torch.autograd.grad(distill, x, retain_graph=True)
    assert g[[0, 3]].abs().max().item() == 0.0  # no gradient from distillation on failing patches
    assert g[mask].abs().sum().item() > 0

    # value: the failing patches contribute exactly nothing (the sum runs over the others / B)
    ratios = sum(_ratio_loops(d.adapters[str(i)](fs), ft) for i, (fs, ft) in enumerate(zip(s.feats, t.feats)))
    m = mask.numpy()
    assert terms["facd"].item() == pytest.approx(d.params.lambda_facd * ratios[m].sum() / 6, rel=1e-4)
    kd = np.abs(np_(s.sr) - np_(t.sr)).reshape(6, -1).mean(1)
    assert terms["kd"].item() == pytest.approx(kd[m].sum() / 6, rel=1e-5)
    assert d.log_values()["distilled_frac"] == pytest.approx(m.mean())

    # the reconstruction term is never masked
    (g_rec,) = torch.autograd.grad(terms["rec"], x)
    assert g_rec[[0, 3]].abs().sum() > 0


def test_facd_mask_facd_only_keeps_kd_everywhere():
    lr, hr = batch(b=4)
    d = make("facd", {"adaptive_terms": "facd"})
    with torch.no_grad():
        s_sr = d.student(lr)
    hr = hr.clone()
    hr[0] = s_sr[0]
    x = lr.clone().requires_grad_(True)
    terms = d.loss_terms(x, hr, d.run_student(x), d.run_teacher(lr))
    (g_kd,) = torch.autograd.grad(terms["kd"], x, retain_graph=True)
    (g_facd,) = torch.autograd.grad(terms["facd"], x)
    assert g_kd[0].abs().sum() > 0 and g_facd[0].abs().max() == 0


# ----------------------------------------------------------------------------- routing and freezing


@pytest.mark.parametrize("method", BASELINES)
def test_gradients_reach_student_and_adapters_never_teacher(method):
    lr, hr = batch()
    student, teacher = nets()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    d = build_distiller(method, student, teacher, teacher_precision="fp32")
    with torch.no_grad():  # HR near the teacher's output: FACD's condition holds on every patch
        hr = teacher(lr) + 0.01 * torch.randn_like(hr)
    d.train()
    opt = torch.optim.Adam(d.trainable_parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        terms = d(lr, hr)
        assert all(torch.isfinite(v) for v in terms.values())
        sum(terms.values()).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters() if p.requires_grad)
        for a in d.adapters.values():
            for p in a.parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0
        opt.step()
    assert not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters()) or d.teacher is None
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert not {id(p) for p in d.trainable_parameters()} & {id(p) for p in teacher.parameters()}


def test_teacher_stays_eval_and_state_excludes_teacher():
    d = make("fitnet")
    d.train()
    assert d.student.training and not d.teacher.training
    state = d.trainable_state_dict()
    assert state and all(k.startswith(("student.", "adapters.")) for k in state)
    d2 = make("fitnet", seed=5)
    d2.load_trainable_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(d.student.state_dict().values(), d2.student.state_dict().values()))


def test_teacher_runs_no_grad_and_outputs_float32_in_bf16():
    lr, hr = batch()
    s, t = nets()
    d = build_distiller("fitnet", s, t, teacher_precision="bf16")
    out = d.run_teacher(lr)
    assert out.sr.dtype == torch.float32 and not out.sr.requires_grad
    assert all(f.dtype == torch.float32 and not f.requires_grad for f in out.feats)
    ref = t(lr)
    assert (out.sr - ref).abs().max() < 0.05  # bf16 forward of the same network


def test_close_removes_hooks():
    d = make("facd")
    d.close()
    assert not any(m._forward_hooks for m in d.student.modules())
    assert not any(m._forward_hooks for m in d.teacher.modules())


def test_user_module_paths_and_pairs():
    d = make("fitnet", {"taps": "body.2:body.5,body.0"})
    assert [(t.student, t.teacher) for t in d.taps] == [("body.2", "body.5"), ("body.0", "body.0")]
    lr, hr = batch()
    assert torch.isfinite(d(lr, hr)["feat"])


def test_heterogeneous_teacher_student():
    torch.manual_seed(0)
    s = build_from_spec("edsr:n_resblocks=3,n_feats=8,scale=2")
    t = build_from_spec("carn-m:scale=2,n_feats=16").eval()
    lr, hr = batch()
    for method in ("fitnet", "at", "fakd", "facd"):
        d = build_distiller(method, s, t, teacher_precision="fp32")
        assert all(torch.isfinite(v) for v in d(lr, hr).values())


# ----------------------------------------------------------------------------- bad input


def test_unknown_method_and_hyper_parameters():
    s, t = nets()
    with pytest.raises(SrkdError, match="unknown distillation method 'nope'"):
        build_distiller("nope", s, t)
    with pytest.raises(SrkdError, match="unknown hyper-parameter 'lamda_kd'.*lambda_kd"):
        build_distiller("kd", s, t, {"lamda_kd": 1})
    bad = [
        ("kd", {"lambda_kd": "abc"}, "expected float"),
        ("kd", {"lambda_kd": -1}, ">= 0"),
        ("kd", {"lambda_kd": "nan"}, "finite"),
        ("facd", {"adaptive": "maybe"}, "choose one of teacher_better, off"),
        ("facd", {"num_negatives": 1.5}, "expected int"),
        ("facd", {"num_negatives": "x"}, "expected int"),
        ("fitnet", {"distance": "l3"}, "choose one of"),
        ("fitnet", {"taps": "body.99"}, "no module 'body.99'"),
    ]
    for method, params, match in bad:
        with pytest.raises(SrkdError, match=match):
            build_distiller(method, s, t, params)


def test_scale_and_spatial_mismatch():
    s = build_from_spec("edsr:n_resblocks=3,n_feats=8,scale=2")
    t = build_from_spec("edsr:n_resblocks=3,n_feats=8,scale=3")
    with pytest.raises(SrkdError, match="teacher is x3 but student is x2"):
        build_distiller("kd", s, t)
    s, t = nets()
    with pytest.raises(SrkdError, match="feature tap 'body1:tail'.*spatial size"):
        build_distiller("at", s, t, {"taps": "body1:tail"})


def test_method_docs_list_every_parameter():
    for name, cls in METHODS.items():
        doc = method_doc(cls)
        assert doc.summary and doc.name == name
        assert {r[0] for r in doc.params} == set(cls.Params.__dataclass_fields__)
    assert get_method("FACD") is METHODS["facd"]


def test_outputs_dataclass_defaults():
    o = Outputs(torch.zeros(1))
    assert o.feats == []
