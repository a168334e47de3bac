"""Writing the results: per-image CSV, summary JSON, markdown table of means, plots."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from ..imageio import atomic_write_bytes
from .methods import STREAMS
from .metrics import ALL_METRICS, HIGHER_IS_BETTER, SET_METRICS
from .published import published_points

CSV_FIXED = ["image", "method", "target_bpp", "status", "width", "height", "bytes", "bpp",
             *[f"bpp_{s}" for s in STREAMS], "encode_s", "decode_s", "device", "settings", "error"]


def _fmt(x):
    if x is None:
        return ""
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.10g}"
    return str(x)


def write_csv(path: Path, rows: list[dict], metric_names: list[str]) -> None:
    image_metrics = [m for m in metric_names if m not in SET_METRICS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIXED + image_metrics)
    for r in rows:
        settings = ";".join(f"{k}={v}" for k, v in sorted((r.get("info") or {}).items()))
        fixed = [r.get(k) if k != "settings" else settings for k in CSV_FIXED]
        w.writerow([_fmt(v) for v in fixed] + [_fmt((r.get("metrics") or {}).get(m)) for m in image_metrics])
    atomic_write_bytes(path, buf.getvalue().encode(), force=True)


def _mean(values):
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return (float(np.mean(vals)), len(vals)) if vals else (None, 0)


def aggregate(rows: list[dict], set_metrics: dict, methods: list[str], bpps: list[float],
              metric_names: list[str]) -> list[dict]:
    """Means per (method, target rate) over the images where the method met the rate."""
    out = []
    for m in methods:
        for bpp in bpps:
            sel = [r for r in rows if r["method"] == m and r["target_bpp"] == bpp]
            ok = [r for r in sel if r.get("status") == "ok"]
            entry = {"method": m, "target_bpp": bpp, "images": len(sel), "ok": len(ok),
                     "failed": len(sel) - len(ok)}
            for key in ("bpp", *[f"bpp_{s}" for s in STREAMS], "encode_s", "decode_s"):
                entry[key] = _mean([r.get(key) for r in ok])[0]
            for name in metric_names:
                if name in SET_METRICS:
                    sm = set_metrics.get((m, bpp), {})
                    entry[name] = sm.get(name)
                    if name == "kid":
                        entry["kid_std"] = sm.get("kid_std")
                    entry.setdefault("patches", sm.get("patches"))
                else:
                    entry[name], entry[f"{name}_n"] = _mean([(r.get("metrics") or {}).get(name) for r in ok])
            errors = sorted({r.get("error", "") for r in sel if r.get("status") != "ok"})
            if errors:
                entry["errors"] = errors
            out.append(entry)
    return out


def markdown_table(means: list[dict], metric_names: list[str], notes: list[str]) -> str:
    def cell(v, digits=4):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.1f}"
        return str(v)

    arrows = {m: ("↑" if HIGHER_IS_BETTER[m] else "↓") for m in metric_names}
    head = ["method", "target bpp", "images ok", "bpp", *[f"{m} {arrows[m]}" for m in metric_names],
            "enc s", "dec s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in means:
        vals = [e["method"], f"{e['target_bpp']:g}", f"{e['ok']}/{e['images']}", cell(e["bpp"])]
        vals += [cell(e.get(m)) for m in metric_names]
        vals += [cell(e["encode_s"], 3), cell(e["decode_s"], 3)]
        lines.append("| " + " | ".join(vals) + " |")
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text


# The peers' published points are means over the whole Kodak set.
PUBLISHED_IMAGES = 24


def _images_covered(entry: dict, name: str) -> int:
    """How many images a mean covers: those with a value of this metric (set metrics: the images
    that met the rate)."""
    return int(entry.get(f"{name}_n", entry.get("ok", 0)) or 0)


def _count_text(counts: list[int]) -> str:
    lo, hi = min(counts), max(counts)
    images = "image" if hi == 1 else "images"
    return f"mean of {lo} {images}" if lo == hi else f"means of {lo}-{hi} images"


def metric_figure(means: list[dict], methods: list[str], name: str, title: str, show_published: bool = True):
    """One metric against measured bpp: our means (the legend says over how many images) and,
    optionally, the peers' published full-Kodak means, marked as such."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.8), dpi=110)
    markers = "osD^v<>pPX*h"
    drawn = False
    covered: list[int] = []
    for i, m in enumerate(methods):
        pts = sorted((e["bpp"], e[name], _images_covered(e, name)) for e in means
                     if e["method"] == m and e.get("bpp") is not None and e.get(name) is not None
                     and math.isfinite(e[name]))
        if pts:
            xs, ys, ns = zip(*pts, strict=True)
            ax.plot(xs, ys, marker=markers[i % len(markers)], label=f"{m} ({_count_text(list(ns))}, this run)")
            covered.extend(ns)
            drawn = True
    published = published_points(name) if show_published else []
    for j, p in enumerate(published):
        ax.scatter([p["bpp"]], [p["value"]], marker="x", s=40, color=f"C{(j + len(methods)) % 10}",
                   label=f"{p['system']}: published, all {PUBLISHED_IMAGES} Kodak images ({p['source']})")
        drawn = True
    ax.set_xlabel("bits per pixel (measured, whole file)")
    ax.set_ylabel(f"{name} ({'higher' if HIGHER_IS_BETTER[name] else 'lower'} is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if published and covered and min(covered) < PUBLISHED_IMAGES:
        # A mean over a few images is not comparable with a full-set mean: say so on the plot.
        fig.text(0.01, 0.01, f"Caveat: this run's points are means of {_count_text(covered).split(' of ')[1]}; "
                 f"the published points (x) are means over all {PUBLISHED_IMAGES} Kodak images, "
                 f"taken from their authors' result files, not measured here.", fontsize=7, ha="left",
                 va="bottom", wrap=True)
    if drawn:
        # Outside the axes: published markers sit anywhere in the low-rate corner.
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_metrics(out_dir: Path, means: list[dict], methods: list[str], metric_names: list[str],
                 title: str, show_published: bool = True) -> list[Path]:
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in metric_names:
        fig = metric_figure(means, methods, name, title, show_published)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        path = out_dir / f"{name}.png"
        atomic_write_bytes(path, buf.getvalue(), force=True)
        written.append(path)
    return written


def write_json(path: Path, obj) -> None:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None  # JSON has no inf/nan
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    atomic_write_bytes(path, (json.dumps(clean(obj), indent=2) + "\n").encode(), force=True)


def metric_order(names) -> list[str]:
    return [n for n in ALL_METRICS if n in names]
