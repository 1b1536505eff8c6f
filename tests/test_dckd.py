"""DCKD pieces against independent computations: the VQGAN encoder's official names, loading and
refusing checkpoints, the history model's update rule and schedule, negative generation, the
contrastive and codebook cross-entropy terms (paper and released-code variants), gradient
routing, label consistency (DCKD*) and the method's saved state. Tiny tensors, CPU, fp32."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srkd.distill import build_distiller
from srkd.distill.dckd import (
    Degradation,
    NegativeDistance,
    code_ce,
    contrastive_ratio,
    dcl_loss,
    degrade,
    gaussian_noise,
    history_interval,
    history_update_,
    history_update_iterations,
    negative_inputs,
)
from srkd.distill.vqgan import (
    F16_N1024,
    VQGANConfig,
    VQGANEncoder,
    export_vqgan,
    load_vqgan,
    needed_keys,
    read_vqgan_state,
)
from srkd.errors import SrkdError
from srkd.models import build_from_spec


TEACHER = "edsr:n_resblocks=4,n_feats=16,scale=2"
STUDENT = "edsr:n_resblocks=2,n_feats=8,scale=2"
# Two blocks per level and attention at the last level and in the middle, like f16 n1024, tiny.
TINY = VQGANConfig(ch=32, ch_mult=(1, 1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(4,), z_channels=32,
                   embed_dim=16, n_embed=24, resolution=64)


# ----------------------------------------------------------------------------- the encoder


def taming_keys(cfg: VQGANConfig) -> dict[str, tuple[int, ...]]:
    """The encoder-side state-dict keys of taming's VQModel, enumerated from its naming rules."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        keys[f"{name}.weight"] = (cout, cin, k, k)
        keys[f"{name}.bias"] = (cout,)

    def norm(name, c):
        keys[f"{name}.weight"] = (c,)
        keys[f"{name}.bias"] = (c,)

    def resblock(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    conv("encoder.conv_in", cfg.in_channels, cfg.ch, 3)
    res, cin = cfg.resolution, cfg.ch
    for i, mult in enumerate(cfg.ch_mult):
        cout = cfg.ch * mult
        for j in range(cfg.num_res_blocks):
            resblock(f"encoder.down.{i}.block.{j}", cin, cout)
            cin = cout
            if res in cfg.attn_resolutions:
                attn(f"encoder.down.{i}.attn.{j}", cin)
        if i != len(cfg.ch_mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
            res //= 2
    resblock("encoder.mid.block_1", cin, cin)
    attn("encoder.mid.attn_1", cin)
    resblock("encoder.mid.block_2", cin, cin)
    norm("encoder.norm_out", cin)
    conv("encoder.conv_out", cin, cfg.z_channels, 3)
    conv("quant_conv", cfg.z_channels, cfg.embed_dim, 1)
    keys["quantize.embedding.weight"] = (cfg.n_embed, cfg.embed_dim)
    return keys


def test_official_key_names_and_shapes():
    assert needed_keys(F16_N1024) == taming_keys(F16_N1024)
    keys = needed_keys(F16_N1024)
    # the published f16 n1024 layout: widths change at levels 2 and 4, attention only at level 4
    assert keys["encoder.down.2.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert keys["encoder.down.4.block.0.nin_shortcut.weight"] == (512, 256, 1, 1)
    assert "encoder.down.4.attn.1.proj_out.weight" in keys and not any(".down.3.attn" in k for k in keys)
    assert "encoder.down.3.downsample.conv.weight" in keys and not any("down.4.downsample" in k for k in keys)
    assert keys["encoder.conv_out.weight"] == (256, 512, 3, 3)  # double_z false
    assert keys["quant_conv.weight"] == (256, 256, 1, 1)
    assert keys["quantize.embedding.weight"] == (1024, 256)
    assert sum(math.prod(s) for s in keys.values()) == 29_626_112


def _swish(x):
    return x * torch.sigmoid(x)


def _ref_features_and_latent(m: VQGANEncoder, x):
    """taming's Encoder.forward and DCKD's get_feas written out literally (bmm attention)."""
    e = m.encoder

    def rb(b, h):
        out = b.conv2(_swish(b.norm2(b.conv1(_swish(b.norm1(h))))))
        return (b.nin_shortcut(h) if b.nin_shortcut is not None else h) + out

    def at(a, h):
        n = a.norm(h)
        q, k, v = a.q(n), a.k(n), a.v(n)
        b, c, hh, ww = q.shape
        w = torch.bmm(q.reshape(b, c, -1).permute(0, 2, 1), k.reshape(b, c, -1)) * c ** -0.5
        w = F.softmax(w, dim=2).permute(0, 2, 1)
        return h + a.proj_out(torch.bmm(v.reshape(b, c, -1), w).reshape(b, c, hh, ww))

    feats, h = [], e.conv_in(x)
    for i, stage in enumerate(e.down):
        for j, block in enumerate(stage.block):
            h = rb(block, h)
            if j == 0:
                feats.append(h)
            if len(stage.attn):
                h = at(stage.attn[j], h)
        if i != len(e.down) - 1:
            h = stage.downsample.conv(F.pad(h, (0, 1, 0, 1)))
    h = rb(e.mid.block_2, at(e.mid.attn_1, rb(e.mid.block_1, h)))
    z = m.quant_conv(e.conv_out(_swish(e.norm_out(h))))
    d = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    cb = m.quantize.embedding.weight
    dist = d.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1) - 2 * d @ cb.t()
    probs = F.softmax(dist.max(1, keepdim=True).values - dist, 1)  # DCKD's VectorQuantizerD
    return feats, z, probs


def test_encoder_matches_the_taming_computation():
    torch.manual_seed(0)
    m = VQGANEncoder(TINY).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # non-trivial norms and biases
        x = torch.rand(2, 3, 40, 36)
        feats, z = m.features_and_latent(x)
        ref_feats, ref_z, ref_probs = _ref_features_and_latent(m, x)
    assert len(feats) == 5
    assert [f.shape[1] for f in feats] == [32, 32, 64, 64, 64]
    assert [f.shape[-2:] for f in feats] == [(40, 36), (20, 18), (10, 9), (5, 4), (2, 2)]  # floor(h/2) after padding
    for a, b in zip(feats, ref_feats):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z, ref_z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(F.softmax(m.code_logits(z), 1), ref_probs, rtol=1e-4, atol=1e-6)
    # the latent of the first images only, resumed from the shared feature pass
    _, z1 = m.features_and_latent(x, latent_of=1)
    torch.testing.assert_close(z1, z[:1])


def test_full_size_feature_levels():
    feats = VQGANEncoder(F16_N1024).eval().features(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(128, 32, 32), (128, 16, 16), (256, 8, 8), (256, 4, 4), (512, 2, 2)]


# ----------------------------------------------------------------------------- loading


class LightningCallback:  # stands for pytorch_lightning's ModelCheckpoint, stored as a dict *key*
    pass


MARKER = {"path": None}


def _side_effect(path):
    open(path, "w").close()
    return "ran"


class Trap:
    """Unpickling this would call _side_effect: a safe reader must never do so."""

    def __reduce__(self):
        return (_side_effect, (MARKER["path"],))


def tiny_state(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in taming_keys(TINY).items()}


def test_loads_a_lightning_checkpoint_without_running_it(tmp_path):
    state = tiny_state()
    MARKER["path"] = str(tmp_path / "executed")
    ckpt = {
        "epoch": 3, "global_step": 10,
        "state_dict": {**state, "decoder.conv_in.weight": torch.zeros(2), "loss.discriminator.main.0.weight": torch.zeros(2)},
        "callbacks": {LightningCallback: {"best_model_score": torch.tensor(1.0)}},
        "trap": Trap(),
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(Exception):  # weights_only refuses it, so the restricted reader is what loads it
        torch.load(path, weights_only=True)
    m = load_vqgan(str(path), cfg=TINY)
    assert not (tmp_path / "executed").exists()
    got = m.state_dict()
    assert set(got) == set(state)
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert not any(p.requires_grad for p in m.parameters()) and not m.training

    # a plain pickle of the state dict (DCKD's VQGAN_f16_n1024.pth) and safetensors
    from safetensors.torch import save_file

    torch.save({"params": state}, tmp_path / "vqgan.pth")
    save_file(state, str(tmp_path / "vqgan.safetensors"))
    for name in ("vqgan.pth", "vqgan.safetensors"):
        got = load_vqgan(str(tmp_path / name), cfg=TINY).state_dict()
        assert all(torch.equal(got[k], state[k]) for k in state)
    # the export keeps exactly the needed tensors and never overwrites silently
    out = export_vqgan(path, tmp_path / "enc.safetensors", cfg=TINY)
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert set(f.keys()) == set(state)
    with pytest.raises(SrkdError, match="--overwrite"):
        export_vqgan(path, out, cfg=TINY)


def test_refuses_a_wrong_state_dict_clearly(tmp_path, monkeypatch):
    state = tiny_state()
    missing = dict(state)
    del missing["encoder.down.1.block.1.conv2.weight"]
    torch.save({"state_dict": missing}, tmp_path / "a.ckpt")
    with pytest.raises(SrkdError, match=r"lacks 1 of the .*\(first: encoder.down.1.block.1.conv2.weight"):
        load_vqgan(str(tmp_path / "a.ckpt"), cfg=TINY)

    bigger = dict(state, **{"quantize.embedding.weight": torch.zeros(48, 16)})
    torch.save({"state_dict": bigger}, tmp_path / "b.ckpt")
    with pytest.raises(SrkdError, match=r"quantize.embedding.weight has shape \(48, 16\), expected \(24, 16\).*48-code"):
        load_vqgan(str(tmp_path / "b.ckpt"), cfg=TINY)

    torch.save(build_from_spec(STUDENT).state_dict(), tmp_path / "sr.pth")
    with pytest.raises(SrkdError, match="no taming VQGAN keys"):
        read_vqgan_state(tmp_path / "sr.pth", TINY)

    (tmp_path / "junk.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SrkdError, match="junk.ckpt"):
        load_vqgan(str(tmp_path / "junk.ckpt"), cfg=TINY)
    with pytest.raises(SrkdError, match="not found"):
        load_vqgan(str(tmp_path / "absent.ckpt"))

    monkeypatch.delenv("SRKD_VQGAN", raising=False)
    with pytest.raises(SrkdError) as err:
        load_vqgan("")
    msg = str(err.value)
    assert "\n" not in msg and "--set vqgan=" in msg and "random-small" in msg


def test_random_encoders_only_by_name_and_without_touching_the_global_rng():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    m = load_vqgan("random-small")
    after = torch.rand(3)
    assert torch.equal(before, after)
    assert m.describe()["source"] == "random-small" and len(m.features(torch.rand(1, 3, 32, 32))) == 5
    with pytest.raises(SrkdError, match="not found"):
        load_vqgan("random-tiny")


# ----------------------------------------------------------------------------- history model


def test_history_schedule_is_the_released_rule_at_250k_and_scales():
    code = [it for it in range(1, 250_001) if it % (1000, 2000, 3000)[(it - 1) // 100_000] == 0]
    assert history_update_iterations(250_000) == code
    assert len(code) == 100 + 50 + 17
    # a 2,500-step run: intervals 10/20/30, phases ending at 1,000 and 2,000
    its = history_update_iterations(2500)
    assert its[:3] == [10, 20, 30] and 1000 in its and 1020 in its and 1010 not in its and 2020 not in its and 2040 in its
    assert [history_interval(it, 2500) for it in (1, 1000, 1001, 2000, 2001, 2500)] == [10, 10, 20, 20, 30, 30]
    # thirds, unscaled
    assert [history_interval(it, 3000, bounds=(1 / 3, 2 / 3), reference=0) for it in (1000, 1001, 2001)] == [1000, 2000, 3000]
    assert history_interval(5, 10) == 1  # never 0


def make(params=None, seed=0):
    torch.manual_seed(seed)
    s, t = build_from_spec(STUDENT), build_from_spec(TEACHER).eval()
    base = {"vqgan": "random-small"}
    base.update(params or {})
    return build_distiller("dckd", s, t, base, teacher_precision="fp32")


def batch(b=2, size=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, 2 * size, 2 * size, generator=g)


def engine_stub(d, steps, ema=None):
    cfg = types.SimpleNamespace(train=types.SimpleNamespace(steps=steps, seed=3))
    d.bind_engine(types.SimpleNamespace(config=cfg, rank=0, ema=ema, step=0))


def test_history_update_closed_form_and_no_gradients():
    d = make({"history_steps": "2,4,6", "history_reference": 0, "history_bounds": "0.5,0.75", "history_alpha": 0.1})
    ema = build_from_spec(STUDENT)
    with torch.no_grad():
        for p in ema.parameters():
            p.normal_()
    engine_stub(d, steps=16, ema=ema)
    # binding starts the history from the engine's EMA model (the code's update_model_ema(0))
    assert all(torch.equal(a, b) for a, b in zip(d.history.state_dict().values(), ema.state_dict().values()))
    with torch.no_grad():
        for p in d.history.parameters():
            p.uniform_(-1, 1)  # a history far from the EMA, so every update shows
    h0 = {k: v.clone() for k, v in d.history.state_dict().items()}
    src = ema.state_dict()
    lr, hr = batch()
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1)
    assert not any(id(p) in {id(q) for q in d.trainable_parameters()} for p in d.history.parameters())
    for step in range(16):  # phases 1-8 / 9-12 / 13-16: updates after iterations 2, 4, 6, 8, 12
        opt.zero_grad()
        sum(d(lr, hr).values()).backward()
        assert all(p.grad is None for p in d.history.parameters())
        opt.step()
        d.on_step_end(step)
    n = d.history_updates
    assert n == 5
    for k, v in d.history.state_dict().items():
        if v.is_floating_point():
            want = 0.1 ** n * h0[k] + (1 - 0.1 ** n) * src[k]
            torch.testing.assert_close(v, want, rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in d.history.parameters()) and not d.history.training


def test_history_update_rule_single_step_and_raw_student_source():
    a, b = build_from_spec(STUDENT), build_from_spec(STUDENT)
    a0 = {k: v.clone() for k, v in a.state_dict().items()}
    history_update_(a, b, 0.25)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, 0.25 * a0[k] + 0.75 * b.state_dict()[k])
    d = make({"history_source": "student"})
    engine_stub(d, 10, ema=build_from_spec(STUDENT))
    assert d.history_source() is d.student
    d = make()
    assert d.history_source() is d.student  # no engine EMA (train.ema 0): the raw student


# ----------------------------------------------------------------------------- negatives


def test_negatives_are_reproducible_and_within_the_noise_ranges():
    x = torch.full((400, 3, 16, 16), 0.5)
    g = torch.Generator().manual_seed(11)
    noisy, sigma, gray = gaussian_noise(x, (1.0, 30.0), 0.5, g)
    assert float(sigma.min()) >= 1 / 255 and float(sigma.max()) <= 30 / 255
    assert float(sigma.max()) > 25 / 255 and float(sigma.min()) < 5 / 255  # the range is used
    assert 0.4 < float(gray.float().mean()) < 0.6
    noise = noisy - x
    assert torch.equal(noise[gray][:, 0], noise[gray][:, 1]) and torch.equal(noise[gray][:, 0], noise[gray][:, 2])
    assert not torch.equal(noise[~gray][:, 0], noise[~gray][:, 1])
    # per-sample spread is the drawn sigma (0.5 +- 4 sigma never clips here)
    ratio = noise.flatten(1).std(1) / sigma
    assert float((ratio - 1).abs().max()) < 0.15
    # clipped, not rounded
    bright, _, _ = gaussian_noise(torch.ones(8, 3, 16, 16), (30.0, 30.0), 0.0, g)
    assert float(bright.max()) == 1.0 and float(bright.min()) < 0.95 and (bright < 1).any()
    assert not torch.equal(bright * 255, (bright * 255).round())

    lr = torch.rand(2, 3, 12, 12)
    deg = Degradation(blur_prob=0.5, resize_prob=0.5)
    a = negative_inputs(lr, 5, True, deg, torch.Generator().manual_seed(3))
    b = negative_inputs(lr, 5, True, deg, torch.Generator().manual_seed(3))
    c = negative_inputs(lr, 5, True, deg, torch.Generator().manual_seed(4))
    assert len(a) == 5 and a[0] is lr and all(x.shape == lr.shape for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a[1:], c[1:]))
    # noise is clipped; a bicubic resize back (the code's order) may overshoot, so check noise-only copies
    plain = negative_inputs(lr, 5, True, Degradation(), torch.Generator().manual_seed(3))
    assert all(float(x.min()) >= 0 and float(x.max()) <= 1 for x in plain)
    assert len(negative_inputs(lr, 3, False, Degradation(), torch.Generator().manual_seed(3))) == 3
    # the released config: noise only, so every degraded copy differs from the LR by at most ~4.5 sigma_max
    d1 = degrade(lr, Degradation(), torch.Generator().manual_seed(0)) - lr
    assert 0 < float(d1.abs().max()) < 6 * 30 / 255


# ----------------------------------------------------------------------------- loss terms


def test_contrastive_term_against_hand_computation():
    # one level, batch of 2, 1x1x2 features
    a = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 4.0]]]], requires_grad=True)
    p = torch.tensor([[[[1.5, 2.0]]], [[[1.0, 4.0]]]])
    n1 = torch.tensor([[[[3.0, 2.0]]], [[[0.0, 0.0]]]])
    n2 = torch.tensor([[[[1.0, 0.0]]], [[[2.0, 5.0]]]])
    # per-sample mean |a-p|: (0.25, 0.5); per-sample mean sum_j |a-n_j|: ((2+0)/2+(0+2)/2, (0+4)/2+(2+1)/2) = (2, 3.5)
    batch_value = 0.375 / (2.75 + 1e-7)
    sample_value = (0.25 / 2 + 0.5 / 3.5) / 2
    loss = dcl_loss([a], [p], [[n1], [n2]], [0.5], "batch")
    assert loss.item() == pytest.approx(0.5 * batch_value, rel=1e-6)
    assert dcl_loss([a], [p], [[n1], [n2]], [0.5], "sample").item() == pytest.approx(0.5 * sample_value, rel=1e-6)
    # five levels with the paper's weights
    levels = [torch.rand(2, 3, 4, 4) for _ in range(5)]
    pos = [torch.rand(2, 3, 4, 4) for _ in range(5)]
    negs = [[torch.rand(2, 3, 4, 4) for _ in range(5)] for _ in range(5)]
    w = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    # the released form: mean over (B,C,H,W) of the sum over negatives
    want = sum(wi * float(np.abs(levels[i].numpy() - pos[i].numpy()).mean())
               / (float(np.abs(levels[i].numpy()[None] - np.stack([negs[j][i].numpy() for j in range(5)])).sum(0).mean()) + 1e-7)
               for i, wi in enumerate(w))
    assert dcl_loss(levels, pos, negs, w).item() == pytest.approx(want, rel=1e-5)


