"""Finding learned-metric weights offline (the CompressAI baselines' zoo weights are found by
sedic.models, as `sedic models` finds them).

Nothing here downloads: a weight is found in the user's `--weights-dir`, in the torch hub cache
(`torch.hub.get_dir()/checkpoints`, where torchvision/torch-fidelity/CompressAI put downloads), or
in a package that ships it (the LPIPS linear layers, the DISTS alpha/beta). When none has it the
caller reports the metric as skipped with the paths that were tried.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

# File names as the upstream downloaders save them, so a populated hub cache just works.
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
VGG16_FILE = "vgg16-397923af.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"   # torch-fidelity's FID Inception
LPIPS_LIN_FILES = {"alex": "lpips-v0.1-alex.pth", "vgg": "lpips-v0.1-vgg.pth"}
DISTS_FILE = "dists-weights.pt"


class WeightsNotFound(Exception):
    """Raised with a one-line reason naming what was looked for and where."""


def hub_checkpoint_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_file(name: str, weights_dir: str | os.PathLike | None, extra: Sequence[Path] = ()) -> Path:
    candidates = []
    if weights_dir is not None:
        candidates.append(Path(weights_dir) / name)
    candidates.append(hub_checkpoint_dir() / name)
    candidates.extend(extra)
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsNotFound(f"{name} not found (looked in: {', '.join(str(p.parent) for p in candidates)})")


def _package_file(package: str, *parts: str) -> list[Path]:
    """A data file shipped inside an installed package, without importing it (DISTS_pytorch
    downloads VGG on import-time construction; we only want its file)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)]


def lpips_lin_file(net: str, weights_dir) -> Path:
    return find_file(LPIPS_LIN_FILES[net], weights_dir, _package_file("lpips", "weights", "v0.1", f"{net}.pth"))


def dists_file(weights_dir) -> Path:
    return find_file(DISTS_FILE, weights_dir, _package_file("DISTS_pytorch", "weights.pt"))


def load_state_dict(path: Path) -> dict:
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd
