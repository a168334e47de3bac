"""Reference-layer rate benchmark on Kodak: stripped AVIF vs whole-file AVIF and WebP.

Every codec gets the same search (sedic.streams.reference.encode_reference): for each
downscale factor the highest quality that fits the byte budget, the best full-resolution
PSNR wins; the whole payload or file is counted. Results: mean bpp actually used, PSNR
(RGB, 8 bit, full resolution) and MS-SSIM (pytorch_msssim, data_range 255).

`sedic-avif` is the search alone (before); `sedic-avif+refine` is the same search's result
refined as encode_reference does for a plain AvifCodec (after: sedic.streams.reference_refine);
`search s` / `refine s` are the CPU seconds (process time) of each per image and rate.

    python benchmarks/reference_rate.py [--limit N] [--rates 0.02,0.03] [--workers 2] [--json out.json]
                                        [--rows rows.jsonl]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from functools import partial
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
    decode_reference,
    encode_reference,
    ms_ssim,
    psnr,
    reduced_size,
    upsample,
)
from sedic.streams.reference_refine import refine_reference  # noqa: E402

RATES = (0.01, 0.02, 0.03, 0.05)
CODECS = ("sedic-avif", "sedic-avif+refine", "avif-file", "webp-file")


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

    def check_setting(self, setting):
        pass

    def encode(self, image, setting: ReferenceSetting) -> bytes:
        h, w = image.shape[:2]
        rw, rh = reduced_size(w, h, setting.factor_index)
        small = image
        if (rw, rh) != (w, h):
            small = np.asarray(Image.fromarray(image).resize((rw, rh), Image.Resampling.LANCZOS))
        return self.encode_reduced(small, setting)

    def encode_reduced(self, small, setting: ReferenceSetting) -> bytes:
        if self.fmt == "AVIF":
            assert self.shared is not None
            return self.shared.get(small, setting.quality)
        buf = io.BytesIO()
        Image.fromarray(small).save(buf, "WEBP", quality=setting.quality, method=6)
        return buf.getvalue()

    def parse(self, payload, width, height):
        return ()  # a whole file: its own format's rules

    def describe(self, payload, width, height):
        return {"codec": self.fmt.lower() + "-file"}

    def decode_reduced(self, payload, width, height):
        with Image.open(io.BytesIO(payload)) as im:
            return np.asarray(im.convert("RGB"))

    def decode(self, payload, width, height):
        return upsample(self.decode_reduced(payload, width, height), width, height)


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

    def check_setting(self, setting):
        self.inner.check_setting(setting)

    def encode(self, image, setting):
        if setting not in self.enc:
            self.enc[setting] = self.inner.encode(image, setting)
        return self.enc[setting]

    def encode_reduced(self, reduced, setting):
        # the search (one image per Cached) hands over the reduced image: the setting names it
        key = ("reduced", setting)
        if key not in self.enc:
            self.enc[key] = self.inner.encode_reduced(reduced, setting)
        return self.enc[key]

    def parse(self, payload, width, height):
        return self.inner.parse(payload, width, height)

    def describe(self, payload, width, height):
        return self.inner.describe(payload, width, height)

    def decode_reduced(self, payload, width, height):
        return self.inner.decode_reduced(payload, width, height)

    def decode(self, payload, width, height):
        if payload not in self.dec:
            self.dec[payload] = self.inner.decode(payload, width, height)
        return self.dec[payload]


def _row(img, payload, **fields) -> dict:
    h, w = img.shape[:2]
    out = decode_reference(payload, w, h)
    _, _, rw, rh, _ = AvifCodec().parse(payload, w, h)
    return dict(fits=True, bytes=len(payload), bpp=8 * len(payload) / (w * h), psnr=psnr(img, out),
                msssim=ms_ssim(img, out), factor=w / rw, reduced=f"{rw}x{rh}", **fields)


def run_image(path: str, rates=RATES, whole_files=True) -> list[dict]:
    import torch

    torch.set_num_threads(1)  # the pool already uses every core
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    shared = _SharedAvifFiles()
    codecs = {"sedic-avif": Cached(StrippedAvif(shared)), "avif-file": Cached(WholeFile("AVIF", shared)),
              "webp-file": Cached(WholeFile("WEBP"))}
    rows = []
    for rate in rates:
        budget = int(rate * w * h / 8)
        for name, codec in codecs.items():
            if not whole_files and name != "sedic-avif":
                continue
            t, cpu = time.time(), time.process_time()
            try:
                payload, setting = encode_reference(img, budget, codec)
            except RateError:
                rows.append(dict(image=Path(path).stem, rate=rate, codec=name, fits=False))
                continue
            out = codec.decode(payload, w, h)
            row = dict(image=Path(path).stem, rate=rate, codec=name, fits=True, bytes=len(payload),
                       bpp=8 * len(payload) / (w * h), psnr=psnr(img, out), msssim=ms_ssim(img, out),
                       factor=setting.factor, quality=setting.quality, seconds=time.time() - t,
                       cpu=time.process_time() - cpu)
            if name == "sedic-avif":
                # container bytes stripped at the chosen setting
                whole = codecs["avif-file"].encode(img, setting)
                row["saved"] = len(whole) - len(payload)
                rows.append(row)
                # after: the same result refined (a plain AvifCodec, as encode_reference does)
                t, cpu = time.time(), time.process_time()
                refined, st = refine_reference(img, budget, AvifCodec(), payload, setting, psnr)
                rows.append(_row(img, refined, image=Path(path).stem, rate=rate, codec="sedic-avif+refine",
                                 quality=st.quality, seconds=time.time() - t, cpu=time.process_time() - cpu,
                                 search_cpu=row["cpu"], within=len(refined) <= budget))
                continue
            rows.append(row)
    return rows


def table(rows: list[dict], rates=RATES) -> str:
    lines = ["| target bpp | codec | mean bpp | max bpp | PSNR (dB) | MS-SSIM | fits | mean factor | "
             "bytes saved by stripping | CPU s (mean) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rate in rates:
        for name in CODECS:
            sel = [r for r in rows if r["rate"] == rate and r["codec"] == name]
            ok = [r for r in sel if r["fits"]]
            if not sel:
                continue  # not run (--ours-only)
            if not ok:
                lines.append(f"| {rate} | {name} | - | - | - | - | 0/{len(sel)} | - | - | - |")
                continue
            saved = f"{np.mean([r['saved'] for r in ok]):.1f}" if name == "sedic-avif" else ""
            cpu = f"{np.mean([r['cpu'] for r in ok]):.2f}" if "cpu" in ok[0] else ""
            if name == "sedic-avif+refine":
                cpu += f" (+ search {np.mean([r['search_cpu'] for r in ok]):.2f})"
            lines.append(f"| {rate} | {name} | {np.mean([r['bpp'] for r in ok]):.4f} | "
                         f"{np.max([r['bpp'] for r in ok]):.4f} | "
                         f"{np.mean([r['psnr'] for r in ok]):.2f} | {np.mean([r['msssim'] for r in ok]):.4f} | "
                         f"{len(ok)}/{len(sel)} | {np.mean([r['factor'] for r in ok]):.2f} | {saved} | {cpu} |")
    return "\n".join(lines)


def before_after(rows: list[dict], rates=RATES) -> str:
    """Paired per image: the refined payload minus the search's (same image, same budget)."""
    lines = ["| target bpp | n | PSNR before | PSNR after | mean gain dB | min | max | bytes before | "
             "bytes after | all within target | search CPU s | refine CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rate in rates:
        by: dict[str, dict] = {}
        for r in rows:
            if r["rate"] == rate and r["fits"] and r["codec"] in ("sedic-avif", "sedic-avif+refine"):
                by.setdefault(r["image"], {})[r["codec"]] = r
        pairs = [(v["sedic-avif"], v["sedic-avif+refine"]) for v in by.values() if len(v) == 2]
        if not pairs:
            continue
        gain = [a["psnr"] - b["psnr"] for b, a in pairs]
        lines.append(f"| {rate} | {len(pairs)} | {np.mean([b['psnr'] for b, _ in pairs]):.3f} | "
                     f"{np.mean([a['psnr'] for _, a in pairs]):.3f} | {np.mean(gain):+.3f} | {np.min(gain):+.3f} | "
                     f"{np.max(gain):+.3f} | {np.mean([b['bytes'] for b, _ in pairs]):.1f} | "
                     f"{np.mean([a['bytes'] for _, a in pairs]):.1f} | "
                     f"{'yes' if all(a['within'] for _, a in pairs) else 'NO'} | "
                     f"{np.mean([b['cpu'] for b, _ in pairs]):.2f} | {np.mean([a['cpu'] for _, a in pairs]):.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "kodak"),
                    help="folder of kodim*.png (default: ../shared/datasets/kodak beside the repository)")
    ap.add_argument("--limit", type=int, default=24, help="first N Kodak images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ours-only", action="store_true", help="skip the whole-file AVIF and WebP rows")
    ap.add_argument("--rates", default=",".join(map(str, RATES)), help="target bpp, comma-separated")
    ap.add_argument("--json", help="write per-image rows here")
    ap.add_argument("--rows", help="append per-image rows (JSON lines) as images finish; images already "
                                   "there are not run again, so an interrupted run can be resumed")
    args = ap.parse_args(argv)
    rates = tuple(float(r) for r in args.rates.split(","))
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
    job = partial(run_image, rates=rates, whole_files=not args.ours_only)
    with Pool(args.workers) as pool:
        for rs in pool.imap_unordered(job, todo, chunksize=1):
            rows.extend(rs)
            if args.rows:
                with open(args.rows, "a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rs)
            print(f"{rs[0]['image']} done ({time.time() - t:.0f} s)", file=sys.stderr, flush=True)
    wall = time.time() - t
    import PIL

    print(f"{len(paths)} images from {args.data}; {wall:.0f} s wall for {len(todo)} with {args.workers} workers; "
          f"Pillow {PIL.__version__}; {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores")
    print(table(rows, rates))
    print()
    print(before_after(rows, rates))
    # paired difference at each rate: ours minus the best whole-file codec
    for rate in rates:
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
