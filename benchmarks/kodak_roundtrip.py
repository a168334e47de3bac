"""Round-trip every image of a folder through the `sedic` command line and check the files.

For each image: `sedic compress` (reference only, or with examples/semantics/<stem>.json when it
exists), `sedic inspect --json` (streams must add up to the file size), `sedic decompress`
(--stages 0 for the preview; all stages with --full, profile test = tiny random models). Prints a
markdown table: bytes, bpp, bits per stream, preview PSNR, seconds.

    python benchmarks/kodak_roundtrip.py ../shared/datasets/kodak --bpp 0.02 --profile test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SEMANTICS = HERE.parent / "examples" / "semantics"


def sedic(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "sedic", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sedic {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--bpp", type=float, default=0.02)
    parser.add_argument("--profile", default="test")
    parser.add_argument("--full", action="store_true", help="also decode all stages for images with semantics")
    args = parser.parse_args()

    print("| image | semantics | bytes | bpp | reference | text | masks | header | preview PSNR | encode s "
          "| decode s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(args.dataset.glob("*.png")):
            out, rec = Path(tmp) / f"{path.stem}.sedic", Path(tmp) / f"{path.stem}.png"
            sem = SEMANTICS / f"{path.stem}.json"
            extra = ["--semantics", str(sem)] if sem.is_file() else ["--no-semantics"]
            t0 = time.perf_counter()
            sedic("compress", str(path), "-o", str(out), "--bpp", str(args.bpp), "--profile", args.profile, *extra)
            t1 = time.perf_counter()
            info = json.loads(sedic("inspect", str(out), "--json"))
            stages = [] if (args.full and sem.is_file()) else ["--stages", "0"]
            sedic("decompress", str(out), "-o", str(rec), *stages)
            t2 = time.perf_counter()
            original = np.asarray(Image.open(path).convert("RGB"))
            preview_path = rec
            if not stages:
                preview_path = Path(tmp) / f"{path.stem}.preview.png"
                sedic("decompress", str(out), "-o", str(preview_path), "--stages", "0")
            preview = np.asarray(Image.open(preview_path))
            s = info["streams"]
            ok = (sum(s.values()) == 8 * out.stat().st_size == 8 * info["bytes"]
                  and info["bpp"] <= args.bpp and preview.shape == original.shape
                  and np.asarray(Image.open(rec)).shape == original.shape)
            failures += not ok
            print(f"| {path.stem} | {'yes' if sem.is_file() else 'no'} | {info['bytes']} | {info['bpp']:.4f} | "
                  f"{s['reference']} | {s['text']} | {s['masks']} | {s['header']} | {psnr(preview, original):.2f} | "
                  f"{t1 - t0:.1f} | {t2 - t1:.1f} |{'' if ok else ' FAILED'}", flush=True)
    print(f"\n{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
