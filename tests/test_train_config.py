"""Training configuration: typed loading, unknown keys, value checks, precedence, schedules."""

from __future__ import annotations

import math

import pytest

from srkd.errors import SrkdError
from srkd.train import config as C
from srkd.train.engine import EMA, build_student, lr_at


def test_defaults_are_the_field_recipe():
    cfg = C.from_dict({})
    assert (cfg.optim.lr, cfg.data.batch, cfg.data.patch, cfg.optim.loss) == (1e-4, 16, 48, "l1")
    assert cfg.optim.betas == [0.9, 0.999] and cfg.schedule.kind == "multistep" and cfg.schedule.gamma == 0.5
    assert cfg.train.ema == 0.999


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(SrkdError) as exc:
        C.from_dict({"optim": {"lrate": 1e-3}})
    msg = str(exc.value)
    assert "optim.lrate" in msg and "did you mean 'lr'" in msg and "betas" in msg
    with pytest.raises(SrkdError, match="unknown config key 'trian'.*did you mean 'train'"):
        C.from_dict({"trian": {}})


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"data": {"batch": 0}}, "data.batch"),
        ({"data": {"patch": "big"}}, "data.patch must be an integer"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"optim": {"loss": "l3"}}, "optim.loss must be one of"),
        ({"schedule": {"kind": "step"}}, "schedule.kind"),
        ({"schedule": {"milestones": [1.5]}}, "fractions"),
        ({"train": {"precision": "int8"}}, "train.precision"),
        ({"train": {"ema": 1.0}}, "train.ema"),
        ({"train": {"steps": 10}, "schedule": {"warmup": 10}}, "warmup"),
        ({"model": {"scale": 5}}, "model.scale"),
        ({"val": {"sets": "set5", "every": 0}}, "val.every"),
        ({"data": "T91"}, "must be a mapping"),
        ({"augment": {}}, "unknown config key"),
        ({"data": {"augment": "maybe"}}, "true or false"),
    ],
)
def test_bad_values(raw, needle):
    with pytest.raises(SrkdError, match=needle):
        C.from_dict(raw)


def test_yaml_and_cli_precedence(tmp_path):
    from srkd.train.config import from_options as build_config

    yml = tmp_path / "c.yaml"
    yml.write_text("data: {batch: 8, patch: 32}\noptim: {lr: 2.0e-4}\nval: {sets: [set5, set14]}\n")
    cfg = build_config({"batch": 4, "val": ["none"]}, yml, ["optim.betas=0.9,0.99"], resume=False)
    assert cfg.data.batch == 4 and cfg.data.patch == 32 and cfg.optim.lr == 2e-4
    assert cfg.optim.betas == [0.9, 0.99] and cfg.val.sets == []
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(SrkdError, match="not valid YAML"):
        build_config({}, bad, None, resume=False)
    with pytest.raises(SrkdError, match="SECTION.KEY=VALUE"):
        build_config({}, None, ["lr=1"], resume=False)


def test_resolved_config_roundtrips_and_differences(tmp_path):
    cfg = C.from_dict({"data": {"sources": [str(tmp_path)]}, "train": {"steps": 100}})
    again = C.from_dict(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg and C.fingerprint(again) == C.fingerprint(cfg)
    other = C.from_dict({"data": {"sources": [str(tmp_path)], "workers": 1}, "train": {"steps": 200}})
    assert C.differences(cfg, other) == ["train.steps: 100 -> 200"]  # workers may change on resume


def test_schedules():
    cfg = C.from_dict({"train": {"steps": 300}})
    assert lr_at(cfg, 1) == 1e-4 and lr_at(cfg, 200) == 1e-4 and lr_at(cfg, 201) == 5e-5 and lr_at(cfg, 300) == 5e-5
    cos = C.from_dict({"train": {"steps": 100}, "schedule": {"kind": "cosine", "warmup": 10}, "optim": {"lr": 1e-3}})
    assert lr_at(cos, 5) == pytest.approx(5e-4) and lr_at(cos, 11) == pytest.approx(1e-3)
    assert lr_at(cos, 100) < 1e-6 and all(lr_at(cos, s) >= lr_at(cos, s + 1) for s in range(10, 100))
    multi = C.from_dict({"train": {"steps": 1000}, "schedule": {"milestones": [0.5, 0.75], "gamma": 0.1}})
    assert math.isclose(lr_at(multi, 1000), 1e-6)


def test_build_student_resolves_family_preset_and_spec():
    assert build_student(C.ModelConfig("edsr-baseline", 2)).config()["n_feats"] == 64
    m = build_student(C.ModelConfig("edsr:n_feats=8,n_resblocks=1", 3))
    assert (m.scale, m.n_feats) == (3, 8)
    with pytest.raises(SrkdError, match="x2 configuration but --scale is 4"):
        build_student(C.ModelConfig("edsr-baseline-x2", 4))
    with pytest.raises(SrkdError, match="unknown model"):
        build_student(C.ModelConfig("edsrr", 4))


def test_ema_tracks_parameters_and_buffers():
    import torch

    net = torch.nn.BatchNorm2d(2)  # has float buffers (running stats) and an int buffer
    ema = EMA(net, 0.9)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(1.0)
        net.num_batches_tracked.fill_(7)
    ema.update(net)
    d = 2 / 11  # the warm-up ramp of the first update
    assert torch.allclose(ema.module.weight, torch.full((2,), 1 + (1 - d) * 2.0))
    assert torch.allclose(ema.module.running_mean, torch.full((2,), 1 - d))
    assert int(ema.module.num_batches_tracked) == 7
