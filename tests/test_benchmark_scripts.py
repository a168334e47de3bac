"""The reference benchmarks run end to end on a small image (they broke once, unnoticed, when the
codec interface grew abstract methods their wrapper codecs lacked)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_reference_rate_benchmark_runs_and_reports_the_refinement(tmp_path):
    with Image.open(REPO / "examples" / "kodim23.png") as im:
        im.convert("RGB").resize((264, 176), Image.LANCZOS).save(tmp_path / "kodim01.png")
    rows = tmp_path / "rows.json"
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reference_rate.py"), "--data", str(tmp_path),
                          "--rates", "0.1", "--workers", "1", "--json", str(rows)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(rows.read_text())
    by = {r["codec"]: r for r in got}
    assert set(by) == {"sedic-avif", "sedic-avif+refine", "avif-file", "webp-file"}
    budget = int(0.1 * 264 * 176 / 8)
    assert all(r["fits"] and r["bytes"] <= budget for r in got)
    assert by["sedic-avif+refine"]["psnr"] >= by["sedic-avif"]["psnr"]
    # a whole AVIF file is the same encode plus its container: larger at the same setting
    assert by["sedic-avif"]["saved"] > 0
    assert np.isfinite([r["psnr"] for r in got]).all()
    assert "| 0.1 | sedic-avif+refine |" in out.stdout
