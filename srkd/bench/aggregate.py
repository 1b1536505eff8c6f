"""From run folders to the table: means and spreads over seeds, paired gains over ``scratch``.

A run folder speaks for itself: ``config.yaml`` gives its label (``run.label``), seed, method and
protocol hash; ``summary.json`` its final scores (the EMA model at the last step, on
``val.sets`` + ``val.final_sets``); ``metrics.jsonl`` its validation curve, where it ran and how
long its steps took; ``model.safetensors`` its parameters and provenance. So folders made by
``srkd bench``, by hand from ``--print-commands`` or on other machines aggregate alike.

An earlier ``results.json`` can stand in for run folders that are gone (a scratch disk wiped
between sessions, a cluster's scratch space): it keeps every run's scores, curve, timing and
provenance, so :func:`collect` reads its runs back (:func:`read_results`). A run folder that has
finished wins over the same (label, seed) in a results file.

Statistics, per entry and validation set:

* mean and sample standard deviation (n - 1) of Y-PSNR and SSIM over the entry's seeds;
* the gain over ``scratch``: mean and sample standard deviation of the per-seed differences
  ``entry(seed s) - scratch(seed s)``, over the seeds both have. Same seed means the same initial
  student and the same batches (srkd.train.engine), so the pairing removes the seed-to-seed
  variation both share. A gain *exceeds its spread* when there are at least two pairs and its mean
  is larger than the standard deviation of the differences.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SrkdError
from .protocol import SCRATCH, Protocol
from .runner import read_json, run_state
# the written forms (srkd.bench.tables), re-exported for callers of this module
from .tables import SET_NAMES, SET_ORDER, _fmt, _name, cost_table, gain_table, markdown, paper_table, to_csv, write  # noqa: F401

RESULTS_FORMAT = "srkd-bench-results"


@dataclass
class RunRecord:
    folder: str
    label: str
    method: str
    seed: int
    protocol: str
    done: bool
    step: int
    steps: int
    val: dict = field(default_factory=dict)  # set -> {psnr, ssim}
    curve: list = field(default_factory=list)  # [[step, psnr]] on the first validation set
    curve_set: str = ""
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    device: str = ""
    machine: str = ""
    teacher_sha256: str = ""
    teacher: str = ""
    scale: int = 0
    srkd_version: str = ""
    git_commit: str | None = None
    params: int = 0
    macs: int = 0
    source: str = ""  # the results.json this record was read back from; "" for a run folder


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def exceeds_spread(mean: float | None, sd: float | None, n: int) -> bool:
    """A gain worth reading: at least two pairs, a mean above the spread of the paired differences,
    and at least the 0.001 dB the tables print (identical runs differ by float noise)."""
    return bool(mean is not None and sd is not None and n >= 2 and mean > sd and mean >= 1e-3)


# ---------------------------------------------------------------------------------- reading


def find_runs(paths) -> list[Path]:
    """Run folders (holding config.yaml) at or below each path."""
    found = []
    for p in paths:
        p = Path(p).expanduser()
        if not p.exists():
            raise SrkdError(f"not found: {p}")
        if (p / "config.yaml").is_file():
            found.append(p.resolve())
        else:
            found.extend(sorted(c.parent.resolve() for c in p.rglob("config.yaml") if "checkpoints" not in c.parts))
    seen, unique = set(), []
    for f in found:
        if f not in seen:
            seen.add(f)
            unique.append(f)
    return unique


def read_run(folder: Path) -> RunRecord:
    from ..train import config as C

    folder = Path(folder)
    try:
        cfg = C.from_dict(C.load_yaml(folder / "config.yaml"))
    except SrkdError as exc:
        raise SrkdError(f"{folder}: not a readable srkd run ({exc})") from None
    summary = read_json(folder / "summary.json")
    rec = RunRecord(folder=str(folder), label=cfg.run.label or cfg.method.name, method=cfg.method.name,
                    seed=cfg.train.seed, protocol=cfg.run.protocol, done=False, step=int(summary.get("step", 0)),
                    steps=cfg.train.steps, teacher_sha256=cfg.method.teacher_sha256,
                    teacher=cfg.method.teacher or "", scale=cfg.model.scale)
    rec.done = run_state(folder)[0] == "done"
    rec.val = {k: {"psnr": float(v["psnr"]), "ssim": float(v["ssim"])} for k, v in (summary.get("val") or {}).items()}
    rec.seconds = float(summary.get("seconds") or 0.0)
    sps = float(summary.get("steps_per_second") or 0.0)
    rec.seconds_per_step = 1.0 / sps if sps > 0 else 0.0
    rec.device = str(summary.get("device") or "")
    rec.machine = str(summary.get("machine") or "")
    first = cfg.val.sets[0].lower() if cfg.val.sets else None
    for r in _jsonl(folder / "metrics.jsonl"):
        if r.get("kind") == "start":
            rec.machine = rec.machine or str(r.get("machine") or "")
            rec.device = rec.device or str(r.get("device") or "")
        elif r.get("kind") == "val" and first and f"{first}_psnr" in r:
            rec.curve.append([int(r["step"]), float(r[f"{first}_psnr"])])
    rec.curve_set = first or ""
    if rec.done:
        from ..io.checkpoint import load_model_file

        mf = load_model_file(folder / "model.safetensors")
        prov = mf.provenance
        rec.srkd_version = str(prov.get("srkd_version") or "")
        rec.git_commit = prov.get("git_commit")
        rec.machine = rec.machine or str(prov.get("machine") or "")
        rec.params, rec.macs = _complexity(mf.model)
    return rec


def _complexity(model) -> tuple[int, int]:
    """Parameters, and multiply-adds for a 1280x720 output (the field's convention)."""
    import copy

    from ..complexity import count_macs, count_params

    meta = copy.deepcopy(model).to("meta")
    return count_params(model), count_macs(meta, (720 // model.scale, 1280 // model.scale))


def _jsonl(path: Path):
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(r, dict):
            yield r


# ------------------------------------------------------------------------------ aggregating


def is_results_file(path) -> bool:
    return Path(path).suffix.lower() == ".json"


def load_results(path) -> dict:
    """The results dict an earlier :func:`write` left in ``path`` (a results.json), checked."""
    path = Path(path).expanduser()
    try:
        res = json.loads(path.read_text())
    except OSError as exc:
        raise SrkdError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise SrkdError(f"{path}: not JSON; give a results.json written by srkd bench") from None
    if not isinstance(res, dict) or res.get("format") != RESULTS_FORMAT:
        raise SrkdError(f"{path}: not a srkd bench results file (format {RESULTS_FORMAT!r})")
    return res


def read_results(path) -> list[RunRecord]:
    """The finished runs an earlier :func:`aggregate` wrote to ``path`` (a results.json)."""
    path = Path(path).expanduser()
    res = load_results(path)
    records = []
    for e in res.get("entries", []):
        runs = e.get("runs") or []
        for i, r in enumerate(runs):
            val = r.get("val")
            if val is None:  # written before runs kept their own scores: the entry's lists follow its runs
                val = {}
                for s, v in (e.get("sets") or {}).items():
                    if len(v.get("psnr", [])) != len(runs) or len(v.get("ssim", [])) != len(runs):
                        raise SrkdError(f"{path}: entry '{e.get('label')}' lacks {s} scores for some of its runs; "
                                        "collect its run folders instead")
                    val[s] = {"psnr": v["psnr"][i], "ssim": v["ssim"][i]}
            records.append(RunRecord(
                folder=str(r.get("folder") or ""), label=str(e["label"]), method=str(e.get("method") or ""),
                seed=int(r["seed"]), protocol=str((res.get("protocol") or {}).get("hash") or ""), done=True,
                step=int(r.get("steps") or 0), steps=int(r.get("steps") or 0),
                val={k: {"psnr": float(v["psnr"]), "ssim": float(v["ssim"])} for k, v in val.items()},
                curve=[list(c) for c in r.get("curve") or []], curve_set=str(r.get("curve_set") or ""),
                seconds=float(r.get("seconds") or 0.0), seconds_per_step=float(r.get("seconds_per_step") or 0.0),
                device=str(r.get("device") or ""), machine=str(r.get("machine") or ""),
                teacher_sha256=str(res.get("teacher_sha256") or ""),
                teacher=str((res.get("teacher") or {}).get("path") or ""), scale=int(res.get("scale") or 0),
                srkd_version=str(r.get("srkd_version") or ""), git_commit=r.get("git_commit"),
                params=int(e.get("params") or 0), macs=int(e.get("macs") or 0), source=str(path)))
    return records


def collect(paths, protocol: Protocol | None = None) -> dict:
    """Aggregate every run folder under ``paths``, and the runs of any results.json among them,
    into the results dict (see :func:`write`)."""
    files = [p for p in paths if is_results_file(p)]
    folders = find_runs([p for p in paths if not is_results_file(p)])
    records = [read_run(f) for f in folders]
    have = {(r.label, r.seed) for r in records if r.done}
    for f in files:
        for r in read_results(f):
            if (r.label, r.seed) in have:
                continue
            # a finished run read back replaces an unfinished folder of the same run
            records = [x for x in records if (x.label, x.seed) != (r.label, r.seed)]
            records.append(r)
            have.add((r.label, r.seed))
    if not records:
        raise SrkdError(f"no srkd run folders (with config.yaml) under {', '.join(str(p) for p in paths)}")
    return aggregate(records, protocol)


def aggregate(records: list[RunRecord], protocol: Protocol | None = None) -> dict:
    hashes = sorted({r.protocol for r in records})
    if len(hashes) > 1:
        raise SrkdError(f"these runs come from {len(hashes)} different protocols ({', '.join(h or 'none' for h in hashes)}); "
                        "collect each protocol's runs into its own --out")
    if protocol is not None and hashes and hashes[0] != protocol.hash:
        raise SrkdError(f"the runs under the bench folder belong to protocol {hashes[0]}, not to {protocol.where} "
                        f"({protocol.hash}); use another --out")
    teachers = sorted({r.teacher_sha256 for r in records if r.teacher_sha256})
    if len(teachers) > 1:
        raise SrkdError(f"these runs used {len(teachers)} different teachers; a table must hold one")
    seen = {}
    for r in records:
        key = (r.label, r.seed)
        if key in seen:
            raise SrkdError(f"two runs of '{r.label}' seed {r.seed}: {seen[key]} and {r.folder}; collect one of them")
        seen[key] = r.folder
    done = [r for r in records if r.done]
    sets = sorted({s for r in done for s in r.val}, key=lambda s: (SET_ORDER.index(s) if s in SET_ORDER else 99, s))

    order = [e.label for e in protocol.entries] if protocol is not None else []
    for r in records:
        if r.label not in order:
            order.append(r.label)
    by_label = {label: sorted((r for r in done if r.label == label), key=lambda r: r.seed) for label in order}
    scratch = {r.seed: r for r in by_label.get(SCRATCH, [])}
    entries = []
    for label in order:
        runs = by_label[label]
        pe = next((e for e in protocol.entries if e.label == label), None) if protocol is not None else None
        entry = {"label": label, "id": pe.id if pe else (Path(runs[0].folder).parent.name if runs else label),
                 "method": pe.method if pe else (runs[0].method if runs else ""),
                 "not_run": pe.not_run_reason if pe and not pe.runnable else None,
                 "note": pe.note if pe else "", "seeds": [r.seed for r in runs], "n": len(runs), "sets": {}, "gain": {}}
        for s in sets:
            ps = [r.val[s]["psnr"] for r in runs if s in r.val]
            ss = [r.val[s]["ssim"] for r in runs if s in r.val]
            pm, psd = mean_std(ps)
            sm, ssd = mean_std(ss)
            entry["sets"][s] = {"psnr": ps, "ssim": ss, "psnr_mean": pm, "psnr_std": psd, "ssim_mean": sm, "ssim_std": ssd}
            if scratch and label != SCRATCH:
                pairs = [(r, scratch[r.seed]) for r in runs if r.seed in scratch and s in r.val and s in scratch[r.seed].val]
                dp = [a.val[s]["psnr"] - b.val[s]["psnr"] for a, b in pairs]
                ds = [a.val[s]["ssim"] - b.val[s]["ssim"] for a, b in pairs]
                gm, gsd = mean_std(dp)
                hm, hsd = mean_std(ds)
                entry["gain"][s] = {"seeds": [a.seed for a, _ in pairs], "psnr": dp, "ssim": ds, "psnr_mean": gm,
                                    "psnr_std": gsd, "ssim_mean": hm, "ssim_std": hsd,
                                    "exceeds_spread": exceeds_spread(gm, gsd, len(dp))}
        entry["seconds_per_step"] = mean_std([r.seconds_per_step for r in runs if r.seconds_per_step])[0]
        entry["wall_seconds"] = mean_std([r.seconds for r in runs if r.seconds])[0]
        entry["params"] = runs[0].params if runs else None
        entry["macs"] = runs[0].macs if runs else None
        entry["runs"] = [{"folder": r.folder, "seed": r.seed, "device": r.device, "machine": r.machine,
                          "seconds": r.seconds, "seconds_per_step": r.seconds_per_step, "steps": r.steps,
                          "srkd_version": r.srkd_version, "git_commit": r.git_commit, "val": r.val,
                          "curve_set": r.curve_set, "curve": r.curve, **({"source": r.source} if r.source else {})}
                         for r in runs]
        entries.append(entry)
    spread = {}
    for s in sets:  # the seed spread per set: the mean over entries of their standard deviations
        sds = [e["sets"][s]["psnr_std"] for e in entries if e["sets"].get(s, {}).get("psnr_std") is not None]
        spread[s] = sum(sds) / len(sds) if sds else None
    return {
        "format": RESULTS_FORMAT, "version": 1,
        "protocol": {"hash": hashes[0] if hashes else "", "name": protocol.name if protocol else "",
                     "description": protocol.description if protocol else "",
                     "text": protocol.raw_text if protocol else "", "seeds": protocol.seeds if protocol else
                     sorted({r.seed for r in records})},
        "teacher_sha256": teachers[0] if teachers else "",
        "teacher": {"path": _teacher_path(records, teachers[0] if teachers else ""), "sha256": teachers[0] if teachers else ""},
        "scale": records[0].scale,
        "sets": sets,
        "entries": entries,
        "seed_spread_psnr": spread,
        "incomplete": [{"folder": r.folder, "label": r.label, "seed": r.seed, "step": _progress(r), "steps": r.steps}
                       for r in records if not r.done],
    }


def _teacher_path(records: list[RunRecord], sha256: str) -> str:
    """The teacher file the runs name, if it is here with the recorded hash; else the bundled copy
    when that is the same file (run folders made on another machine)."""
    from ..distill.run import DEMO_TEACHER
    from ..io.hub import model_hash

    for cand in [*(r.teacher for r in records if r.teacher), str(DEMO_TEACHER)]:
        p = Path(cand)
        if p.is_file() and (not sha256 or model_hash(p) == sha256):
            return str(p)
    return ""


def add_reference(results: dict, out: Path, data_root=None, progress=None) -> None:
    """Teacher and bicubic rows on the same sets, cached in ``out/reference.json`` (by teacher hash and sets)."""
    from ..evaluate import evaluate, evaluate_bicubic

    scale, sets = int(results.get("scale") or 4), list(results["sets"])
    teacher = results["teacher"]
    key = {"teacher_sha256": teacher["sha256"], "scale": scale, "sets": sets}
    cache = Path(out) / "reference.json"
    stored = read_json(cache)
    if stored.get("key") == key:
        results["reference"] = stored["rows"]
        return
    if progress is not None:
        progress("scoring the bicubic baseline and the teacher on " + ", ".join(_name(s) for s in sets))
    rows = {"bicubic": {r.dataset.lower(): {"psnr": r.psnr, "ssim": r.ssim} for r in evaluate_bicubic(sets, scale, data_root)}}
    if teacher["path"]:
        rows["teacher"] = {r.dataset.lower(): {"psnr": r.psnr, "ssim": r.ssim}
                           for r in evaluate(teacher["path"], datasets=sets, scale=scale, data_root=data_root,
                                             device="auto", precision="fp32", progress=False)}
    results["reference"] = rows
    from ..io.files import atomic_path

    Path(out).mkdir(parents=True, exist_ok=True)
    with atomic_path(cache, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"key": key, "rows": rows}, indent=2))


def _progress(r: RunRecord) -> int:
    from .runner import last_step

    return r.step or last_step(Path(r.folder) / "metrics.jsonl")

