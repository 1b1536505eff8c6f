"""``srkd push`` against a loopback Hub, and the round trip through hf://."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import run_cli
from hub_server import FakeHub

from srkd.io.checkpoint import load_model_file, save_model
from srkd.io.hub import load_model
from srkd.models import build_from_spec


def _model(tmp_path) -> Path:
    torch.manual_seed(0)
    prov = {"method": {"name": "fakd"}, "teacher": {"ref": "demo", "sha256": "ab" * 32}, "data": ["T91"], "steps": 2000,
            "metrics": {"Set5": {"psnr": 29.37, "ssim": 0.832}}}
    return save_model(build_from_spec("span:n_feats=8,scale=2"), tmp_path / "span.safetensors", provenance=prov)


def test_push_uploads_the_three_files_and_they_load_back(tmp_path, monkeypatch):
    src = _model(tmp_path)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_TOKEN", "hf_test")
        import huggingface_hub.constants as c

        monkeypatch.setattr(c, "ENDPOINT", hub.url)
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
        code, out, err = run_cli("push", str(src), "user/span-x2", "--private", "--revision", "v1", "--dataset", "T91")
        assert code == 0, err
        repo = hub.repos["user/span-x2"]
    assert repo["private"] is True and sorted(repo["branches"]["v1"]) == ["README.md", "config.json", "model.safetensors"]
    files = repo["branches"]["v1"]
    assert files["model.safetensors"] == src.read_bytes()
    config = json.loads(files["config.json"])
    assert config["arch"] == "span" and config["scale"] == 2 and config["config"]["n_feats"] == 8
    card = files["README.md"].decode()
    header = card.split("---")[1]
    for line in ("library_name: srkd", "- super-resolution", "- knowledge-distillation", "pipeline_tag: image-to-image",
                 "license: apache-2.0", "- T91"):
        assert line in header, line
    assert "| method | fakd |" in card and "sha256 abababab" in card and "| Set5 | 29.37 | 0.8320 |" in card
    assert "hf://user/span-x2" in card
    # round trip: the pushed model.safetensors, laid out as the Hub cache does, loads with hf://
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)  # back offline, as the other hub tests run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = Path(c.HF_HUB_CACHE) / "models--user--span-x2"  # huggingface_hub fixes its cache at import
    (root / "snapshots" / ("b" * 40)).mkdir(parents=True, exist_ok=True)
    (root / "snapshots" / ("b" * 40) / "model.safetensors").write_bytes(files["model.safetensors"])
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text("b" * 40)
    loaded = load_model("hf://user/span-x2")
    x = torch.rand(1, 3, 10, 9)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), load_model_file(src).model.eval()(x))


def test_dry_run_writes_the_folder_and_uploads_nothing(tmp_path):
    src = _model(tmp_path)
    out = tmp_path / "repo"
    code, stdout, err = run_cli("push", str(src), "user/span-x2", "--dry-run", str(out))
    assert code == 0, err and "nothing uploaded" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    code, _, err = run_cli("push", str(src), "user/span-x2", "--dry-run", str(out))
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("push", str(src), "not a repo id", "--dry-run", str(tmp_path / "r2"))
    assert code == 2 and "expected owner/name" in err


def test_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    src = _model(tmp_path)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    code, _, err = run_cli("push", str(src), "user/span-x2")
    assert code == 2 and "srkd: error:" in err and len(err.strip().splitlines()) == 1
