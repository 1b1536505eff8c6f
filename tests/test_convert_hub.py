"""Converters of official weights, model references (path, preset zoo, hf://) and their errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from conftest import data_path, run_cli
from srkd.errors import SrkdError
from srkd.io import zoo
from srkd.io.checkpoint import load_model_file, save_model
from srkd.io.convert import convert_file
from srkd.io.hub import load_model
from srkd.models import build_from_spec, build_model


def _same_output(a, b, scale_a=None):
    x = torch.rand(1, 3, 10, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


@pytest.mark.parametrize("spec", ["edsr:n_resblocks=2,n_feats=8,scale=4", "edsr:n_resblocks=3,n_feats=8,scale=3",
                                  "rcan:n_resgroups=2,n_resblocks=2,n_feats=16,reduction=4,scale=2"])
def test_edsr_pytorch_pt(spec, tmp_path):
    torch.manual_seed(0)
    ref = build_from_spec(spec)
    torch.save(ref.state_dict(), tmp_path / "official.pt")
    model = convert_file(tmp_path / "official.pt", tmp_path / "m.safetensors")
    assert model.arch == ref.arch and model.scale == ref.scale
    assert _same_output(ref, load_model_file(tmp_path / "m.safetensors").model)


def _basicsr_names_edsr(sd, n):
    """Official -> BasicSR names, written from BasicSR's edsr_arch (independent of srkd.io.convert)."""
    out = {}
    for k, v in sd.items():
        if k.startswith(("sub_mean", "add_mean")):
            continue  # BasicSR keeps the mean as a constant tensor attribute
        k = k.replace("head.0.", "conv_first.").replace("tail.1.", "conv_last.").replace("tail.0.", "upsample.")
        k = k.replace(f"body.{n}.", "conv_after_body.").replace(".body.0.", ".conv1.").replace(".body.2.", ".conv2.")
        out[k] = v
    return out


def _basicsr_names_rcan(sd, groups, blocks):
    out = {}
    for k, v in sd.items():
        if k.startswith(("sub_mean", "add_mean")):
            continue
        k = k.replace("head.0.", "conv_first.").replace("tail.1.", "conv_last.").replace("tail.0.", "upsample.")
        if k.startswith(f"body.{groups}."):
            k = k.replace(f"body.{groups}.", "conv_after_body.")
        elif k.startswith("body."):
            parts = k.split(".")  # body.g.body.b.body.i[.conv_du.j].weight
            g, b = parts[1], parts[3]
            if b == str(blocks):
                k = f"body.{g}.conv.{parts[-1]}"
            else:
                rest = ".".join(parts[5:]).replace("3.conv_du.0", "3.attention.1").replace("3.conv_du.2", "3.attention.3")
                k = f"body.{g}.residual_group.{b}.rcab.{rest}"
        out[k] = v
    return out


def test_basicsr_edsr_and_rcan(tmp_path):
    torch.manual_seed(0)
    edsr = build_from_spec("edsr:n_resblocks=3,n_feats=8,scale=4")
    torch.save({"params": _basicsr_names_edsr(edsr.state_dict(), 3), "params_ema": _basicsr_names_edsr(edsr.state_dict(), 3)},
               tmp_path / "EDSR_Mx4.pth")
    assert _same_output(edsr, convert_file(tmp_path / "EDSR_Mx4.pth", tmp_path / "e.safetensors"))
    rcan = build_from_spec("rcan:n_resgroups=2,n_resblocks=3,n_feats=16,reduction=4,scale=2")
    torch.save({"params_ema": _basicsr_names_rcan(rcan.state_dict(), 2, 3)}, tmp_path / "RCAN.pth")
    converted = convert_file(tmp_path / "RCAN.pth", tmp_path / "r.safetensors")
    assert converted.config()["n_resblocks"] == 3 and _same_output(rcan, converted)


def test_official_carn_m_heads(tmp_path):
    src = data_path("weights", "CARN", "carn_m.pth")
    multi = convert_file(src, tmp_path / "all.safetensors")
    assert multi.scales == (2, 3, 4)
    single = convert_file(src, tmp_path / "x2.safetensors", scale=2)
    assert single.scales == (2,) and "upsample.up.body.0.weight" in single.state_dict()
    multi.set_scale(2)
    assert _same_output(multi, load_model_file(tmp_path / "x2.safetensors").model)
    code, out, err = run_cli("convert", str(src), "-o", str(tmp_path / "cli.safetensors"), "--scale", "4")
    assert code == 0 and "carn-m" in out
    code, _, err = run_cli("convert", str(src), "-o", str(tmp_path / "cli.safetensors"))
    assert code == 2 and "--overwrite" in err


def test_res_scale_and_rgb_range_are_inferred_or_set(tmp_path):
    ref = build_from_spec("edsr:n_resblocks=2,n_feats=8,scale=2")
    torch.save(ref.state_dict(), tmp_path / "a.pt")
    model = convert_file(tmp_path / "a.pt", tmp_path / "a.safetensors", res_scale=0.1)
    assert model.res_scale == 0.1 and model.rgb_range == 255.0


