"""Copy a --collect output into docs/results-kd/ and splice its tables into docs/results-kd.md.

usage: python docs/results-kd/splice.py TABLE_DIR [--crops]   (--crops: also replace crops.png)
Prints each run's wall minutes (from results.json) for the time-per-entry notes.
"""
import json
import math
import re
import shutil
import sys
from pathlib import Path

from srkd.bench import aggregate

src = Path(sys.argv[1])
docs = Path(__file__).resolve().parents[1]  # docs/
res = json.loads((src / "results.json").read_text())
names = ["results.json", "results.md", "results.csv", "curves.png"] + (["crops.png"] if "--crops" in sys.argv else [])
for name in names:
    if (src / name).is_file():
        shutil.copy2(src / name, docs / "results-kd" / name)

SETS = ["set5", "set14", "b100", "urban100"]


def paired(res):
    rows = ["| method | pairs | Set5 | Set14 | B100 | Urban100 |", "|---|---|---|---|---|---|"]
    for e in res["entries"]:
        if e["label"] == "scratch" or not e["runs"]:
            continue
        cells, n = [], 0
        for s in SETS:
            g = e["gain"].get(s)
            if not g or not g["psnr"]:
                cells.append("")
                continue
            n = len(g["psnr"])
            each = ", ".join(f"{d:+.3f}" for d in g["psnr"])
            if n >= 2:
                t = g["psnr_mean"] / (g["psnr_std"] / math.sqrt(n)) if g["psnr_std"] else float("inf")
                ms = f"{g['psnr_mean']:+.3f} ± {g['psnr_std']:.3f}"
                ms = f"**{ms}**" if g["exceeds_spread"] else ms
                each += f" ({ms}; t {t:.1f})"
            cells.append(each)
        label = e["label"].split(" (")[0]
        rows.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def splice(text, tag, body):
    pat = re.compile(rf"(<!-- bench:{tag} -->\n)(?:.*?\n)?(<!-- /bench:{tag} -->)", re.S)
    assert pat.search(text), tag
    return pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def versus_slice(res):
    """csd minus `scratch from the teacher slice`, per seed both have."""
    ent = {e["label"]: e for e in res["entries"]}
    csd = next(e for e in res["entries"] if e["label"].startswith("csd"))
    ctl = ent["scratch from the teacher slice"]
    rows = ["| pair | seeds | Set5 | Set14 | B100 | Urban100 |", "|---|---|---|---|---|---|"]
    common = [x for x in csd["seeds"] if x in ctl["seeds"]]
    cells = []
    for s in SETS:
        d = [csd["sets"][s]["psnr"][csd["seeds"].index(x)] - ctl["sets"][s]["psnr"][ctl["seeds"].index(x)] for x in common]
        m, sd = aggregate.mean_std(d)
        each = ", ".join(f"{v:+.3f}" for v in d)
        cells.append(each + (f" ({m:+.3f} ± {sd:.3f})" if sd is not None else ""))
    rows.append(f"| csd (λ_cl 0) − scratch from the teacher slice | {', '.join(map(str, common))} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


md = docs / "results-kd.md"
text = md.read_text()
text = splice(text, "main", aggregate.paper_table(res).strip())
text = splice(text, "paired", paired(res))
text = splice(text, "slice", versus_slice(res))
md.write_text(text)
for e in res["entries"]:
    for r in e["runs"]:
        print(f"{e['label'][:30]:30s} seed {r['seed']}  {r['seconds'] / 60:6.1f} min  {r['seconds_per_step']:.3f} s/step  {r['machine']}  {'(from results.json)' if r.get('source') else ''}")
