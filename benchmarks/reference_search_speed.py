"""Speed of the reference search: the previous exhaustive search and today's, in the same run.

For every image and target rate both searches code the same image with the same codec (AVIF,
aom) and budget; the table gives wall and CPU (process) time of each, their ratio, the PSNR of
each choice and whether every payload fits. Large images are Kodak images upscaled with Pillow
LANCZOS (made here, never stored). The machine's load average is printed with each row: on a
shared machine wall times are noisy, CPU times less so.

    python benchmarks/reference_search_speed.py [--kodak 24] [--rates 0.01,0.02,0.03,0.05]
        [--large 12:1] [--large-new 12:2,45:1] [--cli 12,45] [--json rows.json]
        [--skip K]   (Kodak images K+1 .. K+N: a run split over processes)
    python benchmarks/reference_search_speed.py --merge part1.json part2.json ...

--large MP:N     N Kodak images upscaled to about MP megapixels, both searches (slow: the
                 exhaustive one takes minutes per image at 12 MP)
--large-new MP:N the same with today's search only
--cli MP,...     `sedic compress --no-semantics` of an upscaled kodim01 at those sizes in a child
                 process: wall time and peak memory (ru_maxrss) of the whole command
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sedic.errors import RateError  # noqa: E402
from sedic.streams.reference import _METRICS, AvifCodec, ReferenceSetting, _check_image, encode_reference, psnr  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "kodak"


def exhaustive_search(image, max_bytes: int, codec, metric: str = "psnr"):
    """The search as it was before issue 15 (kept here, for this comparison only): every factor,
    a binary search over all qualities at each (the image downscaled again at every probe), each
    factor's candidate decoded to full size and scored."""
    image = _check_image(image)
    score = _METRICS[metric]
    h, w = image.shape[:2]
    by_factor: dict[int, list[int]] = {}
    for s in codec.settings(w, h):
        by_factor.setdefault(s.factor_index, []).append(s.quality)
    best = None
    for fi, qualities in by_factor.items():
        cache: dict[int, bytes] = {}

        # bound now (B023): the search below calls it within this iteration only
        def size_at(i: int, cache=cache, fi=fi, qualities=qualities) -> int:
            if i not in cache:
                cache[i] = codec.encode(image, ReferenceSetting(fi, qualities[i]))
            return len(cache[i])

        if size_at(0) > max_bytes:
            continue
        lo, hi = 0, len(qualities) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size_at(mid) <= max_bytes:
                lo = mid
            else:
                hi = mid - 1
        payload = cache[lo]
        value = score(image, codec.decode(payload, w, h))
        key = (value, -len(payload))
        if best is None or key > best[0]:
            best = (key, payload, ReferenceSetting(fi, qualities[lo]))
    if best is None:
        raise RateError(f"no reference setting fits in {max_bytes} bytes")
    return best[1], best[2]


def load_avg() -> float:
    return os.getloadavg()[0]


def timed(fn, *args):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t, time.process_time() - c


def upscaled(path: Path, megapixels: float) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
        return np.asarray(im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS))


def compare(name: str, image: np.ndarray, rate: float, exhaustive: bool) -> dict:
    h, w = image.shape[:2]
    budget = int(rate * w * h / 8)
    codec = type("SearchOnly", (AvifCodec,), {})()  # a subclass: the search alone, not refined
    row = dict(image=name, width=w, height=h, rate=rate, budget=budget, load_before=load_avg())
    (payload, setting), wall, cpu = timed(encode_reference, image, budget, codec)
    row.update(new_s=wall, new_cpu_s=cpu, new_bytes=len(payload), new_factor=setting.factor,
               new_quality=setting.quality, new_psnr=psnr(image, codec.decode(payload, w, h)))
    if exhaustive:
        (payload, setting), wall, cpu = timed(exhaustive_search, image, budget, codec)
        row.update(old_s=wall, old_cpu_s=cpu, old_bytes=len(payload), old_factor=setting.factor,
                   old_quality=setting.quality, old_psnr=psnr(image, codec.decode(payload, w, h)))
    row["load_after"] = load_avg()
    return row