def test_accumulated_negative_distance_has_the_autograd_gradient():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 5, 5, requires_grad=True)
    negs = [torch.randn(3, 4, 5, 5) for _ in range(4)]
    pos = torch.randn(3, 4, 5, 5)
    for reduction in ("batch", "sample"):
        acc = NegativeDistance(a)
        for n in negs:
            acc.add(n)
        d_pos = (a - pos).abs().flatten(1).mean(1)
        mine = contrastive_ratio(d_pos, acc.result(), reduction)
        (g_mine,) = torch.autograd.grad(mine, a)
        d_neg = (a.unsqueeze(0) - torch.stack(negs)).abs().sum(0).flatten(1).mean(1)
        ref = contrastive_ratio((a - pos).abs().flatten(1).mean(1), d_neg, reduction)
        (g_ref,) = torch.autograd.grad(ref, a)
        torch.testing.assert_close(mine, ref)
        torch.testing.assert_close(g_mine, g_ref)


def test_codebook_cross_entropy_paper_and_code_variants():
    s = torch.tensor([[0.0, -1.0, -4.0], [-2.0, 0.0, -2.0]])  # -||z - e||^2 of two latent pixels
    t = torch.tensor([[-1.0, 0.0, -9.0], [-0.5, -0.5, 0.0]])

    def softmax(v):
        v = np.asarray(v, dtype=np.float64)
        e = np.exp(v - v.max())
        return e / e.sum()

    paper = np.mean([-(softmax(t[m]) * np.log(softmax(s[m]))).sum() for m in range(2)])
    code = np.mean([-(softmax(t[m]) * np.log(softmax(softmax(s[m])))).sum() for m in range(2)])
    assert code_ce(s, t, "paper").item() == pytest.approx(paper, rel=1e-6)
    assert code_ce(s, t, "code").item() == pytest.approx(code, rel=1e-6)
    # the released variant is nearly flat in the student's logits: log softmax of probabilities
    sg = s.clone().requires_grad_(True)
    (gp,) = torch.autograd.grad(code_ce(sg, t, "paper"), sg)
    (gc,) = torch.autograd.grad(code_ce(sg, t, "code"), sg)
    assert float(gc.abs().max()) < 0.5 * float(gp.abs().max())
    # same distribution: the paper CE equals the teacher's entropy, its minimum
    ent = np.mean([-(softmax(t[m]) * np.log(softmax(t[m]))).sum() for m in range(2)])
    assert code_ce(t, t).item() == pytest.approx(ent, rel=1e-6)


