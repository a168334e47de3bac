import os
from pathlib import Path

import numpy as np
import pytest

# Tests never touch the network: a hub lookup would hang, then fail.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "datasets" / "kodak"
EXAMPLES = REPO / "examples" / "semantics"


def require_data(path: Path) -> Path:
    """`path` if it exists; else skip the test (a failure where SEDIC_REQUIRE_DATA=1, see below)."""
    if path.exists():
        return path
    pytest.skip(f"{path} not found (the shared data lives at ../shared beside the repository)")


# Where SEDIC_REQUIRE_DATA=1 (CI: the shared data at ../shared, every extra installed), a skipped
# test is a failure unless its reason names one of these: a missing data set, plugin or package
# must not pass as green. Allowed: the opt-in slow tests, a GPU case that cannot fail here.
ALLOWED_SKIPS = ("SEDIC_SLOW_TESTS", "exists on this machine")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if not report.skipped or hasattr(report, "wasxfail") or os.environ.get("SEDIC_REQUIRE_DATA") != "1":
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped where SEDIC_REQUIRE_DATA=1 (CI must not skip): {reason}"


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    return require_data(KODAK)


@pytest.fixture(scope="session")
def small_image() -> np.ndarray:
    """A deterministic 96x64 photo-like crop (Kodak when present, else a synthetic pattern)."""
    path = KODAK / "kodim23.png"
    if path.is_file():
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))[200:264, 300:396].copy()
    y, x = np.mgrid[0:64, 0:96]
    return np.stack([(x * 2) % 256, (y * 3) % 256, ((x + y) * 5) % 256], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def bb():
    """The tiny random-weight decoder backbone (profile `test`'s; get_backbone caches it per process).

    One torch thread meanwhile: on a loaded 2-core runner, OpenMP's spinning threads make tiny
    convolutions 50x slower."""
    import torch

    from sedic.restoration.pipeline import get_backbone
    from sedic.restoration.settings import DecoderSettings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    settings = DecoderSettings(backbone="tiny", base_model="", controlnet="", controlnet_file="")
    yield get_backbone(settings, torch.device("cpu"), torch.float32)
    torch.set_num_threads(threads)
