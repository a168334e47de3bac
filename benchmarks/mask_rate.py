"""Mask stream rate benchmark: our coder against a 1-bit PNG and zlib of the same grids.

Usage:
    python benchmarks/mask_rate.py              # table for benchmarks/data/masks/*.png
    python benchmarks/mask_rate.py --regenerate # rewrite the synthetic test masks first

Real SAM masks are not available offline, so benchmarks/data/masks/ holds synthetic but
realistic object silhouettes (figures, houses, boats, trees, animals, cars, ground/water regions)
at Kodak size, 3 per image, mostly disjoint, some touching the border. They are generated
deterministically by `generate()` below (seeded), stored as 1-bit PNGs named
<image>_<k>.png (k = object index, in coding order).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # a PYTHONPATH or installed sedic wins

from sedic.streams.masks import decode_masks, encode_masks, to_grid  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "masks"


# ---------------------------------------------------------------- synthetic masks
def _poly(draw, pts, fill=1):
    draw.polygon([(float(x), float(y)) for x, y in pts], fill=fill)


def _ellipse(draw, cx, cy, rx, ry, fill=1):
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


def _shape(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """One object silhouette drawn at full resolution, before boundary noise."""
    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    s = min(w, h)
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.3, 0.7) * h
    if kind == "figure":
        sc = s * rng.uniform(0.5, 0.9)
        top = cy - sc / 2
        _ellipse(d, cx, top + sc * 0.08, sc * 0.06, sc * 0.08)                    # head
        _poly(d, [(cx - sc * .12, top + sc * .17), (cx + sc * .12, top + sc * .17),
                  (cx + sc * .10, top + sc * .55), (cx - sc * .10, top + sc * .55)])  # torso
        _poly(d, [(cx - sc * .12, top + sc * .18), (cx - sc * .22, top + sc * .45),
                  (cx - sc * .18, top + sc * .47), (cx - sc * .09, top + sc * .25)])  # arm
        _poly(d, [(cx + sc * .12, top + sc * .18), (cx + sc * .20, top + sc * .40),
                  (cx + sc * .16, top + sc * .42), (cx + sc * .09, top + sc * .25)])  # arm
        _poly(d, [(cx - sc * .10, top + sc * .55), (cx - sc * .01, top + sc * .55),
                  (cx - sc * .03, top + sc), (cx - sc * .10, top + sc)])            # leg
        _poly(d, [(cx + sc * .01, top + sc * .55), (cx + sc * .10, top + sc * .55),
                  (cx + sc * .12, top + sc), (cx + sc * .05, top + sc)])            # leg
    elif kind == "house":
        bw, bh = s * rng.uniform(0.35, 0.6), s * rng.uniform(0.25, 0.4)
        x0, y0 = cx - bw / 2, cy - bh / 3
        d.rectangle([x0, y0, x0 + bw, y0 + bh], fill=1)
        _poly(d, [(x0 - bw * .08, y0), (x0 + bw / 2, y0 - bh * .6), (x0 + bw * 1.08, y0)])
        d.rectangle([x0 + bw * .7, y0 - bh * .55, x0 + bw * .8, y0 - bh * .2], fill=1)  # chimney
    elif kind == "boat":
        bw = s * rng.uniform(0.4, 0.7)
        y0 = cy + s * 0.1
        _poly(d, [(cx - bw / 2, y0), (cx + bw / 2, y0), (cx + bw * .38, y0 + bw * .15),
                  (cx - bw * .4, y0 + bw * .15)])
        d.rectangle([cx - bw * .01, y0 - bw * .7, cx + bw * .01, y0], fill=1)   # mast
        _poly(d, [(cx + bw * .02, y0 - bw * .65), (cx + bw * .35, y0 - bw * .05),
                  (cx + bw * .02, y0 - bw * .05)])                                # sail
        _poly(d, [(cx - bw * .02, y0 - bw * .55), (cx - bw * .25, y0 - bw * .05),
                  (cx - bw * .02, y0 - bw * .05)])
    elif kind == "tree":
        r = s * rng.uniform(0.15, 0.3)
        d.rectangle([cx - r * .15, cy, cx + r * .15, h], fill=1)                # trunk to border
        for _ in range(6):
            _ellipse(d, cx + rng.normal(0, r * .4), cy - r * .6 + rng.normal(0, r * .3),
                     r * rng.uniform(.5, .8), r * rng.uniform(.4, .7))
    elif kind == "animal":
        r = s * rng.uniform(0.12, 0.22)
        _ellipse(d, cx, cy, r * 1.4, r * .7)                                    # body
        hx = cx + r * 1.5 * rng.choice([-1, 1])
        _ellipse(d, hx, cy - r * .6, r * .45, r * .4)                          # head
        for dx in (-1.0, -.6, .6, 1.0):
            d.rectangle([cx + dx * r - r * .1, cy, cx + dx * r + r * .1, cy + r * 1.5], fill=1)
        _poly(d, [(cx - r * 1.4 * np.sign(hx - cx), cy),
                  (cx - r * 2.1 * np.sign(hx - cx), cy - r * .8),
                  (cx - r * 2.0 * np.sign(hx - cx), cy - r * .7)])             # tail
    elif kind == "car":
        cw = s * rng.uniform(0.4, 0.7)
        y0 = cy
        d.rounded_rectangle([cx - cw / 2, y0, cx + cw / 2, y0 + cw * .22], radius=cw * .04, fill=1)
        _poly(d, [(cx - cw * .3, y0), (cx - cw * .18, y0 - cw * .16), (cx + cw * .15, y0 - cw * .16),
                  (cx + cw * .3, y0)])
        for dx in (-.3, .3):
            _ellipse(d, cx + dx * cw, y0 + cw * .22, cw * .09, cw * .09)
    elif kind == "ground":  # water / grass / road: a wide region along the bottom border
        ys = h * rng.uniform(0.55, 0.8)
        xs = np.linspace(0, w, 12)
        pts = [(x, ys + rng.normal(0, h * .03)) for x in xs] + [(w, h), (0, h)]
        _poly(d, pts)
    elif kind == "sky":  # top region with a mountain/treeline boundary
        xs = np.linspace(0, w, 40)
        base = h * rng.uniform(0.25, 0.45)
        ys = base + np.cumsum(rng.normal(0, h * .015, xs.size))
        _poly(d, [(x, y) for x, y in zip(xs, ys, strict=True)] + [(w, 0), (0, 0)])
    else:
        raise ValueError(kind)
    return np.asarray(img) > 0


def _roughen(mask: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Segmentation-like boundary: blur, add smooth noise, threshold (SAM edges wobble a few pixels)."""
    from scipy import ndimage
    f = ndimage.gaussian_filter(mask.astype(np.float32), 2.0)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, mask.shape).astype(np.float32), 6.0)
    noise *= amount / (noise.std() + 1e-9)
    m = (f + noise) > 0.5
    # like SAM's post-processing (min region area), drop specks and fill pinholes
    for target in (True, False):
        lab, n = ndimage.label(m == target)
        if n:
            sizes = ndimage.sum(np.ones_like(lab), lab, index=np.arange(1, n + 1))
            small = np.isin(lab, 1 + np.flatnonzero(sizes < 300))
            m[small] = not target
    return m