# ----------------------------------------------------------------------------- the method


def test_method_terms_and_gradients_reach_the_student_only():
    d = make({"lcr": True})
    lr, hr = batch()
    terms = d(lr, hr)
    assert set(terms) == {"rec", "kd", "lcr", "dcl", "ce"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in terms.values())
    sum(terms.values()).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in d.student.parameters() if p.requires_grad)
    for frozen in (d.teacher, d.history, d.vqgan):
        assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    # each VQGAN term alone sends a gradient to the student
    for name in ("dcl", "ce"):
        d.student.zero_grad(set_to_none=True)
        d(lr, hr)[name].backward()
        assert sum(float(p.grad.abs().sum()) for p in d.student.parameters() if p.grad is not None) > 0
    assert set(d.frozen_modules()) == {"teacher", "history", "vqgan"}
    assert set(d.trainable_modules()) == {"student"}


def test_weights_switch_terms_off_and_dcl_value_matches_the_reference():
    d = make({"lambda_dcl": 0, "lambda_ce": 0})
    assert d.vqgan is None and d.history is None
    assert set(d(*batch())) == {"rec", "kd"}
    d = make({"lambda_ce": 0})
    assert set(d(*batch())) == {"rec", "kd", "dcl"}
    # the streamed value equals the reference formula on the same negatives
    d = make({"lambda_ce": 0, "lambda_dcl": 1.0})
    with torch.no_grad():
        for p in d.history.parameters():
            p.add_(0.01)  # a history that differs from the student
    lr, hr = batch()
    d.seed = 21
    d._gen = None
    value = d(lr, hr)["dcl"].item()
    s_sr, t_sr = d.student(lr), d.teacher(lr)
    inputs = negative_inputs(lr, 5, True, d.degradation, torch.Generator().manual_seed(21))
    with torch.no_grad():
        negs = [d.vqgan.features(d.history(x)) for x in inputs]
        want = dcl_loss(d.vqgan.features(s_sr), d.vqgan.features(t_sr), negs, d.level_weights).item()
    assert value == pytest.approx(want, rel=1e-5)
    # passes of one group at a time (vq_chunk = batch) give the same value
    d.params = d.params.replace("vq_chunk", lr.shape[0])
    d._gen = None
    assert d(lr, hr)["dcl"].item() == pytest.approx(value, rel=1e-5)


