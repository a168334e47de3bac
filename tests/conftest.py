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


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    if not KODAK.is_dir():
        pytest.skip(f"Kodak images not found at {KODAK}")
    return KODAK


@pytest.fixture(scope="session")
def small_image() -> np.ndarray:
    """A deterministic 96x64 photo-like crop (Kodak when present, else a synthetic pattern)."""
    path = KODAK / "kodim23.png"
    if path.is_file():
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))[200:264, 300:396].copy()
    y, x = np.mgrid[0:64, 0:96]
    return np.stack([(x * 2) % 256, (y * 3) % 256, ((x + y) * 5) % 256], -1).astype(np.uint8)
