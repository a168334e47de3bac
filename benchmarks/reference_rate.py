"""Reference-layer rate benchmark on Kodak: stripped AVIF vs whole-file AVIF and WebP.

Every codec gets the same search (sedic.streams.reference.encode_reference): for each
downscale factor the highest quality that fits the byte budget, the best full-resolution
PSNR wins; the whole payload or file is counted. Results: mean bpp actually used, PSNR
(RGB, 8 bit, full resolution) and MS-SSIM (pytorch_msssim, data_range 255).

    python benchmarks/reference_rate.py [--limit N] [--workers 2] [--json out.json] [--rows rows.jsonl]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sedic.errors import RateError  # noqa: E402
from sedic.streams.reference import (  # noqa: E402
    AvifCodec,
    ReferenceCodec,
    ReferenceSetting,
    encode_reference,
    ms_ssim,
    psnr,
    reduced_size,
    upsample,
)

RATES = (0.01, 0.02, 0.03, 0.05)
CODECS = ("sedic-avif", "avif-file", "webp-file")


class _SharedAvifFiles:
    """One AVIF encode per (reduced size, quality), shared by the stripped and whole-file codecs."""

    def __init__(self):
        self.files: dict = {}
        self.encoder = AvifCodec()

    def get(self, reduced: np.ndarray, quality: int) -> bytes:
        key = (reduced.shape, quality)
        if key not in self.files:
            self.files[key] = self.encoder.encode_avif_file(reduced, quality)
        return self.files[key]


class StrippedAvif(AvifCodec):
    """Our payload; the Pillow encode is shared with the whole-file codec (same bytes)."""

    def __init__(self, shared: _SharedAvifFiles):
        super().__init__()
        self.shared = shared

    def encode_avif_file(self, reduced, quality):
        return self.shared.get(reduced, quality)


class WholeFile(ReferenceCodec):
    """A whole image file as the payload (what one gets without stripping)."""

    codec_id = -1

    def __init__(self, fmt: str, shared: _SharedAvifFiles | None = None):
        self.fmt, self.shared = fmt, shared

    def qualities(self):
        return list(range(101))

    def encode(self, image, setting: ReferenceSetting) -> bytes:
        h, w = image.shape[:2]
        rw, rh = reduced_size(w, h, setting.factor_index)
        small = np.asarray(Image.fromarray(image).resize((rw, rh), Image.LANCZOS)) if (rw, rh) != (w, h) else image
        if self.fmt == "AVIF":
            return self.shared.get(small, setting.quality)
        buf = io.BytesIO()
        Image.fromarray(small).save(buf, "WEBP", quality=setting.quality, method=6)
        return buf.getvalue()

    def decode(self, payload, width, height):
        with Image.open(io.BytesIO(payload)) as im:
            return upsample(np.asarray(im.convert("RGB")), width, height)


class Cached(ReferenceCodec):
    """Memoise encodes and decodes so the four target rates share work."""

    def __init__(self, inner: ReferenceCodec):
        self.inner, self.codec_id = inner, inner.codec_id
        self.enc: dict = {}
        self.dec: dict = {}

    def qualities(self):
        return self.inner.qualities()

    def settings(self, width, height):
        return self.inner.settings(width, height)

    def encode(self, image, setting):
        if setting not in self.enc:
            self.enc[setting] = self.inner.encode(image, setting)
        return self.enc[setting]

    def decode(self, payload, width, height):
        if payload not in self.dec:
            self.dec[payload] = self.inner.decode(payload, width, height)
        return self.dec[payload]


def run_image(path: str) -> list[dict]:
    import torch

    torch.set_num_threads(1)  # the pool already uses every core
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    shared = _SharedAvifFiles()
    codecs = {"sedic-avif": Cached(StrippedAvif(shared)), "avif-file": Cached(WholeFile("AVIF", shared)),
              "webp-file": Cached(WholeFile("WEBP"))}
    rows = []
    for rate in RATES:
        budget = int(rate * w * h / 8)
        for name, codec in codecs.items():
            t = time.time()
            try:
                payload, setting = encode_reference(img, budget, codec)
            except RateError:
                rows.append(dict(image=Path(path).stem, rate=rate, codec=name, fits=False))
                continue
            out = codec.decode(payload, w, h)
            row = dict(image=Path(path).stem, rate=rate, codec=name, fits=True, bytes=len(payload),
                       bpp=8 * len(payload) / (w * h), psnr=psnr(img, out), msssim=ms_ssim(img, out),
                       factor=setting.factor, quality=setting.quality, seconds=time.time() - t)
            if name == "sedic-avif":
                # container bytes stripped at the chosen setting
                whole = codecs["avif-file"].encode(img, setting)
                row["saved"] = len(whole) - len(payload)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| target bpp | codec | mean bpp | PSNR (dB) | MS-SSIM | fits | mean factor | bytes saved by stripping |",
             "|---|---|---|---|---|---|---|---|"]
    for rate in RATES:
        for name in CODECS:
            sel = [r for r in rows if r["rate"] == rate and r["codec"] == name]
            ok = [r for r in sel if r["fits"]]
            if not ok:
                lines.append(f"| {rate} | {name} | - | - | - | 0/{len(sel)} | - | - |")
                continue
            saved = f"{np.mean([r['saved'] for r in ok]):.1f}" if name == "sedic-avif" else ""
            lines.append(f"| {rate} | {name} | {np.mean([r['bpp'] for r in ok]):.4f} | "
                         f"{np.mean([r['psnr'] for r in ok]):.2f} | {np.mean([r['msssim'] for r in ok]):.4f} | "
                         f"{len(ok)}/{len(sel)} | {np.mean([r['factor'] for r in ok]):.2f} | {saved} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "kodak"),
                    help="folder of kodim*.png (default: ../shared/datasets/kodak beside the repository)")
    ap.add_argument("--limit", type=int, default=24, help="first N Kodak images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="write per-image rows here")
    ap.add_argument("--rows", help="append per-image rows (JSON lines) as images finish; images already "
                                   "there are not run again, so an interrupted run can be resumed")
    args = ap.parse_args(argv)
    paths = sorted(str(p) for p in Path(args.data).glob("kodim*.png"))[: args.limit]
    if not paths:
        sys.exit(f"no kodim*.png under {args.data}")
    rows = []
    if args.rows and Path(args.rows).exists():
        rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["image"] in {Path(p).stem for p in paths}]
    done = {r["image"] for r in rows}
    todo = [p for p in paths if Path(p).stem not in done]
    t = time.time()
    with Pool(args.workers) as pool:
        for rs in pool.imap_unordered(run_image, todo, chunksize=1):
            rows.extend(rs)
            if args.rows:
                with open(args.rows, "a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rs)
            print(f"{rs[0]['image']} done ({time.time() - t:.0f} s)", file=sys.stderr, flush=True)
    wall = time.time() - t
    import PIL

    print(f"{len(paths)} images from {args.data}; {wall:.0f} s wall for {len(todo)} with {args.workers} workers; "
          f"Pillow {PIL.__version__}; {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores")
    print(table(rows))
    # paired difference at each rate: ours minus the best whole-file codec
    for rate in RATES:
        per = {}
        for r in rows:
            if r["rate"] == rate and r["fits"]:
                per.setdefault(r["image"], {})[r["codec"]] = r["psnr"]
        d = [v["sedic-avif"] - max(v.get("avif-file", -1e9), v.get("webp-file", -1e9))
             for v in per.values() if "sedic-avif" in v and ("avif-file" in v or "webp-file" in v)]
        if d:
            print(f"rate {rate}: sedic-avif minus best whole-file codec per image: mean {np.mean(d):+.2f} dB, "
                  f"min {np.min(d):+.2f}, max {np.max(d):+.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