def test_lcr_is_the_reverted_teacher_on_augmented_inputs():
    from srkd.distill.upcycle import augment, draw_augmentations, revert

    d = make({"lcr": True, "lambda_dcl": 0, "lambda_ce": 0, "lcr_prob": 0.5})
    lr, hr = batch(b=6)
    d.seed = 4
    d._gen = None
    got = d(lr, hr)["lcr"].item()
    draws = draw_augmentations(6, 0.5, None, torch.Generator().manual_seed(4))
    target = revert(d.teacher(augment(lr, draws)), draws)
    want = (d.student(lr) - target).abs().mean().item()
    assert got == pytest.approx(want, rel=1e-5)
    with pytest.raises(SrkdError, match="square patches"):
        d(torch.rand(2, 3, 12, 10), torch.rand(2, 3, 24, 20))
    # the teacher is equivariant to flips/transposes only approximately, so the term is not just kd
    assert got != pytest.approx(d(lr, hr)["kd"].item(), rel=1e-3)


def test_upcycling_composes_with_dckd():
    d = make({"upcycle": True, "label_consistency": True, "lambda_ce": 0})
    terms = d(*batch(size=12))
    assert {"rec", "kd", "dcl", "zoom_in", "zoom_out_rec", "zoom_out_kd"} <= set(terms)


