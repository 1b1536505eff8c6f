"""The bench results as files: the paper-style table, paired gains, costs, Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .protocol import SCRATCH

SET_ORDER = ("set5", "set14", "b100", "urban100", "manga109")
SET_NAMES = {"set5": "Set5", "set14": "Set14", "b100": "B100", "urban100": "Urban100", "manga109": "Manga109"}


def _fmt(mean, std, digits: int, sign: bool = False) -> str:
    if mean is None:
        return "–"
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def _name(s: str) -> str:
    return SET_NAMES.get(s, s)


def paper_table(results: dict) -> str:
    """Rows are entries, columns sets (PSNR / SSIM); the best per column in bold; ± only with seeds > 1."""
    sets = results["sets"]
    best = {}
    for s in sets:
        vals = [(e["sets"][s]["psnr_mean"], e["sets"][s]["ssim_mean"]) for e in results["entries"]
                if e["n"] and e["sets"].get(s, {}).get("psnr_mean") is not None]
        best[s] = (max(v[0] for v in vals), max(v[1] for v in vals)) if vals else (None, None)
    head = "| method | seeds | " + " | ".join(f"{_name(s)} PSNR / SSIM" for s in sets) + " |"
    lines = [head, "|" + "---|" * (len(sets) + 2)]
    for name, ref in (results.get("reference") or {}).items():
        lines.append(f"| {name} | | " + " | ".join(f"{ref[s]['psnr']:.2f} / {ref[s]['ssim']:.4f}" if s in ref else "–"
                                                   for s in sets) + " |")
    for e in results["entries"]:
        if not e["n"]:
            reason = e["not_run"] or "no finished run"
            lines.append(f"| {e['label']} | 0 | " + " | ".join(reason if i == 0 else "" for i in range(len(sets))) + " |")
            continue
        cells = []
        for s in sets:
            st = e["sets"][s]
            if st["psnr_mean"] is None:
                cells.append("–")
                continue
            p = _fmt(st["psnr_mean"], st["psnr_std"], 2)
            q = _fmt(st["ssim_mean"], st["ssim_std"], 4)
            if best[s][0] is not None and round(st["psnr_mean"], 2) == round(best[s][0], 2):
                p = f"**{p}**"
            if best[s][1] is not None and round(st["ssim_mean"], 4) == round(best[s][1], 4):
                q = f"**{q}**"
            cells.append(f"{p} / {q}")
        lines.append(f"| {e['label']} | {e['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gain_table(results: dict) -> str:
    sets = results["sets"]
    lines = ["| method | pairs | " + " | ".join(f"{_name(s)} ΔPSNR (dB)" for s in sets) + " |",
             "|" + "---|" * (len(sets) + 2)]
    for e in results["entries"]:
        if e["label"] == SCRATCH or not e["gain"]:
            continue
        cells = []
        for s in sets:
            g = e["gain"].get(s)
            if not g or g["psnr_mean"] is None:
                cells.append("–")
                continue
            text = _fmt(g["psnr_mean"], g["psnr_std"], 3, sign=True)
            cells.append(f"**{text}**" if g["exceeds_spread"] else text)
        n = max((len(g["psnr"]) for g in e["gain"].values()), default=0)
        lines.append(f"| {e['label']} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost_table(results: dict) -> str:
    lines = ["| method | seconds / step | wall time per run | parameters | multiply-adds (720p) | where |", "|---|---|---|---|---|---|"]
    for e in results["entries"]:
        if not e["n"]:
            continue
        where = sorted({f"{r['device']} ({r['machine']})" if r["machine"] else r["device"] for r in e["runs"]})
        sps = f"{e['seconds_per_step']:.3f}" if e["seconds_per_step"] else "–"
        wall = f"{e['wall_seconds'] / 60:.1f} min" if e["wall_seconds"] else "–"
        params = f"{e['params'] / 1e6:.3f} M" if e["params"] else "–"
        macs = f"{e['macs'] / 1e9:.1f} G" if e["macs"] else "–"
        lines.append(f"| {e['label']} | {sps} | {wall} | {params} | {macs} | {', '.join(where)} |")
    return "\n".join(lines) + "\n"


def markdown(results: dict) -> str:
    p = results["protocol"]
    parts = [f"# srkd bench: {p['name'] or 'collected runs'} (protocol {p['hash'] or 'unknown'})", ""]
    if p.get("description"):
        parts += [p["description"], ""]
    parts += ["Y-PSNR (dB) / SSIM of the EMA student at the last step, mean ± standard deviation over seeds.", "",
              paper_table(results)]
    if any(e["label"] == SCRATCH and e["n"] for e in results["entries"]):
        parts += ["Gain over `scratch`: mean ± standard deviation of the paired per-seed differences; bold where the mean "
                  "exceeds the standard deviation (at least 2 pairs).", "", gain_table(results)]
    else:  # a sweep without a scratch entry: there is nothing to pair with
        parts += ["No `scratch` run among these, so no paired gains.", ""]
    parts += ["Cost (seconds per step as the runs measured them; load on the machine changes them, not the scores):", "",
              cost_table(results)]
    if results["incomplete"]:
        parts += ["Unfinished runs (not in the table): " + ", ".join(
            f"{r['label']} seed {r['seed']} ({r['step']}/{r['steps']})" for r in results["incomplete"]), ""]
    return "\n".join(parts)


def to_csv(results: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["label", "method", "set", "seeds", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "gain_psnr_mean",
                "gain_psnr_std", "gain_ssim_mean", "gain_ssim_std", "gain_exceeds_spread", "seconds_per_step",
                "wall_seconds", "params", "macs", "not_run"])
    for e in results["entries"]:
        for s in results["sets"] or [""]:
            st = e["sets"].get(s, {})
            g = e["gain"].get(s, {})
            w.writerow([e["label"], e["method"], s, e["n"], st.get("psnr_mean"), st.get("psnr_std"), st.get("ssim_mean"),
                        st.get("ssim_std"), g.get("psnr_mean"), g.get("psnr_std"), g.get("ssim_mean"), g.get("ssim_std"),
                        g.get("exceeds_spread"), e["seconds_per_step"], e["wall_seconds"], e["params"], e["macs"],
                        e["not_run"] or ""])
    return buf.getvalue()


def write(results: dict, out: Path) -> list[Path]:
    from ..io.files import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("results.json", json.dumps(results, indent=2, sort_keys=False)), ("results.csv", to_csv(results)),
                       ("results.md", markdown(results))):
        with atomic_path(out / name, overwrite=True) as tmp:
            tmp.write_text(text)
        written.append(out / name)
    return written
