"""``report.html``: one self-contained page (images inlined) that shows what a bench found.

It holds the table and the paired gains, validation curves (PSNR against step per entry, from
each run's metrics.jsonl), the same crop of a few Urban100 images as HR, bicubic, teacher and
every entry's student, and the protocol. Curves need matplotlib (``pip install srkd[report]``);
without it the page says so and keeps the rest. The curves and the crops are also written as
``curves.png`` and ``crops.png`` for pages that link pictures (docs, a README).
"""

from __future__ import annotations

import base64
import copy
import html
import io
from pathlib import Path

import numpy as np

from .protocol import SCRATCH
from .tables import SET_NAMES, _fmt

CROP_IMAGES = ("img_004", "img_012", "img_024", "img_092")  # Urban100: facades, grids and text
CROP_LR = 40  # LR side of each crop (the HR crop is CROP_LR x scale)
CONTEXT = 16  # LR pixels of context around a crop fed to the network, cut off afterwards


def _png(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def curves_png(results: dict) -> bytes | None:
    """PSNR against step, one colour per entry: the mean over seeds, each seed thin."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110)
    cmap = plt.get_cmap("tab10")
    drawn = 0
    for i, e in enumerate(x for x in results["entries"] if x["n"]):
        colour = cmap(i % 10)
        by_step: dict[int, list[float]] = {}
        for r in e["runs"]:
            if not r["curve"]:
                continue
            steps, vals = zip(*r["curve"])
            ax.plot(steps, vals, color=colour, alpha=0.25, linewidth=0.8)
            for s, v in r["curve"]:
                by_step.setdefault(s, []).append(v)
        if by_step:
            xs = sorted(by_step)
            ax.plot(xs, [sum(by_step[x]) / len(by_step[x]) for x in xs], color=colour, linewidth=2,
                    label=f"{e['label']} (n={e['n']})", linestyle="--" if e["label"] == SCRATCH else "-")
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    curve_set = next((r["curve_set"] for e in results["entries"] for r in e["runs"] if r["curve_set"]), "")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{SET_NAMES.get(curve_set, curve_set)} Y-PSNR (dB), EMA model")
    ax.grid(alpha=0.3)
    lows = [v for e in results["entries"] for r in e["runs"] for _, v in r["curve"][len(r["curve"]) // 3:]]
    if lows:  # the early steps sit dB below the rest; start the axis where the curves are readable
        ax.set_ylim(min(lows) - 0.1, max(lows) + 0.05)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _models(results: dict) -> list[tuple[str, object]]:
    """(column name, model or 'bicubic') for the crops: bicubic, the teacher, each entry's lowest seed
    whose model file is here."""
    from ..io.checkpoint import load_model_file

    cols: list[tuple[str, object]] = [("bicubic", "bicubic")]
    teacher = (results.get("teacher") or {}).get("path")
    if teacher and Path(teacher).is_file():
        cols.append(("teacher", load_model_file(teacher).model.eval()))
    for e in results["entries"]:
        # runs read back from an earlier results.json may have no folder here any more
        files = ((r["seed"], Path(r["folder"]) / "model.safetensors") for r in sorted(e["runs"], key=lambda r: r["seed"]))
        seed, path = next(((s, f) for s, f in files if f.is_file()), (None, None))
        if path is not None:
            cols.append((f"{e['label']} (seed {seed})", load_model_file(path).model.eval()))
    return cols


def _pick_window(hr: np.ndarray, scale: int, gain: np.ndarray | None = None) -> tuple[int, int]:
    """Top-left LR corner of the CROP_LR window, on a coarse grid (deterministic), where ``gain``
    (per HR pixel) sums highest; without it, the most detailed window.

    The crops are there to show what the networks recover, so the report passes the teacher's
    error reduction over bicubic as ``gain``. The most detailed window alone tends to be texture
    finer than the LR grid (Urban100's perforated sheets), where every network and bicubic show
    the same aliased pattern and the HR tile looks like another picture.
    """
    if gain is None:
        g = hr.astype(np.float32).mean(axis=2)
        gain = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    best, where = -np.inf, (0, 0)
    step = CROP_LR // 2
    for y in range(CONTEXT, max(CONTEXT + 1, h - CROP_LR - CONTEXT), step):
        for x in range(CONTEXT, max(CONTEXT + 1, w - CROP_LR - CONTEXT), step):
            v = float(gain[y * scale:(y + CROP_LR) * scale, x * scale:(x + CROP_LR) * scale].mean())
            if v > best:
                best, where = v, (y, x)
    return where


def _sr(model, lr: np.ndarray) -> np.ndarray:
    import torch

    from ..metrics import quantize

    with torch.no_grad():
        t = torch.from_numpy(lr.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).div(255)
        return quantize(model(t)[0])


def crops(results: dict, data_root=None, names=CROP_IMAGES) -> list[dict]:
    """For a few Urban100 images: the HR crop and every model's output of the same window."""
    from ..errors import SrkdError
    from ..evaluate import bicubic_upscale, open_dataset

    scale = int(results.get("scale") or 4)
    try:
        bench = open_dataset("urban100", scale, data_root)
    except SrkdError:
        return []
    chosen = [p for p in bench.hr_files if p.stem in names] or bench.hr_files[:3]
    sub = copy.copy(bench)
    sub.hr_files = chosen
    models = _models(results)
    out = []
    teacher = dict(models).get("teacher")
    for sample in sub:
        gain = None
        if teacher is not None:  # where the teacher's error is lowest against bicubic's
            hr = sample.hr.astype(np.float32)
            gain = (np.abs(hr - bicubic_upscale(sample.lr, scale)) - np.abs(hr - _sr(teacher, sample.lr))).mean(axis=2)
        y, x = _pick_window(sample.hr, scale, gain)
        y0, x0 = max(0, y - CONTEXT), max(0, x - CONTEXT)
        lr = sample.lr[y0:y + CROP_LR + CONTEXT, x0:x + CROP_LR + CONTEXT]
        oy, ox = (y - y0) * scale, (x - x0) * scale
        side = CROP_LR * scale
        tiles = [("HR", sample.hr[y * scale:y * scale + side, x * scale:x * scale + side])]
        for name, model in models:
            sr = bicubic_upscale(lr, scale) if isinstance(model, str) else _sr(model, lr)
            tiles.append((name, sr[oy:oy + side, ox:ox + side]))
        out.append({"image": sample.name, "window": [y, x, CROP_LR], "tiles": tiles})
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right} th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} td.best{font-weight:bold} td.gain{color:#0a6e2a;font-weight:bold} td.na{color:#888;font-style:italic}
figure{display:inline-block;margin:4px;text-align:center;font-size:11px} figure img{image-rendering:pixelated;width:160px;height:160px;border:1px solid #bbb}
.crops{white-space:nowrap;overflow-x:auto} /* one row per image, so tiles line up for comparison */
pre{background:#f7f7f7;padding:10px;font-size:12px;overflow:auto} .note{color:#555;font-size:13px}
"""


LABEL_H = 18  # pixels of caption above each tile in crops.png


def crops_png(crop_sets: list[dict]) -> bytes | None:
    """The crops as one PNG for pages that cannot inline HTML (a README, docs): a row per image, a
    column per model, each tile at its HR size with its column's name above it."""
    from PIL import Image, ImageDraw

    if not crop_sets:
        return None
    side = max(img.shape[0] for c in crop_sets for _, img in c["tiles"])
    cols = max(len(c["tiles"]) for c in crop_sets)
    gap = 4
    sheet = Image.new("RGB", (cols * (side + gap) - gap, len(crop_sets) * (side + LABEL_H + gap) - gap), "white")
    draw = ImageDraw.Draw(sheet)
    for row, c in enumerate(crop_sets):
        top = row * (side + LABEL_H + gap)
        for col, (name, img) in enumerate(c["tiles"]):
            left = col * (side + gap)
            text = name if col else f"{c['image']}: HR"
            if draw.textlength(text) > side:  # long labels are cut to the tile's width
                while text and draw.textlength(text + "…") > side:
                    text = text[:-1]
                text = text.rstrip() + "…"
            draw.text((left + 2, top + 3), text, fill="black")
            sheet.paste(Image.fromarray(np.ascontiguousarray(img)), (left, top + LABEL_H))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _table_html(results: dict) -> str:
    sets = results["sets"]
    best = {}
    for s in sets:
        vals = [e["sets"][s]["psnr_mean"] for e in results["entries"] if e["n"] and e["sets"][s]["psnr_mean"] is not None]
        best[s] = round(max(vals), 2) if vals else None
    rows = ["<tr><th>method</th><th>seeds</th>" + "".join(f"<th>{SET_NAMES.get(s, s)}<br>PSNR / SSIM</th><th>Δ PSNR vs scratch</th>" for s in sets) + "</tr>"]
    for name, ref in (results.get("reference") or {}).items():
        rows.append(f"<tr><td>{html.escape(name)}</td><td></td>" + "".join(
            f"<td>{ref[s]['psnr']:.2f} / {ref[s]['ssim']:.4f}</td><td></td>" if s in ref else "<td>–</td><td></td>" for s in sets) + "</tr>")
    for e in results["entries"]:
        label = html.escape(e["label"])
        if not e["n"]:
            rows.append(f"<tr><td>{label}</td><td>0</td><td class='na' colspan='{2 * len(sets)}'>{html.escape(e['not_run'] or 'no finished run')}</td></tr>")
            continue
        cells = []
        for s in sets:
            st = e["sets"][s]
            cls = " class='best'" if best[s] is not None and st["psnr_mean"] is not None and round(st["psnr_mean"], 2) == best[s] else ""
            cells.append(f"<td{cls}>{_fmt(st['psnr_mean'], st['psnr_std'], 2)} / {_fmt(st['ssim_mean'], st['ssim_std'], 4)}</td>")
            g = e["gain"].get(s)
            if g and g["psnr_mean"] is not None:
                cells.append(f"<td{' class=gain' if g['exceeds_spread'] else ''}>{_fmt(g['psnr_mean'], g['psnr_std'], 3, sign=True)}</td>")
            else:
                cells.append("<td></td>")
        rows.append(f"<tr><td>{label}</td><td>{e['n']}</td>{''.join(cells)}</tr>")
    return "<table id='results'>" + "".join(rows) + "</table>"


def render(results: dict, curves: bytes | None, crop_sets: list[dict]) -> str:
    p = results["protocol"]
    title = f"srkd bench: {p['name'] or 'collected runs'}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)} <span class='note'>(protocol {html.escape(p['hash'] or 'unknown')})</span></h1>"]
    if p.get("description"):
        parts.append(f"<p>{html.escape(p['description'])}</p>")
    parts += ["<h2>Results</h2>",
              "<p class='note'>Y-PSNR (dB) / SSIM of the EMA student at the last step, mean ± standard deviation over "
              "seeds. Δ: mean ± standard deviation of the paired per-seed differences to scratch; green where the "
              "mean exceeds the standard deviation. Bold: best per set.</p>", _table_html(results)]
    if results.get("incomplete"):
        parts.append("<p class='note'>Unfinished runs, not in the table: " + html.escape(", ".join(
            f"{r['label']} seed {r['seed']} ({r['step']}/{r['steps']})" for r in results["incomplete"])) + "</p>")
    parts.append("<h2>Validation curves</h2>")
    if curves:
        parts.append(f"<img id='curves' alt='validation curves' src='data:image/png;base64,{base64.b64encode(curves).decode()}'>")
    else:
        parts.append("<p class='note'>No curves: they need matplotlib (pip install srkd[report]) and runs with validation records.</p>")
    parts.append("<h2>Crops (Urban100)</h2>")
    if not crop_sets:
        parts.append("<p class='note'>No crops: Urban100 was not found (set SRKD_DATA).</p>")
    for c in crop_sets:
        y, x, side = c["window"]
        parts.append(f"<h3>{html.escape(c['image'])} <span class='note'>(LR window {side}x{side} at y={y}, x={x})</span></h3><div class='crops'>")
        for name, img in c["tiles"]:
            parts.append(f"<figure><img class='crop' alt='{html.escape(name)}' src='{_png(img)}'><figcaption>{html.escape(name)}</figcaption></figure>")
        parts.append("</div>")
    if p.get("text"):
        parts += ["<h2>Protocol</h2>", f"<pre>{html.escape(p['text'])}</pre>"]
    where = sorted({f"{r['device']} ({r['machine']})" for e in results["entries"] for r in e["runs"] if r["device"]})
    if where:
        parts.append(f"<p class='note'>Runs made on: {html.escape('; '.join(where))}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: dict, out: Path, console=None, data_root=None) -> Path:
    from ..io.files import atomic_path

    curves = curves_png(results)
    if curves is None and console is not None:
        console.print("report: no curves (pip install srkd[report] for matplotlib)")
    crop_sets = crops(results, data_root)
    page = render(results, curves, crop_sets)
    path = Path(out) / "report.html"
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(page)
    for name, data in (("curves.png", curves), ("crops.png", crops_png(crop_sets))):
        if data is not None:  # the same pictures as files, for pages that link them
            with atomic_path(Path(out) / name, overwrite=True) as tmp:
                tmp.write_bytes(data)
    return path
