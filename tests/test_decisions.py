"""The Upscaler's verified decisions are cached per weights, srkd, torch and device, and revalidated."""

from __future__ import annotations

import json

import torch

import srkd.provenance as provenance
from srkd import decisions
from srkd.infer import Upscaler
from srkd.io.hub import load_model


def _counting(monkeypatch):
    calls = {"precision": 0, "verify": 0}
    real_check, real_rewrite = Upscaler.check_precision, Upscaler._rewrite

    def check(self, *a, **k):
        calls["precision"] += 1
        return real_check(self, *a, **k)

    def rewrite(self, net, verify=True):
        calls["verify"] += int(verify)
        return real_rewrite(self, net, verify)

    monkeypatch.setattr(Upscaler, "check_precision", check)
    monkeypatch.setattr(Upscaler, "_rewrite", rewrite)
    return calls


def test_second_upscaler_reuses_the_verified_decisions(monkeypatch):
    calls = _counting(monkeypatch)
    model = load_model(None).model
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    a = Upscaler(model, device="cpu")
    assert calls == {"precision": 1, "verify": 1} and decisions.cache_path().is_file()
    b = Upscaler(model, device="cpu")
    assert calls == {"precision": 1, "verify": 1}  # nothing checked again
    assert (a.precision, a.rewrites) == (b.precision, b.rewrites)
    assert torch.equal(a.process(x), b.process(x))

    # a change of any key part revalidates: the weights ...
    changed = load_model(None).model
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    Upscaler(changed, device="cpu")
    assert calls == {"precision": 2, "verify": 2}
    # ... and srkd's version
    monkeypatch.setattr(provenance, "srkd_version", lambda: "99.0")
    Upscaler(model, device="cpu")
    assert calls == {"precision": 3, "verify": 3}
    assert len(json.loads(decisions.cache_path().read_text())) == 3


def test_a_cached_refusal_is_kept_and_a_damaged_cache_is_ignored(monkeypatch):
    model = load_model(None).model
    monkeypatch.setattr(Upscaler, "check_precision", lambda self, *a, **k: (False, "test: too far from fp32"))
    first = Upscaler(model, device="cpu")
    assert first.precision == "fp32"
    calls = _counting(monkeypatch)  # the real check again, counted: it must not run
    second = Upscaler(model, device="cpu")
    assert second.precision == "fp32" and calls["precision"] == 0
    assert any("too far from fp32" in n for n in second.notes)
    decisions.cache_path().write_text("{not json")
    third = Upscaler(model, device="cpu")
    assert calls["precision"] == 1 and third.precision in ("bf16", "fp16", "fp32")


def test_cache_can_be_turned_off(monkeypatch):
    calls = _counting(monkeypatch)
    model = load_model(None).model
    Upscaler(model, device="cpu", cache=False)
    Upscaler(model, device="cpu", cache=False)
    assert calls["precision"] == 2 and not decisions.cache_path().exists()
