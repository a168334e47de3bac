"""Throughput of `sedic batch` locally and on Ray, on the same cores (issue 10's goal: Ray within 15 %).

Each round compresses a folder (the test profile's analysis on every image by default, then the
coding) and decodes stage 0 (the previews), once with the local executor (worker processes) and
once on a local Ray started with the same number of CPUs. Rounds alternate the order (local
first, then Ray first...) so that a machine that gets busier or quieter favours neither. The
times are the batch runs' own (workers' start-up and model loading included; Ray's start-up is
reported apart). The outputs of both executors are checked to be byte-identical.

    python benchmarks/batch_throughput.py                        # 24 Kodak images, 2 rounds
    python benchmarks/batch_throughput.py --images 6 --rounds 1 --json /tmp/batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "datasets" / "kodak"


def one_run(kind: str, src: Path, work: Path, args) -> dict:
    from sedic.batch import LocalExecutor, RayExecutor, compress_dir, decompress_dir

    out = work / kind
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    if kind == "local":
        ex = LocalExecutor(args.cpus, threads=1)
    else:
        ex = RayExecutor(None, num_cpus=args.cpus, threads=1)
    ready = time.perf_counter() - start
    try:
        c = compress_dir(src, out / "sedic", bpp=args.bpp, analyze=not args.no_analyze, profile="test", executor=ex,
                         progress=False, log=lambda m: None)
        d = decompress_dir(out / "sedic", out / "png", stages=0, executor=ex, progress=False, log=lambda m: None)
    finally:
        ex.close()
    if c.failed or d.failed:
        raise SystemExit(f"{kind}: {c.failed} compress and {d.failed} decompress failures")
    total = c.seconds + d.seconds
    return {"executor": kind, "describe": ex.describe(), "startup_s": ready, "compress_s": c.seconds,
            "decompress_s": d.seconds, "total_s": total, "images_per_hour": c.done * 3600 / total}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, default=KODAK)
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs for both executors (default: all)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bpp", type=float, default=0.03)
    p.add_argument("--no-analyze", action="store_true", help="code the reference alone (no analysis stage)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    images = sorted(args.dataset.glob("*.png"))[: args.images]
    if not images:
        raise SystemExit(f"no images in {args.dataset}")

    work = Path(tempfile.mkdtemp(prefix="sedic-batch-bench-"))
    src = work / "in"
    src.mkdir()
    for path in images:
        os.symlink(path.resolve(), src / path.name)
    runs = []
    for r in range(args.rounds):
        order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
        for kind in order:
            runs.append({"round": r, **one_run(kind, src, work, args)})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        for sub, suffix in (("sedic", ".sedic"), ("png", ".png")):
            a = {f.name: f.read_bytes() for f in (work / "local" / sub).glob(f"*{suffix}")}
            b = {f.name: f.read_bytes() for f in (work / "ray" / sub).glob(f"*{suffix}")}
            if a != b or len(a) != len(images):
                raise SystemExit(f"round {r}: local and Ray {sub} outputs differ")

    summary = {}
    for kind in ("local", "ray"):
        mine = [x for x in runs if x["executor"] == kind]
        summary[kind] = {k: statistics.median(x[k] for x in mine)
                         for k in ("startup_s", "compress_s", "decompress_s", "total_s", "images_per_hour")}
    ratio = summary["ray"]["images_per_hour"] / summary["local"]["images_per_hour"]
    result = {"command": "python " + " ".join(sys.argv), "images": len(images), "cpus": args.cpus,
              "analysis": not args.no_analyze, "bpp": args.bpp,
              "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
                         f"load average at the end {os.getloadavg()[0]:.1f}",
              "runs": runs, "median": summary, "ray_over_local": ratio, "identical_outputs": True}
    print("| executor | start-up s | compress s | stage-0 decode s | images/hour |\n|---|---|---|---|---|")
    for kind in ("local", "ray"):
        s = summary[kind]
        print(f"| {kind} | {s['startup_s']:.1f} | {s['compress_s']:.1f} | {s['decompress_s']:.1f} | "
              f"{s['images_per_hour']:.0f} |")
    print(f"Ray / local throughput: {ratio:.3f} (medians of {args.rounds} round(s); outputs byte-identical)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
