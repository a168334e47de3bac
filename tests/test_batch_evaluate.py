"""`sedic evaluate` with the batch executor's checks (issue 11 item 14): a device that is not
there fails at once in one line, and a failure caused by the run's options is never cached."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sedic.errors import ModelUnavailableError
from sedic.evaluation.baselines import Encoded
from sedic.evaluation.methods import Method
from sedic.evaluation.metrics import MetricSuite, psnr
from sedic.evaluation.runner import Evaluation, list_images


@pytest.fixture
def dataset(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    y, x = np.mgrid[0:40, 0:56]
    Image.fromarray(np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)).save(d / "a.png")
    return d


def test_absent_cuda_or_unknown_device_fails_fast_in_one_line(dataset, tmp_path, capsys):
    import torch

    from sedic.cli import main

    out = tmp_path / "results"
    base = ["evaluate", str(dataset), "--out", str(out), "--bpp", "0.5", "--profile", "test", "--metrics", "psnr",
            "--baselines", "jpeg", "--no-progress"]
    bad = ["banana", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for device in bad:
        assert main([*base, "--device", device]) == 2, device
        err = capsys.readouterr().err
        assert err.startswith("sedic: error:") and err.count("\n") == 1 and repr(device) in err
    assert not out.exists()  # nothing computed, nothing cached


class Flaky(Method):
    """Encodes like a coarse quantiser; fails with an environment error while `broken` is set."""

    name, ext, file_key = "m", ".raw", "m"

    def __init__(self, broken):
        self.broken = broken
        self.calls = 0

    def encode(self, image, target_bpp, stem):
        self.calls += 1
        if self.broken:
            raise ModelUnavailableError("model xyz is not in the cache (offline)")
        return Encoded((image // 32 * 32).tobytes(), {})

    def decode(self, data, size, info):
        w, h = size
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)


def test_failure_from_the_environment_is_not_cached(dataset, tmp_path):
    out = tmp_path / "out"
    images = list_images(dataset)

    def run(method):
        return Evaluation(out, [method], MetricSuite(image={"psnr": lambda r, d, text=None: psnr(r, d)}), [0.5],
                          progress=False).run(images)

    first = run(Flaky(broken=True))
    assert first.rows[0]["status"] == "failed" and "not in the cache" in first.rows[0]["error"]
    fixed = Flaky(broken=False)
    second = run(fixed)  # same options, the environment fixed: tried again, not served from the cache
    assert fixed.calls == 1 and second.rows[0]["status"] == "ok"
    again = Flaky(broken=False)
    run(again)
    assert again.calls == 0  # a success is cached as before


def _cli_run(dataset, out, extra, capsys):
    """`sedic evaluate` through the real CLI: exit code, results.csv rows (timings dropped),
    summary.json and the error lines on stderr."""
    import csv
    import json

    from sedic.cli import main

    code = main(["evaluate", str(dataset), "--out", str(out), "--bpp", "4", "6", "--profile", "test",
                 "--metrics", "psnr", "--methods", "none", "--baselines", "jpeg", "--no-progress", *extra])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sedic: error:")]
    with open(out / "results.csv") as fh:
        rows = [{k: v for k, v in r.items() if k not in ("encode_s", "search_s", "decode_s")}
                for r in csv.DictReader(fh)]
    return code, rows, json.loads((out / "summary.json").read_text()), errors


def test_an_unreadable_image_is_failed_rows_and_exit_2_in_process_and_on_workers(dataset, tmp_path, capsys,
                                                                                  monkeypatch):
    """One executor, one result: the broken image is recorded (failed rows with the one-line reason,
    in the CSV and the summary), the others run, one error line, exit 2 -- here and on workers
    (the dataset given as a relative path: the error names the file the same way in both)."""
    monkeypatch.chdir(tmp_path)
    y, x = np.mgrid[0:40, 0:56]
    Image.fromarray(np.stack([x * 3, y * 2, 255 - x], -1).astype(np.uint8)).save(dataset / "c.png")
    (dataset / "b.png").write_bytes(b"this is not a PNG")
    runs = {key: _cli_run(dataset.relative_to(tmp_path), tmp_path / key, extra, capsys)
            for key, extra in {"here": [], "workers": ["--workers", "2"]}.items()}
    for key, (code, rows, summary, errors) in runs.items():
        assert code == 2, key
        assert [(r["image"], r["target_bpp"], r["status"]) for r in rows] == [
            ("a", "4", "ok"), ("a", "6", "ok"), ("b", "4", "failed"), ("b", "6", "failed"),
            ("c", "4", "ok"), ("c", "6", "ok")], key
        broken = [r for r in rows if r["image"] == "b"]
        assert all("b.png: cannot read image" in r["error"] and "\n" not in r["error"] for r in broken), key
        assert [(f["image"], f["target_bpp"]) for f in summary["failures"]] == [("b", 4.0), ("b", 6.0)], key
        assert summary["failures"][0]["error"] == broken[0]["error"], key
        assert len(errors) == 1 and "b.png: cannot read image" in errors[0], (key, errors)
        assert (tmp_path / key / "table.md").is_file(), key
    assert runs["workers"][1] == runs["here"][1]  # the same rows, error text included
    assert runs["workers"][2]["failures"] == runs["here"][2]["failures"]
    assert runs["workers"][3] == runs["here"][3]  # the same error line


def test_a_rate_a_method_cannot_meet_is_a_result_not_a_failure(dataset, tmp_path, capsys):
    """jpeg cannot reach 0.001 bpp on a 56x40 image: a failed row in the table (ok/images), but
    not a failed image: no error line, exit 0."""
    from sedic.cli import main

    out = tmp_path / "o"
    assert main(["evaluate", str(dataset), "--out", str(out), "--bpp", "0.001", "--profile", "test",
                 "--metrics", "psnr", "--methods", "none", "--baselines", "jpeg", "--no-progress"]) == 0
    assert "sedic: error:" not in capsys.readouterr().err
    import json

    failures = json.loads((out / "summary.json").read_text())["failures"]
    assert len(failures) == 1 and failures[0]["error"].startswith(("RateError", "RateUnmet"))
