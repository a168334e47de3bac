"""Does a second process start warm from the on-disk compile cache? A check that runs on a CPU.

Decodes a small synthetic image with 3 objects on the tiny random backbone (profile `test`'s
models), eager and with `compile="default"` (inductor), in two fresh processes that share one new
TORCHINDUCTOR_CACHE_DIR: the first compiles cold, the second loads what the first left. Reports
the first compiled decode of each process, a warm one, and the largest pixel difference from
eager mode.

    python benchmarks/compile_cache.py                     # fused schedule
    python benchmarks/compile_cache.py --schedule sequential
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(schedule: str) -> dict:
    from dataclasses import replace

    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sedic.restoration import restore
    from sedic.restoration.pipeline import get_backbone
    from sedic.restoration.settings import DecoderSettings, PipelineSettings
    from sedic.semantics import SemanticObject, Semantics

    torch.set_num_threads(1)
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    objs = []
    for i in range(3):
        m = np.zeros((6, 8), bool)
        m[i:i + 4, 2 * i:2 * i + 4] = True
        objs.append(SemanticObject(["dog", "ball", "tree"][i], f"a detailed thing {i}", m))
    sem = Semantics("a photo of a dog with a ball in a garden", objs)
    settings = DecoderSettings(backbone="tiny", base_model="", controlnet="", controlnet_file="",
                               object_steps=2, final_steps=3, schedule=schedule)
    bb = get_backbone(settings, torch.device("cpu"), torch.float32)
    eager = restore(img, sem, settings, seed=1, backbone=bb)
    compiled = replace(settings, pipeline=PipelineSettings(compile="default"))
    t = time.perf_counter()
    first = restore(img, sem, compiled, seed=1, backbone=bb)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    again = restore(img, sem, compiled, seed=1, backbone=bb)
    warm_s = time.perf_counter() - t
    return {"first_compiled_decode_s": round(first_s, 1), "warm_decode_s": round(warm_s, 2),
            "max_abs_diff_vs_eager": int(np.abs(eager.astype(int) - first).max()),
            "repeat_identical": bool(np.array_equal(first, again))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedule", default="fused", choices=["sequential", "fused"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.schedule)))
        return 0
    cache = tempfile.mkdtemp(prefix="sedic-compile-cache-")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, HF_HUB_OFFLINE="1")
    result = {"schedule": args.schedule, "torch": __import__("torch").__version__}
    for run in ("cold cache", "warm cache"):
        proc = subprocess.run([sys.executable, __file__, "--child", "--schedule", args.schedule], env=env,
                              capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        result[run] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