def test_saved_state_restores_history_and_random_stream():
    d = make()
    engine_stub(d, 100)
    lr, hr = batch()
    d(lr, hr)
    with torch.no_grad():
        for p in d.history.parameters():
            p.mul_(0.5)
    d.history_updates = 3
    state = d.extra_state()
    after = d(lr, hr)["dcl"].item()  # consumes random numbers after the save
    e = make(seed=0)
    engine_stub(e, 100)
    e.load_extra_state(state)
    assert e.history_updates == 3
    assert all(torch.equal(a, b) for a, b in zip(e.history.state_dict().values(), d.history.state_dict().values()))
    assert e(lr, hr)["dcl"].item() == pytest.approx(after, rel=1e-6)
    with pytest.raises(SrkdError, match="history"):
        make().load_extra_state({"history_updates": 1})


def test_bad_options_are_one_line_errors():
    for params, pattern in [
        ({"dcl_weights": "1,2,3"}, "dcl_weights needs 5 values"),
        ({"dcl_weights": "1,2,x,4,5"}, "comma-separated list of numbers"),
        ({"history_bounds": "0.9,0.2"}, "increasing"),
        ({"history_steps": "1000,2000"}, "history_bounds needs 1 values"),
        ({"noise_sigma_min": 40}, "below noise_sigma_min"),
        ({"ce_variant": "released"}, "choose one of paper, code"),
        ({"vqgan": "/nonexistent/vqgan.ckpt"}, "not found"),
    ]:
        with pytest.raises(SrkdError, match=pattern) as err:
            make(params)
        assert "\n" not in str(err.value)
