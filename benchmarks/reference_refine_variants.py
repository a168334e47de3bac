"""Refinement variants on the same search result (issue 15, part 3), per Kodak image and rate.

For each image and target rate: the rate search alone (a subclass of AvifCodec, so
encode_reference does not refine), then sedic.streams.reference_refine.refine_reference on that
result once per variant (keyword arguments of refine_reference, as JSON), each on one thread.
One JSON line per image and rate: the search's PSNR and CPU seconds (process time), and per
variant PSNR, bytes, within budget, quality, factor index, reduced width, CPU seconds.

    python benchmarks/reference_refine_variants.py kodim05,kodim06 0.02,0.03 \
        '{"window": {}, "neighbours": {"neighbours": [-1, 1]}}' [--workers 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sedic.streams import reference as R  # noqa: E402
from sedic.streams.reference_refine import refine_reference  # noqa: E402


class SearchOnly(R.AvifCodec):
    """The same encoder; a subclass, so encode_reference leaves its result unrefined."""


def job(task, data: str, variants: dict) -> dict:
    import torch

    torch.set_num_threads(1)  # the pool already uses every core
    name, rate = task
    img = np.asarray(Image.open(Path(data) / f"{name}.png").convert("RGB"))
    h, w = img.shape[:2]
    budget = int(rate * w * h / 8)
    cpu = time.process_time()
    payload, setting = R.encode_reference(img, budget, SearchOnly())
    out = dict(image=name, rate=rate, search_cpu=time.process_time() - cpu, factor=float(setting.factor),
               psnr0=R.psnr(img, R.decode_reference(payload, w, h)))
    for v, kw in variants.items():
        cpu = time.process_time()
        p, st = refine_reference(img, budget, R.AvifCodec(), payload, setting, R.psnr, threads=1, **kw)
        out[v] = dict(cpu=time.process_time() - cpu, psnr=R.psnr(img, R.decode_reference(p, w, h)), bytes=len(p),
                      within=len(p) <= budget, q=st.quality, fi=st.factor_index,
                      rw=R.AvifCodec().parse(p, w, h)[2])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", help="comma-separated Kodak stems (kodim05,...)")
    ap.add_argument("rates", help="comma-separated target bpp")
    ap.add_argument("variants", help='JSON: {"name": {refine_reference keyword arguments}, ...}')
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "kodak"))
    args = ap.parse_args(argv)
    variants = json.loads(args.variants)
    tasks = [(n, float(r)) for n in args.images.split(",") for r in args.rates.split(",")]
    with Pool(args.workers) as pool:
        for row in pool.imap_unordered(partial(job, data=args.data, variants=variants), tasks):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
