"""Encoder-side changes to the AVIF reference at the same byte budget (issue 15, part 3).

For each Kodak image the search (encode_reference) picks a factor; at that factor the quality is
re-fitted (bisection, highest that fits) under each variant, and the full-resolution PSNR of the
decoded payload is compared with the plain encode. The decoder is the same for every variant.

    python benchmarks/reference_encoder_options.py aom  1,5,8,13,19,23 0.02 base "sharpness=3" "enable-qm=1;qm-min=8"
    python benchmarks/reference_encoder_options.py speed 1,5,13,19 0.02 6 4 2 1
    python benchmarks/reference_encoder_options.py backproject 1,5,13,19 0.02 0 1 2 3
    python benchmarks/reference_encoder_options.py explicit 1,5,8,13,19,23 0.02
    python benchmarks/reference_encoder_options.py preimage 1,5,13,19 0.02 -1 0 0.03 0.1 0.3 1
    python benchmarks/reference_encoder_options.py subsampling 1,5,13,19 0.02
    python benchmarks/reference_encoder_options.py upsampler 19,5,13 0.02

preimage: the reduced image as the least-squares pre-image of the normative upsampler (its exact
adjoint, solved exactly by the eigenvectors of the two axes' normal matrices), pulled towards the
Lanczos downscale with the given weight (-1: the Lanczos downscale itself), quality re-fitted at
speed 6 at the chosen factor. subsampling: 4:2:0 against 4:4:4 (a payload format change: the
sequence header's profile and av1C differ), at speeds 6 and 2, counting the frame as the file
minus the same container bytes. upsampler: a decoder-side change, the linear MMSE upsampler for
the known Lanczos downscale (AR(1) prior rho, noise s2, mean removed) against the normative
Lanczos-3, on the payloads encode_reference makes (refined).
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


class SearchOnly(R.AvifCodec):
    """The plain codec; as a subclass, encode_reference returns the search's result unrefined."""


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


def upsampling_matrix(n, m):
    """The normative upsampler's weights for one axis as a dense (m, n) matrix (no rounding)."""
    from sedic.streams import lanczos

    a = np.zeros((m, n))
    if n == m:
        return np.eye(n)
    xmin, fixed = lanczos.coefficients(n, m)
    for i in range(m):
        for t in range(fixed.shape[1]):
            if fixed[i, t] and xmin[i] + t < n:
                a[i, xmin[i] + t] += fixed[i, t] / float(1 << lanczos.PRECISION)
    return a


def least_squares_preimage(img, rw, rh, weight):
    """argmin_x ||U x - img||^2 + weight * (pixels per reduced pixel) * ||x - Lanczos-down(img)||^2."""
    h, w = img.shape[:2]
    start = np.asarray(Image.fromarray(img).resize((rw, rh), Image.LANCZOS)).astype(np.float64)
    av, ah = upsampling_matrix(rh, h), upsampling_matrix(rw, w)
    dv, qv = np.linalg.eigh(av.T @ av)
    dh, qh = np.linalg.eigh(ah.T @ ah)
    lam = weight * (h * w) / (rh * rw)
    denom = np.maximum(dv[:, None] * dh[None, :] + lam, 1e-9)
    out = np.empty((rh, rw, 3))
    for c in range(3):
        rhs = av.T @ img[..., c].astype(np.float64) @ ah + lam * start[..., c]
        out[..., c] = qv @ ((qv.T @ rhs @ qh) / denom) @ qh.T
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def mmse_upsampler(n, m, rho, s2):
    """The linear MMSE estimate of n samples from their Lanczos downscale to m (AR(1) prior)."""
    d = np.asarray(Image.fromarray(np.eye(n, dtype=np.float32), "F").resize((n, m), Image.LANCZOS), np.float64)
    i = np.arange(n)
    c = rho ** np.abs(i[:, None] - i[None, :])
    return c @ d.T @ np.linalg.inv(d @ c @ d.T + s2 * np.eye(m))


def subsampling(img, reduced, budget, w, h):
    """PSNR at the highest quality that fits, per (subsampling, speed)."""
    out = {}
    for sub in ("4:2:0", "4:4:4"):
        for speed in (6, 2):
            best = None
            for q in range(101):
                buf = io.BytesIO()
                Image.fromarray(reduced).save(buf, "AVIF", quality=q, speed=speed, codec="aom", subsampling=sub,
                                              range="full", max_threads=1, advanced={"tune": "psnr"})
                if len(buf.getvalue()) - 290 > budget - 3:  # container bytes; 3 bytes of our header
                    break
                best = buf.getvalue()
            if best is not None:
                dec = np.asarray(Image.open(io.BytesIO(best)).convert("RGB"))
                out[f"{sub} speed {speed}"] = R.psnr(img, R.upsample(dec, w, h))
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    mode, images, rate, variants = argv[0], [int(a) for a in argv[1].split(",")], float(argv[2]), argv[3:]
    results: dict[str, list[float]] = {}
    for k in images:
        img = np.asarray(Image.open(KODAK / f"kodim{k:02d}.png").convert("RGB"))
        h, w = img.shape[:2]
        budget = int(rate * w * h / 8)
        # the search's own choice (a subclass: encode_reference does not refine it), except for
        # the upsampler, which decodes what encode_reference now writes (refined)
        payload, st = R.encode_reference(img, budget, R.AvifCodec() if mode == "upsampler" else SearchOnly())
        fi = st.factor_index
        if mode != "upsampler":
            rw, rh = R.reduced_size(w, h, fi)
            plain = np.asarray(Image.fromarray(img).resize((rw, rh), Image.LANCZOS))
        if mode == "subsampling":
            for name, v in subsampling(img, plain, budget, w, h).items():
                results.setdefault(name, []).append(v)
            print(f"kodim{k:02d}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in results.items()), flush=True)
            continue
        if mode == "upsampler":
            dec = R.AvifCodec().decode_reduced(payload, w, h).astype(np.float64)
            rh2, rw2 = dec.shape[:2]
            results.setdefault("lanczos", []).append(R.psnr(img, R.upsample(dec.astype(np.uint8), w, h)))
            for rho, s2 in ((0.95, 0.0), (0.95, 0.001), (0.9, 0.003), (0.95, 0.01)):
                uv, uh = mmse_upsampler(h, rh2, rho, s2), mmse_upsampler(w, rw2, rho, s2)
                mu = dec.mean((0, 1))
                y = np.stack([uv @ (dec[..., c] - mu[c]) @ uh.T + mu[c] for c in range(3)], -1)
                results.setdefault(f"mmse rho {rho} s2 {s2}", []).append(
                    R.psnr(img, np.clip(np.round(y), 0, 255).astype(np.uint8)))
            print(f"kodim{k:02d}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in results.items()), flush=True)
            continue
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
            reduced = (backproject(img, rw, rh, int(v)) if mode == "backproject" else
                       (plain if float(v) < 0 else least_squares_preimage(img, rw, rh, float(v)))
                       if mode == "preimage" else plain)
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
