"""CSD: the contrastive ratio loss, negatives, VGG weights and joint training of both widths."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from srkd.distill import build_distiller, get_method
from srkd.distill.csd import CSD, bicubic_up, contrastive_loss, negative_plan
from srkd.distill.vgg import VGG19Features, load_vgg19, prepare_input
from srkd.errors import SrkdError
from srkd.models import build_from_spec

SPEC = "edsr:n_feats=16,n_resblocks=2,scale=2"


def _t(values):
    return torch.tensor(values, dtype=torch.float32).view(len(values), 1, 1, -1)


def test_loss_value_by_hand_shared_negatives():
    # one anchor, one layer of two numbers; two negatives
    fs, ft = _t([[1.0, 3.0]]), _t([[2.0, 3.0]])
    fn = _t([[0.0, 3.0], [1.0, 1.0]])
    # d_pos = (|1-2| + |3-3|) / 2 = 0.5; d_neg = (1 + 0)/2 + (0 + 2)/2 = 1.5
    got = contrastive_loss([fs], [ft], [fn], torch.tensor([0, 1]), weights=(0.25,))
    assert got.item() == pytest.approx(0.25 * 0.5 / (1.5 + 1e-7), rel=1e-6)


def test_loss_value_by_hand_per_anchor_negatives_and_layers():
    # two anchors; anchor 0's negative is row 1 and anchor 1's is row 0 (the "others" plan, K=1)
    fs = _t([[1.0, 1.0], [4.0, 0.0]])
    ft = _t([[1.0, 2.0], [4.0, 2.0]])
    fn = _t([[0.0, 0.0], [2.0, 2.0]])
    index, k = negative_plan(2, 5, "others")
    assert k == 1 and index.tolist() == [[1], [0]]
    # layer 1: d_pos = mean(|0|,|1|,|0|,|2|) = 0.75
    #          d_neg = mean(|1-2|,|1-2|,|4-0|,|0-0|) = 1.5
    # layer 2 = layer 1 doubled: the ratio is scale-invariant, so also 0.5
    got = contrastive_loss([fs, 2 * fs], [ft, 2 * ft], [fn, 2 * fn], index, weights=(1 / 32, 1.0))
    assert got.item() == pytest.approx((1 / 32 + 1.0) * 0.75 / 1.5, rel=1e-6)


def test_negatives_exclude_or_include_the_anchor():
    index, k = negative_plan(6, 10, "others")
    assert k == 5 and index.shape == (6, 5)
    for i, row in enumerate(index.tolist()):
        assert i not in row and len(set(row)) == 5
    torch.manual_seed(0)
    shared, k = negative_plan(6, 10, "official")
    assert k == 6 and sorted(shared.tolist()) == list(range(6))  # every anchor's own image is a negative
    shared, k = negative_plan(16, 10, "official")
    assert k == 10 and len(set(shared.tolist())) == 10
    with pytest.raises(SrkdError, match="at least 2"):
        negative_plan(1, 10, "others")


def test_teacher_and_negatives_are_detached():
    fs = torch.rand(2, 3, 4, 4, requires_grad=True)
    ft = torch.rand(2, 3, 4, 4, requires_grad=True)
    fn = torch.rand(2, 3, 4, 4, requires_grad=True)
    contrastive_loss([fs], [ft], [fn], negative_plan(2, 1, "others")[0], weights=(1.0,)).backward()
    assert fs.grad.abs().sum() > 0 and ft.grad is None and fn.grad is None


def _csd(**params):
    torch.manual_seed(0)
    teacher = build_from_spec(SPEC)
    student = build_from_spec(SPEC)
    return CSD(student, teacher, {"vgg_weights": "random", "width": 0.5, "neg_num": 3, **params}), teacher


def test_csd_starts_from_the_teacher_and_shares_weights():
    method, teacher = _csd()
    assert method.teacher is None  # the width-1 branch is the student network itself
    for (k, a), b in zip(method.student.state_dict().items(), teacher.state_dict().values()):
        assert torch.equal(a, b), k
    names = set(method.trainable_modules())
    assert names == {"student"} and set(method.frozen_modules()) == {"vgg"}
    assert all(not p.requires_grad for p in method.vgg.parameters())


def test_gradient_flows_through_both_widths():
    method, _ = _csd()
    lr, hr = torch.rand(4, 3, 12, 12), torch.rand(4, 3, 24, 24)
    terms = method(lr, hr)
    assert set(terms) == {"rec", "teacher", "contrast"}
    head = method.student.head[0].weight  # 16 output channels, the student keeps 8

    def grad_of(term):
        method.student.zero_grad(set_to_none=True)
        terms[term].backward(retain_graph=True)
        g = head.grad.abs().sum((1, 2, 3))
        return g[:8].sum().item(), g[8:].sum().item()

    kept, dropped = grad_of("rec")
    assert kept > 0 and dropped == 0  # student branch: only the shared slice
    kept, dropped = grad_of("contrast")
    assert kept > 0 and dropped == 0  # teacher side detached: nothing reaches the other channels
    kept, dropped = grad_of("teacher")
    assert kept > 0 and dropped > 0  # full-width branch: every channel


def test_contrast_weight_and_official_negatives():
    method, _ = _csd(negatives="official", vgg_input="imagenet")
    lr, hr = torch.rand(4, 3, 12, 12), torch.rand(4, 3, 24, 24)
    terms = method(lr, hr)
    ratio = method.log_values()["contrast_ratio"]
    assert terms["contrast"].item() == pytest.approx(200 / 255 * ratio, rel=1e-5)
    assert method.log_values()["negatives"] == 3
    off, _ = _csd(lambda_cl=0)
    assert off.vgg is None and set(off(lr, hr)) == {"rec", "teacher"}


def test_csd_refuses_a_different_student_and_bad_widths():
    teacher = build_from_spec(SPEC)
    with pytest.raises(SrkdError, match="omit --student"):
        CSD(build_from_spec("edsr:n_feats=8,n_resblocks=2,scale=2"), teacher, {"vgg_weights": "random"})
    with pytest.raises(SrkdError, match="width"):
        build_distiller("csd", build_from_spec(SPEC), teacher, {"width": "0", "vgg_weights": "random"})
    with pytest.raises(SrkdError, match="width"):
        build_distiller("csd", build_from_spec(SPEC), teacher, {"width": "1.5", "vgg_weights": "random"})
    carn_m = build_from_spec("carn-m:n_feats=32,group=4,scale=2")
    with pytest.raises(SrkdError, match="multiple of 4"):
        CSD(build_from_spec("carn-m:n_feats=32,group=4,scale=2"), carn_m, {"width": 0.3, "vgg_weights": "random"})
    assert get_method("csd") is CSD


def test_vgg_weights_missing_offline_is_one_clear_line(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1 and an empty HF cache
    with pytest.raises(SrkdError) as err:
        load_vgg19("hub")
    msg = str(err.value)
    assert "--vgg-weights" in msg and "vgg_weights=random" in msg and "\n" not in msg
    with pytest.raises(SrkdError, match="not found"):
        load_vgg19(tmp_path / "missing.safetensors")
    with pytest.raises(SrkdError):
        build_distiller("csd", build_from_spec(SPEC), build_from_spec(SPEC), {})


def test_vgg_weights_from_a_timm_style_file(tmp_path):
    ref = load_vgg19("random", seed=3)
    # timm layout: features.N.* plus the classifier head, which is ignored
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    state["pre_logits.fc1.weight"] = torch.zeros(2, 2)
    state["features.30.weight"] = torch.zeros(1)  # beyond relu5_1: ignored
    path = tmp_path / "vgg19.safetensors"
    save_file(state, str(path))
    net = load_vgg19(path)
    x = torch.rand(1, 3, 32, 32)
    for a, b in zip(net(prepare_input(x, "imagenet")), ref(prepare_input(x, "imagenet"))):
        assert torch.equal(a, b)
    assert [f.shape[1] for f in net(x)] == [64, 128, 256, 512, 512]
    bad = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(bad))
    with pytest.raises(SrkdError, match="not a VGG-19"):
        load_vgg19(bad)


def test_vgg_layout_matches_torchvision_indices():
    net = VGG19Features()
    convs = [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d)]
    # torchvision vgg19.features conv indices up to conv5_1
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28]
    assert prepare_input(torch.ones(1, 3, 1, 1), "raw255").max().item() == 255


def test_bicubic_negatives_have_the_hr_size():
    lr = torch.rand(2, 3, 5, 7)
    assert bicubic_up(lr, 3).shape == (2, 3, 15, 21)


# ----------------------------------------------------------------------------- end to end


def _small_teacher(tmp_path):
    from srkd.io.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path / "teacher.safetensors"
    save_model(build_from_spec("edsr:n_feats=16,n_resblocks=2,scale=2"), path)
    return path


def test_distill_csd_end_to_end_exports_a_plain_student(tmp_path):
    import json

    from conftest import run_cli

    from srkd.io.checkpoint import load_model_file
    from srkd.compress.slim import slim_forward

    teacher = _small_teacher(tmp_path)
    out = tmp_path / "run"
    # real images: the bundled T91 subset (the default --data)
    code, _, stderr = run_cli("distill", "--method", "csd", "--teacher", str(teacher), "--steps", "2", "--batch", "3",
                              "--patch", "12", "--val", "set5", "--ema", "0", "--threads", "1", "--out", str(out),
                              "--vgg-weights", "random", "--set", "width=0.5", "--set", "neg_num=2", "--quiet")
    assert code == 0, stderr
    student = load_model_file(out / "model.safetensors")
    assert student.model.arch == "edsr" and student.model.n_feats == 8
    shared = load_model_file(out / "model_shared.safetensors")
    assert shared.model.n_feats == 16 and shared.provenance["slim_width"] == 0.5
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert (student.model(x) - slim_forward(shared.model, x, 0.5)).abs().max().item() < 1e-5
        original = load_model_file(teacher).model
        assert (shared.model(x) - original(x)).abs().max().item() > 0  # the teacher branch was trained too
    # validation scored the student, which is what was exported
    summary = json.loads((out / "summary.json").read_text())
    code, stdout, stderr = run_cli("eval", str(out / "model.safetensors"), "--dataset", "set5", "--json",
                                   str(tmp_path / "eval.json"))
    assert code == 0, stderr
    scored = json.loads((tmp_path / "eval.json").read_text())["results"][0]["psnr"]
    assert scored == pytest.approx(summary["val"]["set5"]["psnr"], abs=1e-6)
    # the shared model remembers its width for srkd compress
    code, _, stderr = run_cli("compress", str(out / "model_shared.safetensors"), "-o", str(tmp_path / "again.safetensors"),
                              "--no-eval", "--repeats", "0")
    assert code == 0, stderr
    assert load_model_file(tmp_path / "again.safetensors").model.n_feats == 8


def test_distill_init_teacher_slice(tmp_path):
    from conftest import run_cli

    from srkd.io.checkpoint import load_model_file
    from srkd.compress.slim import slim_forward

    teacher = _small_teacher(tmp_path)
    out = tmp_path / "run"
    code, _, stderr = run_cli("distill", "--method", "scratch", "--teacher", str(teacher), "--student",
                              "edsr:n_feats=4,n_resblocks=2,res_scale=1", "--init", "teacher-slice", "--steps", "1", "--batch", "2",
                              "--patch", "12", "--val", "none", "--ema", "0", "--lr", "1e-12", "--threads", "1",
                              "--out", str(out), "--quiet")
    assert code == 0, stderr
    student = load_model_file(out / "model.safetensors").model
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():  # lr 1e-12 (Adam moves each weight by ~lr): still the teacher's 0.25 slice
        assert (student(x) - slim_forward(load_model_file(teacher).model, x, 0.25)).abs().max().item() < 1e-5
    code, _, stderr = run_cli("distill", "--method", "scratch", "--teacher", str(teacher), "--student",
                              "edsr:n_feats=4,n_resblocks=1,res_scale=1", "--init", "teacher-slice", "--steps", "1",
                              "--out", str(tmp_path / "bad"), "--quiet")
    assert code == 2 and "teacher-slice" in stderr and len(stderr.strip().splitlines()) == 1


def test_distill_csd_without_vgg_weights_is_one_line(tmp_path):
    from conftest import run_cli

    teacher = _small_teacher(tmp_path)
    code, _, stderr = run_cli("distill", "--method", "csd", "--teacher", str(teacher), "--steps", "1",
                              "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2
    assert "--vgg-weights" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("vgg_precision, deep_dtype", [("amp", torch.bfloat16), ("fp32", torch.float32)])
def test_vgg_reads_the_image_in_fp32_under_bf16(vgg_precision, deep_dtype):
    """Under bf16 autocast the VGG's image-reading conv runs in fp32 (the guard DCKD's VQGAN has);
    vgg_precision=fp32 runs the whole VGG in fp32; the gradient still reaches the student."""
    method, _ = _csd(vgg_precision=vgg_precision)
    seen = {}
    first, deep = method.vgg.features[0], method.vgg.features[2]
    first.register_forward_hook(lambda m, i, o: seen.setdefault("first", []).append((i[0].dtype, o.dtype)))
    deep.register_forward_hook(lambda m, i, o: seen.setdefault("deep", []).append(o.dtype))
    lr, hr = torch.rand(4, 3, 12, 12), torch.rand(4, 3, 24, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = method(lr, hr)
    assert len(seen["first"]) == 3  # teacher output, negatives, student output
    assert all(o == torch.float32 for _, o in seen["first"])  # computed in fp32 whatever the input's dtype
    assert all(d == deep_dtype for d in seen["deep"])
    terms["contrast"].float().backward()
    assert method.student.head[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.vgg.parameters())  # the frozen encoder gets nothing
    assert "forward" not in first.__dict__  # the patch is undone after the step