SCENES = [  # (size, kinds): 3 objects per image, coded in this order
    ((768, 512), ("figure", "boat", "ground")),
    ((768, 512), ("house", "tree", "car")),
    ((512, 768), ("figure", "tree", "sky")),
    ((768, 512), ("animal", "ground", "tree")),
    ((768, 512), ("boat", "sky", "ground")),
    ((512, 768), ("house", "figure", "animal")),
    ((768, 512), ("car", "house", "ground")),
    ((512, 768), ("boat", "figure", "sky")),
]


def generate(out: Path = DATA, seed: int = 2024) -> None:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for i, ((w, h), kinds) in enumerate(SCENES):
        taken = np.zeros((h, w), bool)
        for k, kind in enumerate(kinds):
            m = _roughen(_shape(kind, w, h, rng), rng, 0.15)
            m &= ~taken  # SAM masks of different objects rarely overlap: earlier objects occlude
            taken |= m
            Image.fromarray(m).convert("1").save(out / f"scene{i:02d}_{k}.png", optimize=True)


def load_images(folder: Path = DATA) -> dict[str, list[np.ndarray]]:
    images: dict[str, list[np.ndarray]] = {}
    for p in sorted(folder.glob("*.png")):
        name, k = p.stem.rsplit("_", 1)
        images.setdefault(name, []).append((int(k), np.asarray(Image.open(p).convert("1"), bool)))
    return {n: [m for _, m in sorted(v, key=lambda t: t[0])] for n, v in images.items()}


# ---------------------------------------------------------------- baselines
def png_bits(grid: np.ndarray) -> int:
    buf = io.BytesIO()
    Image.fromarray(grid).convert("1").save(buf, format="PNG", optimize=True)
    return 8 * len(buf.getvalue())


def zlib_bits(grid: np.ndarray) -> int:
    return 8 * len(zlib.compress(np.packbits(grid).tobytes(), 9))


def table(images: dict[str, list[np.ndarray]]) -> tuple[str, dict[str, int]]:
    # "ours" on a mask row: that mask coded alone (no earlier masks as context); on an "all" row:
    # encode_masks of the image's masks together, which is what a .sedic file carries.
    rows = ["| image | mask | grid (h x w) | set cells | raw bits | PNG-1bit bits | zlib-9 bits | ours bits "
            "| ours/PNG | decode ms |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    tot = {"raw": 0, "png": 0, "zlib": 0, "ours": 0}
    for name, masks in images.items():
        grids = [to_grid(m) for m in masks]
        data = encode_masks(grids)
        t0 = time.perf_counter()
        back = decode_masks(data, len(grids), grids[0].shape)
        ms = 1000 * (time.perf_counter() - t0)
        assert all((a == b).all() for a, b in zip(grids, back, strict=True)), "round trip failed"
        ours = 8 * len(data)
        raw = png = zl = 0
        for k, g in enumerate(grids):
            r, p, z = g.size, png_bits(g), zlib_bits(g)
            alone = 8 * len(encode_masks([g]))
            raw, png, zl = raw + r, png + p, zl + z
            rows.append(f"| {name} | {k} | {g.shape[0]} x {g.shape[1]} | {int(g.sum())} | {r} | {p} | {z} | "
                        f"{alone} (alone) | {alone / p:.3f} | |")
        rows.append(f"| {name} | all {len(grids)} | | | {raw} | {png} | {zl} | **{ours}** | **{ours / png:.3f}** | "
                    f"{ms:.1f} |")
        for key, v in zip(("raw", "png", "zlib", "ours"), (raw, png, zl, ours), strict=True):
            tot[key] += v
    rows.append(f"| **total** | {sum(len(v) for v in images.values())} masks | | | {tot['raw']} | {tot['png']} | "
                f"{tot['zlib']} | **{tot['ours']}** | **{tot['ours'] / tot['png']:.3f}** | |")
    return "\n".join(rows), tot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regenerate", action="store_true", help="rewrite benchmarks/data/masks/ first")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    if args.regenerate:
        generate(args.data)
    text, _ = table(load_images(args.data))
    print(text)


if __name__ == "__main__":
    main()
