"""Encoder-side changes to the AVIF reference at the same byte budget (issue 15, part 3).

For each Kodak image the search (encode_reference) picks a factor; at that factor the quality is
re-fitted (bisection, highest that fits) under each variant, and the full-resolution PSNR of the
decoded payload is compared with the plain encode. The decoder is the same for every variant.

    python benchmarks/reference_encoder_options.py aom  1,5,8,13,19,23 0.02 base "sharpness=3" "enable-qm=1;qm-min=8"
    python benchmarks/reference_encoder_options.py speed 1,5,13,19 0.02 6 4 2 1
    python benchmarks/reference_encoder_options.py backproject 1,5,13,19 0.02 0 1 2 3
    python benchmarks/reference_encoder_options.py explicit 1,5,8,13,19,23 0.02
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sedic.streams import reference as R  # noqa: E402

KODAK = REPO.parent / "shared" / "datasets" / "kodak"


class Advanced(R.AvifCodec):
    """AvifCodec with extra aom options passed through Pillow's `advanced`."""

    def __init__(self, speed=6, extra=None):
        super().__init__(speed=speed)
        self.extra = dict(extra or {})

    def encode_avif_file(self, reduced, quality):
        buf = io.BytesIO()
        Image.fromarray(reduced).save(buf, "AVIF", quality=int(quality), speed=self.speed, codec="aom",
                                      subsampling="4:2:0", range="full", max_threads=1,
                                      advanced={"tune": "psnr", **self.extra})
        return buf.getvalue()


def fit(codec, reduced, fi, budget):
    """Highest quality whose payload fits (bisection), and that payload."""
    if len(codec.encode_reduced(reduced, R.ReferenceSetting(fi, 0))) > budget:
        return None
    lo, hi = 0, 100
    while lo < hi:
        mid = (lo + hi + 1) // 2
        fits = len(codec.encode_reduced(reduced, R.ReferenceSetting(fi, mid))) <= budget
        lo, hi = (mid, hi) if fits else (lo, mid - 1)
    return lo, codec.encode_reduced(reduced, R.ReferenceSetting(fi, lo))


def backproject(img, rw, rh, rounds):
    """A reduced image fitted to the normative upsampler: x += Lanczos-down(y - upsample(x))."""
    h, w = img.shape[:2]
    x = np.asarray(Image.fromarray(img).resize((rw, rh), Image.LANCZOS)).astype(np.float64)
    for _ in range(rounds):
        up = R.upsample(np.clip(np.round(x), 0, 255).astype(np.uint8), w, h).astype(np.float64)
        err = img - up
        x += np.stack([np.asarray(Image.fromarray(err[..., c].astype(np.float32), "F").resize((rw, rh), Image.LANCZOS))
                       for c in range(3)], -1)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    mode, images, rate, variants = argv[0], [int(a) for a in argv[1].split(",")], float(argv[2]), argv[3:]
    results: dict[str, list[float]] = {}
    for k in images:
        img = np.asarray(Image.open(KODAK / f"kodim{k:02d}.png").convert("RGB"))
        h, w = img.shape[:2]
        budget = int(rate * w * h / 8)
        payload, st = R.encode_reference(img, budget, R.AvifCodec())
        fi = st.factor_index
        rw, rh = R.reduced_size(w, h, fi)
        plain = np.asarray(Image.fromarray(img).resize((rw, rh), Image.LANCZOS))
        if mode == "explicit":
            base = R.psnr(img, R.AvifCodec().decode(payload, w, h))
            best, f, t = base, float(R.FACTORS[fi]), time.time()
            for q in range(st.quality, min(100, st.quality + 3) + 1):
                for r in np.exp(np.linspace(np.log(0.75), np.log(1.3), 23)):
                    sw, sh = max(16, round(w / (f * r))), max(16, round(h / (f * r)))
                    if sw > w or sh > h:
                        continue
                    p = R.AvifCodec().encode_reduced(np.asarray(Image.fromarray(img).resize((sw, sh), Image.LANCZOS)),
                                                    R.ReferenceSetting(R.EXPLICIT_SIZE, q))
                    if len(p) <= budget:
                        best = max(best, R.psnr(img, R.AvifCodec().decode(p, w, h)))
            results.setdefault("chosen factor", []).append(base)
            results.setdefault("best explicit size", []).append(best)
            print(f"kodim{k:02d}: {base:.3f} -> {best:.3f} dB ({time.time() - t:.0f} s)", flush=True)
            continue
        for v in variants:
            extra = {} if mode != "aom" or v == "base" else dict(kv.split("=") for kv in v.split(";"))
            codec = Advanced(int(v) if mode == "speed" else 6, extra)
            reduced = backproject(img, rw, rh, int(v)) if mode == "backproject" else plain
            t = time.time()
            q, p = fit(codec, reduced, fi, budget)
            results.setdefault(v, []).append(R.psnr(img, codec.decode(p, w, h)))
            print(f"kodim{k:02d} {v}: q {q}, {len(p)}/{budget} bytes, {results[v][-1]:.3f} dB, "
                  f"fit {time.time() - t:.1f} s", flush=True)
    first = next(iter(results))
    for v, values in results.items():
        print(f"{v:40s} mean {np.mean(values):.4f} dB, change {np.mean(values) - np.mean(results[first]):+.4f}")


if __name__ == "__main__":
    main()
