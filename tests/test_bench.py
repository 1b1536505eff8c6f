"""srkd bench: protocol validation, the grid end to end (skip, kill and resume), aggregation by hand,
--print-commands + --collect, the paired-seed guarantee and the HTML report in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import run_cli
from srkd.bench import aggregate, load_protocol
from srkd.bench.runner import last_step
from srkd.io.checkpoint import save_model
from srkd.models import build_from_spec
from srkd.train import config as C

REPO = Path(__file__).resolve().parents[1]
T91 = REPO / "srkd" / "assets" / "train" / "T91"  # 12 real training images shipped with srkd
STUDENT = "edsr:n_resblocks=1,n_feats=8"
STEPS = 24


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_model(build_from_spec("edsr:n_resblocks=2,n_feats=16,scale=4"), path)
    return path


def write_protocol(path: Path, teacher: Path, entries=None, **over) -> Path:
    doc = {
        "name": "tiny",
        "teacher": str(teacher),
        "student": STUDENT,
        "config": {
            "data": {"sources": [str(T91)], "patch": 24, "batch": 4},
            "train": {"steps": STEPS, "precision": "fp32", "ema": 0.9},
            "val": {"sets": ["set5"], "every": 12},
            "run": {"ckpt_every": 4, "keep": 2, "tensorboard": False},
        },
        "seeds": [0, 1],
        "entries": entries or [{"label": "scratch", "method": "scratch"}, {"label": "kd", "method": "kd"},
                               {"label": "dckd", "method": "dckd", "requires": "vqgan"}],
    }
    for k, v in over.items():
        doc[k] = v
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def bench(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srkd", "bench", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=kw.get("timeout", 300))


def scores(results: dict) -> dict:
    """What must not depend on timing, paths or interruptions."""
    return {e["label"]: {"n": e["n"], "sets": e["sets"], "gain": e["gain"], "seeds": e["seeds"], "not_run": e["not_run"],
                         "curves": [r["curve"] for r in e["runs"]]} for e in results["entries"]}


def _children_of(out: Path) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(out) in cmd and "distill" in cmd:
                pids.append(int(p.name))
    return pids


# --------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("case, needle", [
    ("method", "unknown distillation method 'kdd'"),
    ("value", "lambda_kd"),
    ("teacher", "teacher"),
    ("set", "set6"),
    ("key", "unknown key 'seedz'"),
])
def test_protocol_errors_are_one_line_before_any_run(case, needle, teacher, tmp_path):
    entries = [{"label": "scratch", "method": "scratch"}, {"label": "kd", "method": "kd"}]
    over = {}
    if case == "method":
        entries[1]["method"] = "kdd"
    elif case == "value":
        entries[1]["set"] = {"lambda_kd": "lots"}
    elif case == "teacher":
        teacher = tmp_path / "missing.safetensors"
    elif case == "key":
        over["seedz"] = [0]
    proto = write_protocol(tmp_path / "p.yaml", teacher, entries, **over)
    if case == "set":
        doc = yaml.safe_load(proto.read_text())
        doc["config"]["val"]["sets"] = ["set6"]
        proto.write_text(yaml.safe_dump(doc))
    out = tmp_path / "bench"
    code, _, err = run_cli("bench", str(proto), "--out", str(out))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srkd: error:") and needle in lines[0], err
    assert "Traceback" not in err
    assert not any(out.glob("*/seed*")), "a run started before the protocol was validated"


def test_protocol_hash_ignores_seeds_and_entries_and_expands_env(teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_DATA", str(T91))
    a = write_protocol(tmp_path / "a.yaml", teacher)
    doc = yaml.safe_load(a.read_text())
    doc["config"]["data"]["sources"] = ["$TINY_DATA"]
    a.write_text(yaml.safe_dump(doc))
    b = tmp_path / "b.yaml"
    doc["seeds"] = [0, 1, 2]
    doc["entries"] = doc["entries"][:1]
    b.write_text(yaml.safe_dump(doc))
    pa, pb = load_protocol(a), load_protocol(b)
    assert pa.hash == pb.hash
    run = pa.runs(tmp_path / "out")[0]
    argv = run.argv()
    assert argv[argv.index("--data") + 1] == str(T91)
    assert run.out == tmp_path / "out" / "scratch" / "seed0"
    assert [r.key for r in pa.runs(tmp_path, only=["kd"], seeds=[1])] == ["kd/seed1"]
    monkeypatch.delenv("TINY_DATA")
    with pytest.raises(Exception, match="TINY_DATA"):
        pa.runs(tmp_path)[0].argv()


# ------------------------------------------------------------------------- the grid end to end


@pytest.fixture(scope="module")
def uninterrupted(teacher, tmp_path_factory) -> tuple[Path, dict, Path]:
    root = tmp_path_factory.mktemp("bench")
    proto = write_protocol(root / "tiny.yaml", teacher)
    out = root / "a"
    r = bench(proto, "--out", out, "--no-report", "--quiet")
    assert r.returncode == 0, r.stderr
    return proto, json.loads((out / "results.json").read_text()), out


@pytest.mark.slow
def test_grid_runs_then_skips_then_resumes_after_sigkill(uninterrupted, tmp_path):
    proto, want, out_a = uninterrupted
    assert [e["n"] for e in want["entries"]] == [2, 2, 0]
    assert want["entries"][2]["not_run"] == "not run: needs VQGAN weights"
    for e in want["entries"][:2]:
        assert e["sets"]["set5"]["psnr_mean"] > 10 and len(e["runs"]) == 2
    # a second invocation skips all 4 runs and leaves them as they were
    before = {p: p.stat().st_mtime_ns for p in out_a.glob("*/seed*/model.safetensors")}
    again = bench(proto, "--out", out_a, "--no-report")
    assert again.returncode == 0, again.stderr
    assert "4 of 4 runs already finished" in again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in out_a.glob("*/seed*/model.safetensors")} == before

    # SIGKILL the bench during its third run (scratch/seed1: the grid runs seed by seed), then rerun
    out_b = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "srkd", "bench", str(proto), "--out", str(out_b), "--no-report", "-q"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    third = out_b / "scratch" / "seed1"
    deadline = time.time() + 240
    while last_step(third / "metrics.jsonl") < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while _children_of(out_b) and time.time() < deadline:  # the training child dies with its parent
        time.sleep(0.05)
    assert not _children_of(out_b), "the killed bench left a training process behind"
    killed_at = last_step(third / "metrics.jsonl")
    assert 6 <= killed_at < STEPS and not (third / "summary.json").exists(), "run 3 was not killed mid-way"
    assert (out_b / "kd" / "seed0" / "summary.json").exists()
    resumed = bench(proto, "--out", out_b, "--no-report", "-q")
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads((out_b / "results.json").read_text())
    assert scores(got) == scores(want)
    assert got["protocol"]["hash"] == want["protocol"]["hash"]


@pytest.mark.slow
def test_printed_commands_run_by_hand_collect_to_the_same_table(uninterrupted, tmp_path):
    proto, want, _ = uninterrupted
    out = tmp_path / "hand"
    r = bench(proto, "--out", out, "--print-commands")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == 4 and all(x.startswith("srkd distill ") and x.endswith("--quiet") for x in lines)
    for line in lines:
        argv = shlex.split(line)
        done = subprocess.run([sys.executable, "-m", "srkd", *argv[1:]], env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
    collected = tmp_path / "collected"
    c = bench("--collect", out, "--out", collected, "--no-report", "-q")
    assert c.returncode == 0, c.stderr
    got = json.loads((collected / "results.json").read_text())
    # the hand-made folders name their entries and protocol themselves (run.label, run.protocol)
    assert got["protocol"]["hash"] == want["protocol"]["hash"]
    want_scores = {k: v for k, v in scores(want).items() if v["n"]}
    assert scores(got) == want_scores


def test_collect_refuses_mixed_protocols(uninterrupted, tmp_path):
    _, _, out_a = uninterrupted
    mixed = tmp_path / "mixed"
    shutil.copytree(out_a / "scratch", mixed / "scratch")
    cfg = mixed / "scratch" / "seed0" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("protocol: ", "protocol: ffff"))
    code, _, err = run_cli("bench", "--collect", str(mixed), "--out", str(tmp_path / "o"), "--no-report", "-q")
    assert code == 2 and "different protocols" in err


# ---------------------------------------------------------------------------- aggregation by hand


def _fake_run(root: Path, label: str, seed: int, set5: float, urban: float, curve: list[tuple[int, float]]) -> Path:
    folder = root / label / f"seed{seed}"
    folder.mkdir(parents=True)
    cfg = C.TrainConfig()
    cfg.model.arch, cfg.train.seed, cfg.train.steps = STUDENT, seed, 100
    cfg.method.name = "kd" if label != "scratch" else "scratch"
    cfg.run.label, cfg.run.protocol, cfg.run.out = label, "abc123", str(folder)
    (folder / "config.yaml").write_text(cfg.to_yaml())
    val = {"set5": {"psnr": set5, "ssim": set5 / 100}, "urban100": {"psnr": urban, "ssim": urban / 100}}
    (folder / "summary.json").write_text(json.dumps({"step": 100, "steps": 100, "seconds": 50.0 + seed,
                                                     "steps_per_second": 2.0, "val": val, "device": "cpu"}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"kind": "val", "step": s, "set5_psnr": v}) + "\n"
                                                  for s, v in curve))
    torch.manual_seed(0)
    save_model(build_from_spec(STUDENT + ",scale=4"), folder / "model.safetensors", provenance={"srkd_version": "t"})
    return folder


def test_aggregation_matches_hand_computed_statistics(tmp_path):
    s5 = {"scratch": [30.0, 30.2, 29.9], "kd": [30.1, 30.25, 30.1]}
    u = {"scratch": [25.0, 25.1, 25.3], "kd": [24.9, 25.15, 25.2]}
    for label in s5:
        for seed in range(3):
            _fake_run(tmp_path, label, seed, s5[label][seed], u[label][seed], [(50, 29.0 + seed), (100, s5[label][seed])])
    res = aggregate.collect([tmp_path])
    ent = {e["label"]: e for e in res["entries"]}
    sc, kd = ent["scratch"], ent["kd"]
    # scratch Set5: mean 30.0333; deviations -0.0333, 0.1667, -0.1333; sd = sqrt(0.046667 / 2) = 0.152753
    assert sc["sets"]["set5"]["psnr_mean"] == pytest.approx(30.033333, abs=1e-6)
    assert sc["sets"]["set5"]["psnr_std"] == pytest.approx(0.152753, abs=1e-6)
    # kd - scratch on Set5 per seed: 0.10, 0.05, 0.20 -> mean 0.116667, sd sqrt(0.011667 / 2) = 0.076376
    g = kd["gain"]["set5"]
    assert g["psnr"] == pytest.approx([0.1, 0.05, 0.2], abs=1e-9)
    assert g["psnr_mean"] == pytest.approx(0.116667, abs=1e-6)
    assert g["psnr_std"] == pytest.approx(0.076376, abs=1e-6)
    assert g["exceeds_spread"] is True
    # Urban100: -0.10, +0.05, -0.10 -> mean -0.05, sd 0.086603: no gain
    gu = kd["gain"]["urban100"]
    assert gu["psnr_mean"] == pytest.approx(-0.05, abs=1e-9) and gu["psnr_std"] == pytest.approx(0.0866025, abs=1e-6)
    assert gu["exceeds_spread"] is False
    assert kd["gain"]["set5"]["ssim_mean"] == pytest.approx(0.00116667, abs=1e-8)
    assert sc["seconds_per_step"] == 0.5 and sc["wall_seconds"] == pytest.approx(51.0)
    assert sc["params"] == sum(p.numel() for n, p in build_from_spec(STUDENT + ",scale=4").named_parameters()
                               if not n.startswith(("sub_mean", "add_mean")))
    assert res["sets"] == ["set5", "urban100"]
    md = aggregate.markdown(res)
    assert "| kd | 3 | **30.15 ± 0.09** / **0.3015 ± 0.0009**" in md  # best Set5 in bold, ± with 3 seeds
    assert "**+0.117 ± 0.076**" in md and "-0.050 ± 0.087" in md
    # one seed: no "±"
    one = aggregate.aggregate([aggregate.read_run(tmp_path / "kd" / "seed0"), aggregate.read_run(tmp_path / "scratch" / "seed0")])
    assert "±" not in aggregate.paper_table(one)


def _table(res: dict) -> dict:
    """What a results dict says about each entry, without where its runs lie."""
    return {e["label"]: (e["seeds"], e["sets"], e["gain"], e["seconds_per_step"], e["wall_seconds"], e["params"],
                         e["macs"], [(r["seed"], r["val"], r["curve"], r["seconds"]) for r in e["runs"]])
            for e in res["entries"]}


@pytest.mark.parametrize("old_format", [False, True])
def test_an_earlier_results_json_stands_in_for_lost_run_folders(tmp_path, old_format, monkeypatch):
    runs = tmp_path / "runs"
    s5 = {"scratch": [30.0, 30.2, 29.9], "kd": [30.1, 30.25, 30.1]}
    for label in s5:
        for seed in range(3):
            _fake_run(runs, label, seed, s5[label][seed], 25.0 + seed / 10, [(50, 29.0), (100, s5[label][seed])])
    full = aggregate.collect([runs])
    aggregate.write(full, tmp_path / "before")
    saved = tmp_path / "before" / "results.json"
    if old_format:  # results.json written before each run kept its own scores
        res = json.loads(saved.read_text())
        for e in res["entries"]:
            for r in e["runs"]:
                del r["val"], r["steps"]
        saved.write_text(json.dumps(res))
    # the folders of every kd run and of scratch seed 0 are lost; kd seed 2 is then run again
    shutil.rmtree(runs / "kd")
    shutil.rmtree(runs / "scratch" / "seed0")
    _fake_run(runs, "kd", 2, 30.1, 25.2, [(50, 29.0), (100, 30.1)])
    merged = aggregate.collect([runs, saved])
    assert _table(merged) == _table(full)
    kd = next(e for e in merged["entries"] if e["label"] == "kd")
    assert [bool(r.get("source")) for r in kd["runs"]] == [True, True, False]  # seed 2 comes from its folder
    # a finished folder wins over the results file: kd seed 2 scored again, differently
    (runs / "kd" / "seed2" / "summary.json").write_text(json.dumps(
        {"step": 100, "steps": 100, "seconds": 52.0, "steps_per_second": 2.0, "device": "cpu",
         "val": {"set5": {"psnr": 30.5, "ssim": 0.305}, "urban100": {"psnr": 25.2, "ssim": 0.252}}}))
    again = aggregate.collect([runs, saved])
    g = next(e for e in again["entries"] if e["label"] == "kd")["gain"]["set5"]
    assert g["psnr"] == pytest.approx([0.1, 0.05, 30.5 - 29.9], abs=1e-9)
    # the CLI takes it as another --collect, and a file that is not a results.json is one line
    # (the teacher and bicubic rows are left out: scoring them on Urban100 takes minutes)
    monkeypatch.setattr(aggregate, "add_reference", lambda results, *a, **k: results.setdefault("reference", {}))
    code, out, err = run_cli("bench", "--collect", str(runs), "--collect", str(saved), "--out", str(tmp_path / "o"),
                             "--no-report", "-q")
    assert code == 0, err
    assert _table(json.loads((tmp_path / "o" / "results.json").read_text()))["scratch"] == _table(full)["scratch"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli("bench", "--collect", str(runs), "--collect", str(bad), "--out", str(tmp_path / "o2"), "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not JSON" in err


def test_mean_std_edge_cases():
    assert aggregate.mean_std([]) == (None, None)
    assert aggregate.mean_std([2.0]) == (2.0, None)
    m, s = aggregate.mean_std([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3) and s == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))


# ----------------------------------------------------------------- same seed, same start and data


def test_same_seed_gives_every_method_the_same_initial_student_and_batches(teacher, tmp_path, monkeypatch):
    from srkd.distill.run import prepare
    from srkd.data.patches import Batches
    from srkd.train.engine import train

    seen: dict[str, dict] = {}
    original = Batches.get

    def record(method):
        def get(self, step):
            lr, hr = original(self, step)
            seen[method]["batches"].append(hashlib.sha256(lr.tobytes() + hr.tobytes()).hexdigest())
            return lr, hr
        return get

    for method in ("kd", "dukd"):  # dukd draws crops, flips and label-consistency coins from the global RNG
        seen[method] = {"batches": []}
        opts = dict(data=[T91], steps=4, patch=16, batch=2, seed=3, out=tmp_path / method, val=["none"],
                    precision="fp32", ema=0.0)
        job = prepare(opts, None, None, False, method=method, teacher=str(teacher), student=STUDENT)

        def factory(student, job=job, method=method):
            seen[method]["init"] = {k: v.clone() for k, v in student.state_dict().items()}
            torch.rand(1000)  # a method drawing before the engine's own draws must not matter either
            return job.factory(student)

        monkeypatch.setattr(Batches, "get", record(method))
        train(job.cfg, factory, progress=False)
    a, b = seen["kd"], seen["dukd"]
    assert a["init"].keys() == b["init"].keys()
    assert all(torch.equal(a["init"][k], b["init"][k]) for k in a["init"])
    assert len(a["batches"]) == 4 and a["batches"] == b["batches"]
    # and another seed starts elsewhere
    seen["kd2"] = {"batches": []}
    job = prepare(dict(data=[T91], steps=1, patch=16, batch=2, seed=4, out=tmp_path / "kd2", val=["none"]), None, None,
                  False, method="kd", teacher=str(teacher), student=STUDENT)
    monkeypatch.setattr(Batches, "get", record("kd2"))
    train(job.cfg, lambda s: (seen["kd2"].__setitem__("init", {k: v.clone() for k, v in s.state_dict().items()}),
                              job.factory(s))[1], progress=False)
    assert not all(torch.equal(a["init"][k], seen["kd2"]["init"][k]) for k in a["init"])
    assert seen["kd2"]["batches"][0] != a["batches"][0]


# ------------------------------------------------------------------------------------ the report


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHECK_JS = """
<script>
window.addEventListener('load', function () {
  var rows = document.querySelectorAll('#results tr').length;
  var curve = document.getElementById('curves');
  var crops = Array.from(document.querySelectorAll('img.crop')).filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var r = document.createElement('div');
  r.id = 'check';
  r.textContent = 'rows=' + rows + ';curve=' + (curve && curve.complete ? curve.naturalWidth : 0) + ';crops=' + crops.length;
  document.body.appendChild(r);
});
</script>
"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium(uninterrupted, tmp_path):
    pytest.importorskip("matplotlib", reason="the report's curves need matplotlib (pip install srkd[report])")
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    from conftest import data_path

    data_path("benchmarks", "Urban100")  # the crops come from Urban100
    _, _, out_a = uninterrupted
    out = tmp_path / "report"
    r = bench("--collect", out_a, "--out", out)
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained, offline
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_JS + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    check = dom.stdout.split('id="check">', 1)[1].split("<", 1)[0]
    fields = dict(kv.split("=") for kv in check.split(";"))
    assert int(fields["rows"]) >= 1 + 2 + 3  # header, bicubic + teacher, the 3 entries
    assert int(fields["curve"]) > 300
    assert int(fields["crops"]) >= 5  # HR, bicubic, teacher, scratch, kd for at least one image
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1300,1800", f"--screenshot={shot}", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[0] > 1000 and (img < 128).mean() > 0.005, "the screenshot is blank"
    keep = os.environ.get("SRKD_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_crops_png_places_every_tile_under_its_label():
    """crops.png: a row per image, a column per model, each tile's pixels unchanged at its place."""
    import io

    from PIL import Image

    from srkd.bench.report import LABEL_H, crops_png

    rng = np.random.default_rng(0)
    names = ["HR", "bicubic", "teacher", "a label far too long to fit above one 16-pixel tile (seed 0)"]
    sets = [{"image": f"img_{i}", "window": [0, 0, 4], "tiles": [(n, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
                                                                   for n in names]} for i in range(2)]
    sheet = np.asarray(Image.open(io.BytesIO(crops_png(sets))).convert("RGB"))
    gap = 4
    assert sheet.shape == (2 * (16 + LABEL_H + gap) - gap, 4 * (16 + gap) - gap, 3)
    for row, c in enumerate(sets):
        for col, (_, tile) in enumerate(c["tiles"]):
            top, left = row * (16 + LABEL_H + gap) + LABEL_H, col * (16 + gap)
            assert np.array_equal(sheet[top:top + 16, left:left + 16], tile), (row, col)
        label = sheet[row * (16 + LABEL_H + gap):row * (16 + LABEL_H + gap) + LABEL_H]
        assert (label < 128).any(), "no caption was drawn"
    assert crops_png([]) is None


def test_crop_window_is_where_the_gain_is():
    """The report crops where the teacher's error falls most below bicubic's, not where the HR is
    most detailed (aliased texture that no network recovers)."""
    from srkd.bench.report import CONTEXT, CROP_LR, _pick_window

    scale, h, w = 4, 200, 240
    rng = np.random.default_rng(0)
    hr = np.zeros((h * scale, w * scale, 3), np.uint8)
    hr[:CROP_LR * scale, -CROP_LR * scale:] = rng.integers(0, 256, (CROP_LR * scale, CROP_LR * scale, 3))  # noise, top right
    gain = np.zeros(hr.shape[:2], np.float32)
    y, x = 116, 56  # a window on the coarse grid (CONTEXT + k * CROP_LR / 2)
    gain[y * scale:(y + CROP_LR) * scale, x * scale:(x + CROP_LR) * scale] = 1.0
    assert (y - CONTEXT) % (CROP_LR // 2) == 0 and (x - CONTEXT) % (CROP_LR // 2) == 0
    assert _pick_window(hr, scale, gain) == (y, x)
    dy, dx = _pick_window(hr, scale)  # without a gain map: the most detailed window, the noise
    assert dy < CROP_LR and dx + CROP_LR > w - CROP_LR


def test_jobs_needs_one_gpu_per_run(uninterrupted, tmp_path, monkeypatch):
    import srkd.bench.runner as runner

    proto, _, _ = uninterrupted
    monkeypatch.setattr(runner, "gpu_count", lambda: 0)
    code, _, err = run_cli("bench", str(proto), "--out", str(tmp_path / "j"), "--jobs", "2", "-q", "--no-report")
    assert code == 2 and "--jobs 2 runs one run per GPU and this machine has 0 GPU(s)" in err


def test_jobs_give_each_run_its_own_gpu(uninterrupted, tmp_path, monkeypatch):
    """With N GPUs, N runs go at once, each with its own CUDA_VISIBLE_DEVICES (checked on fake launches)."""
    import srkd.bench.runner as runner

    proto, _, _ = uninterrupted
    p = load_protocol(proto)
    p.teacher_sha256 = "x"
    runs = p.runs(tmp_path / "j")
    monkeypatch.setattr(runner, "gpu_count", lambda: 2)
    launched, live = [], []

    class FakeProc:
        def __init__(self, run):
            self.run, self.t = run, time.time()

        def poll(self):
            if time.time() - self.t < 0.3:
                return None
            # a finished run: what the engine leaves behind
            self.run.out.mkdir(parents=True, exist_ok=True)
            (self.run.out / "summary.json").write_text(json.dumps({"step": 1, "steps": 1}))
            (self.run.out / "model.safetensors").write_bytes(b"x")
            return 0

    def fake_launch(run, out, device):
        launched.append((run.key, device, time.time()))
        return runner._Active(run, FakeProc(run), out / "x.log", time.time(), device)

    monkeypatch.setattr(runner, "_launch", fake_launch)
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.05)
    counts = runner.run_grid(p, tmp_path / "j", runs, jobs=2, progress=False)
    assert counts["run"] == 4
    assert [d for _, d, _ in launched[:2]] == ["0", "1"]  # the first two start at once, one per GPU
    assert launched[1][2] - launched[0][2] < 0.2
    assert {d for _, d, _ in launched} == {"0", "1"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["div2k-edsr-x4", "div2k-rcan-x4", "div2k-csd-edsr-x4"])
def test_paper_scale_protocols_validate(name, tmp_path, monkeypatch):
    """Each shipped paper-scale protocol passes the whole check, with DIV2K replaced by a tiny folder
    and the official teacher (a download) by a random network of the same preset."""
    from conftest import data_path

    from srkd.bench import validate

    root = data_path("benchmarks")
    monkeypatch.setenv("SRKD_DATA", str(root.parent))
    div2k = tmp_path / "DIV2K" / "DIV2K_train_HR"
    div2k.mkdir(parents=True)
    for img in sorted(T91.glob("*.png"))[:2]:
        shutil.copy(img, div2k / img.name)
    monkeypatch.setenv("DIV2K", str(div2k.parent))
    p = load_protocol(REPO / "examples" / "protocols" / f"{name}.yaml")
    assert len(p.seeds) == 3 and any(e.method == "scratch" for e in p.entries)
    teacher = tmp_path / "teacher.safetensors"
    torch.manual_seed(0)
    save_model(build_from_spec(p.teacher), teacher)
    p.teacher = str(teacher)
    validate(p, tmp_path / "out")
    runs = p.runs(tmp_path / "out")
    assert runs and all(r.entry.runnable for r in runs)
    assert {r.entry.method for r in runs} | {e.method for e in p.entries if not e.runnable} == {e.method for e in p.entries}


def test_mini_protocol_is_the_issue_s_setting():
    p = load_protocol(REPO / "examples" / "protocols" / "mini-x4.yaml")
    assert p.teacher == "demo" and p.student == "edsr-baseline:n_feats=32" and p.seeds == [0, 1, 2]
    c = p.config
    assert c["data"]["patch"] == 32 and c["data"]["batch"] == 16 and c["optim"]["lr"] == 2e-4
    assert c["schedule"]["kind"] == "cosine" and c["train"]["ema"] == 0.999 and c["train"]["precision"] == "bf16"
    assert c["val"] == {"sets": ["set5"], "every": 300, "final_sets": ["set14", "b100", "urban100"]}
    labels = {e.method: e for e in p.entries}
    assert set(labels) == {"scratch", "kd", "fitnet", "at", "fakd", "facd", "dukd", "csd", "dckd"}
    # csd's student is the teacher's width-0.5 slice: the same 32-feature EDSR-baseline as the others
    assert labels["csd"].set == {"lambda_cl": 0, "width": 0.5} and "lambda_cl 0" in labels["csd"].label
    assert labels["dckd"].requires == "vqgan" and not labels["dckd"].runnable


def test_slice_methods_must_slice_out_the_protocol_s_student(teacher, tmp_path):
    """csd's student is a slice of the teacher. At a width whose slice is not the protocol's
    student, its row would compare another network (csd's default 0.25 of a 16-feature teacher is
    4 features beside 8): one line, exit 2, naming the width that fits; that width validates."""
    # The fixture teacher is edsr n_resblocks=2, n_feats=16, res_scale 1 (a bare edsr spec at x4
    # starts from the edsr-x4 preset, whose res_scale is 0.1, so the student spells it out).
    student = "edsr:n_resblocks=2,n_feats=8,res_scale=1"
    entries = [{"label": "scratch", "method": "scratch"}, {"label": "csd", "method": "csd", "set": {"lambda_cl": 0}}]
    proto = write_protocol(tmp_path / "p.yaml", teacher, entries, student=student)
    out = tmp_path / "bench"
    code, _, err = run_cli("bench", str(proto), "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "entry 'csd'" in lines[0] and "n_feats=4 (student 8)" in lines[0] and "set width: 0.5" in lines[0], err
    assert not any(out.glob("*/seed*"))
    entries[1]["set"]["width"] = 0.5
    write_protocol(tmp_path / "p.yaml", teacher, entries, student=student)
    from srkd.bench import validate

    validate(load_protocol(tmp_path / "p.yaml"), out)
    # No width fits a student of another depth: the line says so.
    write_protocol(tmp_path / "p.yaml", teacher, entries, student="edsr:n_resblocks=1,n_feats=8,res_scale=1")
    code, _, err = run_cli("bench", str(proto), "--out", str(out))
    assert code == 2 and "n_resblocks=2 (student 1)" in err and "no width of the teacher" in err, err


def test_mini_protocol_validates_with_the_demo_teacher(tmp_path):
    from conftest import data_path

    from srkd.bench import validate

    data_path("train")  # skips with a reason without $SRKD_DATA
    validate(load_protocol(REPO / "examples" / "protocols" / "mini-x4.yaml"), tmp_path / "out")


def test_facd_lambda_sweep_uses_the_mini_setting_on_its_own_seeds(tmp_path):
    """Issue 18's selection: mini-x4's teacher, student, data and engine; seeds apart from the
    reported ones; three lambda_facd values; Set5 only."""
    from srkd.bench import validate

    mini = load_protocol(REPO / "examples" / "protocols" / "mini-x4.yaml")
    sweep = load_protocol(REPO / "examples" / "protocols" / "mini-x4-facd-lambda.yaml")
    assert (sweep.teacher, sweep.student) == (mini.teacher, mini.student)
    for section in ("data", "optim", "schedule", "train"):
        assert sweep.config[section] == mini.config[section], section
    assert not set(sweep.seeds) & set(mini.seeds) and len(sweep.seeds) == 2
    assert sweep.config["val"]["sets"] == ["set5"] and "final_sets" not in sweep.config["val"]
    assert sorted(e.set["lambda_facd"] for e in sweep.entries) == [0.01, 0.03, 0.1]
    assert {e.method for e in sweep.entries} == {"facd"}
    validate(sweep, tmp_path / "out")


def test_markdown_has_paired_gains_only_with_a_scratch_entry():
    import json as _json
    from pathlib import Path as _Path
    from srkd.bench.tables import markdown
    docs = _Path(__file__).resolve().parents[1] / "docs" / "results-kd"
    grid = markdown(_json.loads((docs / "results.json").read_text()))
    assert "Gain over `scratch`" in grid and "| kd | 3 |" in grid
    sweep = markdown(_json.loads((docs / "facd-lambda" / "results.json").read_text()))
    assert "Gain over `scratch`" not in sweep and "no paired gains" in sweep
    assert "facd lambda 0.03" in sweep