def cli_run(image: np.ndarray, tmp: Path) -> dict:
    src, out = tmp / "big.png", tmp / "big.sedic"
    Image.fromarray(image).save(src, compress_level=1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    load = load_avg()
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "sedic", "compress", str(src), "-o", str(out), "--no-semantics",
                           "--force"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    h, w = image.shape[:2]
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return dict(width=w, height=h, wall_s=wall, cpu_s=cpu_s,
                peak_mb=after.ru_maxrss / 1024, bytes=out.stat().st_size, bpp=8 * out.stat().st_size / (w * h),
                load=load, first_line=proc.stderr.splitlines()[0] if proc.stderr else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--kodak", type=int, default=24, help="first N Kodak images, both searches")
    ap.add_argument("--skip", type=int, default=0, help="start at the Kodak image after the first SKIP "
                    "(to split a run over processes; --merge joins their JSON files)")
    ap.add_argument("--merge", nargs="*", default=[], help="JSON files of earlier runs: print their table")
    ap.add_argument("--rates", default="0.01,0.02,0.03,0.05")
    ap.add_argument("--large", default="", help="MP:N, both searches")
    ap.add_argument("--large-new", default="", help="MP:N,..., today's search only")
    ap.add_argument("--large-rate", type=float, default=0.03)
    ap.add_argument("--cli", default="", help="MP,... : whole `sedic compress --no-semantics` runs")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        print(report([r for p in parts for r in p["rows"]], [c for p in parts for c in p["cli"]]))
        return
    paths = sorted(Path(args.data).glob("kodim*.png"))
    rates = [float(r) for r in args.rates.split(",") if r]
    rows, cli_rows = [], []
    for path in paths[args.skip: args.skip + args.kodak]:
        image = np.asarray(Image.open(path).convert("RGB"))
        for rate in rates:
            rows.append(compare(path.stem, image, rate, True))
            r = rows[-1]
            print(f"{r['image']} {rate}: new {r['new_s']:.2f} s {r['new_psnr']:.3f} dB, old {r['old_s']:.2f} s "
                  f"{r['old_psnr']:.3f} dB (load {r['load_after']:.1f})", file=sys.stderr, flush=True)
    for spec, both in ((args.large, True), (args.large_new, False)):
        for item in filter(None, spec.split(",")):
            mp, n = item.split(":")
            for path in paths[: int(n)]:
                image = upscaled(path, float(mp))
                rows.append(compare(f"{path.stem}@{mp}MP", image, args.large_rate, both))
                r = rows[-1]
                print(f"{r['image']}: new {r['new_s']:.1f} s" + (f", old {r['old_s']:.1f} s" if both else "")
                      + f" (load {r['load_after']:.1f})", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for mp in filter(None, args.cli.split(",")):
            cli_rows.append(cli_run(upscaled(paths[0], float(mp)), Path(tmp)))
            print(cli_rows[-1], file=sys.stderr, flush=True)
    print(report(rows, cli_rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "cli": cli_rows}, indent=1))


def report(rows: list[dict], cli_rows: list[dict]) -> str:
    import PIL

    lines = [f"Pillow {PIL.__version__}, {os.cpu_count()} cores; load average printed per group (shared machine: "
             f"wall times are noisy, CPU = process time)", "",
             "| images | rate | n | exhaustive wall s | new wall s | wall ratio | CPU ratio | PSNR exhaustive | "
             "PSNR new | mean loss dB | max loss dB | all fit | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in rows:
        kind = "Kodak" if "@" not in r["image"] else f"{r['width']}x{r['height']} ({r['image'].split('@')[1]})"
        groups.setdefault((kind, r["rate"]), []).append(r)
    for (kind, rate), rs in groups.items():
        both = [r for r in rs if "old_s" in r]
        fit = all(r["new_bytes"] <= r["budget"] and r.get("old_bytes", 0) <= r["budget"] for r in rs)
        load = f"{min(r['load_before'] for r in rs):.1f}-{max(r['load_after'] for r in rs):.1f}"
        new_s = np.mean([r["new_s"] for r in rs])
        if both:
            old_s = np.mean([r["old_s"] for r in both])
            loss = [r["old_psnr"] - r["new_psnr"] for r in both]
            lines.append(f"| {kind} | {rate} | {len(rs)} | {old_s:.2f} | {new_s:.2f} | "
                         f"{sum(r['new_s'] for r in both) / sum(r['old_s'] for r in both):.3f} | "
                         f"{sum(r['new_cpu_s'] for r in both) / sum(r['old_cpu_s'] for r in both):.3f} | "
                         f"{np.mean([r['old_psnr'] for r in both]):.3f} | "
                         f"{np.mean([r['new_psnr'] for r in both]):.3f} | "
                         f"{np.mean(loss):+.4f} | {np.max(loss):+.3f} | {fit} | {load} |")
        else:
            lines.append(f"| {kind} | {rate} | {len(rs)} | - | {new_s:.2f} | - | - | - | "
                         f"{np.mean([r['new_psnr'] for r in rs]):.3f} | - | - | {fit} | {load} |")
    if cli_rows:
        lines += ["", "| `sedic compress --no-semantics` | wall s | CPU s | peak MB | bpp | load |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c['width']}x{c['height']} | {c['wall_s']:.1f} | {c['cpu_s']:.1f} | {c['peak_mb']:.0f} | "
                  f"{c['bpp']:.4f} | {c['load']:.1f} |" for c in cli_rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
