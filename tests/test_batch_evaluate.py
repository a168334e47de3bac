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
