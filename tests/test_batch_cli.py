"""`sedic batch` as a user runs it: progress in a pipe, --best-effort. No Ray needed.

Two tiny images coded without semantics (reference only: no model), one local worker process.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from sedic.batch import LocalExecutor, compress_dir
from sedic.batch.progress import LineProgress
from sedic.cli import main


@pytest.fixture(scope="module")
def two_images(kodak_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("two")
    for name in ("kodim03", "kodim23"):
        Image.open(kodak_dir / f"{name}.png").convert("RGB").resize((96, 64), Image.LANCZOS).save(d / f"{name}.png")
    return d


def test_progress_in_a_pipe_is_whole_lines_with_the_last_printed_once(two_images, tmp_path, capsys):
    # capsys: stderr is not a terminal, as in `sedic batch ... 2>&1 | tee log`
    with LocalExecutor(1) as ex:
        summary = compress_dir(two_images, tmp_path / "out", bpp=0.5, profile="test", executor=ex, progress=True)
    assert summary.exit_code == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # no carriage-return redraws left in the log
    assert sum("2/2" in line for line in err.splitlines()) == 1, err
    assert "batch compress: 2/2 (100%)" in err


def test_line_progress_throttles_and_gives_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(total=4, desc="batch decompress", file=out, every=10, clock=lambda: now[0])
    for t in (2.0, 12.0, 13.0, 16.0):
        now[0] = t
        bar.update()
    bar.set_postfix(failed=1)
    bar.close()
    lines = out.getvalue().splitlines()
    # 1/4 at 2 s: under 10 s since the start, not printed; 2/4 at 12 s printed; 3/4 at 13 s not; 4/4 always
    assert lines == ["batch decompress: 2/4 (50%) 6.0 s/img, ETA 0:12, 0:12 elapsed",
                     "batch decompress: 4/4 (100%) 4.0 s/img, 0:16 elapsed"]


def test_best_effort_writes_the_smallest_file_instead_of_failing(two_images, tmp_path, capsys):
    base = ["batch", "compress", str(two_images), "--bpp", "0.01", "--profile", "test", "--no-progress",
            "--workers", "1"]
    assert main(base + ["-o", str(tmp_path / "strict")]) == 2
    assert "pass --best-effort" in capsys.readouterr().err
    assert main(base + ["-o", str(tmp_path / "lax"), "--best-effort"]) == 0
    records = [json.loads(line) for line in (tmp_path / "lax" / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all("best effort" in " ".join(r["warnings"]) for r in records)
    assert json.loads((tmp_path / "lax" / "batch.json").read_text())["options"]["best_effort"] is True


def test_evaluate_progress_in_a_pipe_is_whole_lines(two_images, tmp_path, capsys):
    argv = ["evaluate", str(two_images), "--out", str(tmp_path / "ev"), "--profile", "test", "--bpp", "0.5",
            "--methods", "none", "--baselines", "jpeg", "--metrics", "psnr", "--published", "never"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert sum("2/2" in line for line in err.splitlines()) == 1, err


def test_an_unreachable_ray_address_fails_at_once(two_images, tmp_path):
    # ray.init waited for minutes on an address nothing answers; port 1 of localhost is closed
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "sedic", "batch", "compress", str(two_images), "-o",
                          str(tmp_path / "out"), "--profile", "test", "--no-progress", "--ray=127.0.0.1:1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("sedic: error: cannot reach Ray at 127.0.0.1:1:"), run.stderr
    assert "Traceback" not in run.stderr


def test_the_last_progress_line_counts_every_failure(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes(b"not an image")
    with LocalExecutor(1) as ex:
        summary = compress_dir(src, tmp_path / "out", bpp=0.5, profile="test", executor=ex, progress=True)
    assert summary.failed == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("batch compress: 2/2")]
    assert len(lines) == 1 and lines[0].endswith("failed=2"), lines