def test_convert_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(SrkdError, match="cannot read"):
        convert_file(tmp_path / "junk.pt", tmp_path / "o.safetensors")
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "unknown.pt")
    with pytest.raises(SrkdError, match="cannot recognise the weights.*expected"):
        convert_file(tmp_path / "unknown.pt", tmp_path / "o.safetensors")
    torch.save(build_from_spec("carn-m:n_feats=8,scale=2").state_dict(), tmp_path / "carn.pt")
    with pytest.raises(SrkdError, match="not edsr"):
        convert_file(tmp_path / "carn.pt", tmp_path / "o.safetensors", arch="edsr")
    with pytest.raises(SrkdError, match="x3 is not available"):
        convert_file(tmp_path / "carn.pt", tmp_path / "o.safetensors", scale=3)
    with pytest.raises(SrkdError, match="not found"):
        convert_file(tmp_path / "missing.pt", tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickles_never_execute_code(tmp_path, capsys):
    torch.save({"x": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(SrkdError, match="cannot read"):
        convert_file(tmp_path / "evil.pt", tmp_path / "o.safetensors")
    assert "code ran" not in capsys.readouterr().out


def test_bundled_default_model():
    loaded = load_model()
    assert loaded.model.arch == "carn-m" and loaded.model.scale == 4 and loaded.model.scales == (2, 3, 4)
    assert load_model(None, scale=2).model.scale == 2
    with pytest.raises(SrkdError, match="cannot run at x8"):
        load_model(None, scale=8)


def test_corrupt_and_truncated_files(tmp_path):
    good = save_model(build_from_spec("carn-m:n_feats=8,scale=2"), tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 100)
    for name in ("trunc", "garbage"):
        with pytest.raises(SrkdError, match="corrupt or truncated"):
            load_model(str(tmp_path / f"{name}.safetensors"))
    with pytest.raises(SrkdError, match="x2 model"):
        load_model(str(good), scale=4)
    with pytest.raises(SrkdError, match="not found"):
        load_model(str(tmp_path / "nope.safetensors"))
    with pytest.raises(SrkdError, match="unknown model"):
        load_model("edsr-x5")


def _populate_hf_cache(hf_home: Path, repo: str, filename: str, src: Path, commit: str = "a" * 40) -> None:
    """Lay out a file the way huggingface_hub caches it, so offline resolution finds it."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.write_bytes(src.read_bytes())
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def test_hf_reference_from_prepopulated_cache(tmp_path, monkeypatch):
    hf_home = Path(__import__("os").environ["HF_HOME"])
    model = build_from_spec("carn-m:n_feats=8,scale=2")
    src = save_model(model, tmp_path / "m.safetensors")
    _populate_hf_cache(hf_home, "someone/tiny-sr", "model.safetensors", src)
    _populate_hf_cache(hf_home, "someone/tiny-sr", "sub/x2.safetensors", src)
    assert load_model("hf://someone/tiny-sr").model.config() == model.config()
    assert load_model("hf://someone/tiny-sr/sub/x2.safetensors@main").model.scale == 2
    with pytest.raises(SrkdError, match="not in the Hub cache"):
        load_model("hf://someone/other-repo")
    with pytest.raises(SrkdError, match="bad Hub reference"):
        load_model("hf://just-a-name")
    code, _, err = run_cli("eval", "hf://someone/missing", "--dataset", "set5")
    assert code == 2 and "not in the Hub cache" in err and "Traceback" not in err


@pytest.fixture
def loopback_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_zoo_download_verify_convert(loopback_server, monkeypatch):
    root, base = loopback_server
    torch.manual_seed(0)
    official = build_from_spec("edsr:n_resblocks=2,n_feats=8,scale=2")
    (root / "models").mkdir()
    pt = root / "models" / "tiny_x2-00000000.pt"
    torch.save(official.state_dict(), pt)
    digest = hashlib.sha256(pt.read_bytes()).hexdigest()
    entry = zoo.ZooEntry(pt.name, "https://example.invalid/models/" + pt.name, sha256=digest)
    monkeypatch.setitem(zoo.ZOO, "edsr-baseline-x2", entry)
    monkeypatch.setenv("SRKD_ZOO_MIRROR", base)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    loaded = load_model("edsr-baseline-x2", progress=False)
    assert _same_output(official, loaded.model)
    # The second resolution is served from the cache even when offline.
    monkeypatch.setenv("SRKD_OFFLINE", "1")
    assert load_model("edsr-baseline-x2", progress=False).model.n_feats == 8


def test_zoo_hash_mismatch_and_offline(loopback_server, monkeypatch):
    root, base = loopback_server
    (root / "models").mkdir()
    (root / "models" / "bad.pt").write_bytes(b"tampered")
    monkeypatch.setitem(zoo.ZOO, "edsr-x2", zoo.ZooEntry("bad.pt", "https://example.invalid/models/bad.pt", sha256="0" * 64))
    monkeypatch.setenv("SRKD_ZOO_MIRROR", base)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(SrkdError, match="does not match the published"):
        load_model("edsr-x2", progress=False)
    assert not (zoo.cache_dir() / "zoo" / "bad.pt").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli("eval", "edsr-x2")
    assert code == 2 and "offline" in err and "pass a local path" in err
    code, _, err = run_cli("eval", "rcan-x4")
    assert code == 2 and "srkd convert" in err


def test_zoo_table_is_consistent():
    for name, entry in zoo.ZOO.items():
        assert entry.bundled or entry.url or entry.how_to_get, name
        if entry.hash_prefix:
            assert entry.filename.split("-")[-1].startswith(entry.hash_prefix)
        if entry.sha256 and entry.hash_prefix:  # NTIRE releases publish no name prefix, only the file
            assert entry.sha256.startswith(entry.hash_prefix)
