"""``srkd data download`` / ``srkd data list`` over a loopback HTTP server (never the real network)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import data_path, run_cli
from srkd.data import benchmarks, download


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback server for files under ``root``, set as SRKD_DATA_MIRROR; downloads allowed."""
    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SRKD_DATA_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SRKD_OFFLINE", raising=False)
    yield root
    server.shutdown()
    server.server_close()


def _fake_source(root, n=3):
    """A small pinned table served by the mirror: owner/repo@c0ffee, imgs/img_<i>.png."""
    rng = np.random.default_rng(0)
    files = {}
    for i in range(n):
        path = root / "owner" / "repo" / "c0ffee" / "imgs" / f"img_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        files[f"HR/img_{i}.png"] = [f"imgs/img_{i}.png", hashlib.sha256(path.read_bytes()).hexdigest()]
    return {"set14": {"folder": "Set14", "repo": "owner/repo", "commit": "c0ffee", "files": files}}


@pytest.mark.data
def test_set5_download_with_the_real_table_reproduces_the_reference_files(mirror, tmp_path):
    src = download.sources()["set5"]
    shared = data_path("benchmarks", "Set5")
    for rel, (path, _) in src["files"].items():
        target = mirror / src["repo"] / src["commit"] / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared / rel, target)
    code, out, err = run_cli("data", "download", "set5", "--data-root", str(tmp_path / "data"))
    assert code == 0, err
    assert "set5: 20 downloaded, 0 already present" in out
    got = tmp_path / "data" / "benchmarks" / "Set5"
    for rel in src["files"]:
        assert (got / rel).read_bytes() == (shared / rel).read_bytes(), rel
    bench = benchmarks.open_benchmark("set5", 3, tmp_path / "data")
    assert bench.lr_dir == got / "LR_bicubic" / "X3" and len(bench) == 5


def test_download_skips_verified_files_and_keeps_nothing_on_mismatch(mirror, tmp_path, monkeypatch):
    table = _fake_source(mirror)
    monkeypatch.setattr(download, "sources", lambda: table)
    root = tmp_path / "data"
    code, out, err = run_cli("data", "download", "set14", "--data-root", str(root))
    assert code == 0, err
    assert "set14: 3 downloaded, 0 already present" in out
    assert len(benchmarks.open_benchmark("set14", 2, root)) == 3
    # A damaged local file is fetched again; intact ones are not.
    hr = root / "benchmarks" / "Set14" / "HR"
    (hr / "img_1.png").write_bytes(b"damaged")
    code, out, _ = run_cli("data", "download", "set14", "--data-root", str(root))
    assert code == 0 and "1 downloaded, 2 already present" in out
    # The server's file does not match the pinned hash: one-line error, nothing left behind.
    table["set14"]["files"]["HR/img_9.png"] = ["imgs/img_0.png", "0" * 64]
    code, _, err = run_cli("data", "download", "set14", "--data-root", str(root))
    assert code == 2 and "does not match the pinned" in err and err.count("\n") == 1
    assert sorted(p.name for p in hr.iterdir()) == ["img_0.png", "img_1.png", "img_2.png"]  # no temp files either


def test_missing_file_offline_and_unreachable_are_one_line(mirror, tmp_path, monkeypatch):
    table = _fake_source(mirror, n=1)
    table["set14"]["files"]["HR/gone.png"] = ["imgs/gone.png", "1" * 64]
    monkeypatch.setattr(download, "sources", lambda: table)
    root = str(tmp_path / "data")
    code, _, err = run_cli("data", "download", "set14", "--data-root", root)
    assert code == 2 and "HTTP 404" in err and err.count("\n") == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("SRKD_DATA_MIRROR", f"http://127.0.0.1:{closed}")
    code, _, err = run_cli("data", "download", "set14", "--data-root", root)
    assert code == 2 and f"cannot reach 127.0.0.1:{closed}" in err and err.count("\n") == 1
    monkeypatch.setenv("SRKD_OFFLINE", "1")
    code, _, err = run_cli("data", "download", "set14", "--data-root", root)
    assert code == 2 and "downloads are disabled" in err


def test_manual_sets_and_unknown_names(tmp_path):
    for name, where in (("manga109", "benchmarks/Manga109/HR"), ("div2k-val", "DIV2K")):
        code, _, err = run_cli("data", "download", name, "--data-root", str(tmp_path))
        assert code == 2 and "manually" in err and where in err
    code, _, err = run_cli("data", "download", "set14", "set6", "--data-root", str(tmp_path))
    assert code == 2 and "unknown dataset 'set6'" in err
    assert not (tmp_path / "benchmarks").exists()  # nothing fetched before the bad name was caught
    # Through a real process as well: one line on stderr, no traceback.
    proc = subprocess.run([sys.executable, "-m", "srkd", "data", "download", "set6"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_pinned_table_matches_the_shared_checksums():
    sums = {}
    for line in data_path("SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        sums[path.removeprefix("./")] = digest
    table = download.sources()
    assert sorted(table) == ["b100", "set14", "set5", "urban100"]
    counts = {key: len(src["files"]) for key, src in table.items()}
    assert counts == {"b100": 100, "set14": 14, "set5": 20, "urban100": 100}
    for src in table.values():
        for rel, (path, digest) in src["files"].items():
            assert sums[f"benchmarks/{src['folder']}/{rel}"] == digest, rel
            assert path.rsplit("/", 1)[1] == rel.rsplit("/", 1)[1]


def test_data_list_shows_what_is_found(tmp_path):
    hr = tmp_path / "benchmark" / "Set14" / "HR"
    hr.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(hr / f"{i}.png")
    code, out, err = run_cli("data", "list", "--data-root", str(tmp_path))
    assert code == 0, err
    # piped: full plain rows (srkd.cli.output), one dataset per line
    lines = {line.split()[0]: line + " " for line in out.splitlines() if line.strip()}
    assert "yes" in lines["set14"] and " 2 " in lines["set14"]
    assert " no " in lines["set5"] and "manual" in lines["manga109"]
    assert "srkd data download set5 b100 urban100" in out
