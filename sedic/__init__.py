"""sedic: extremely low-bitrate image compression with semantics and a diffusion decoder (SEDIC).

The Python API mirrors the command line:

    data = sedic.compress("photo.png", bpp=0.03, semantics="photo.json")
    image = sedic.decompress(data)            # uint8 (H, W, 3)
    info = sedic.inspect(data)                # sizes and bits per stream
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import codec
from .config import Profile, check_effort, get_profile
from .devices import resolve_device
from .errors import BitstreamError, InputError, ModelUnavailableError, RateError, SedicError, SedicWarning
from .imageio import load_image
from .schedule import ScheduleOverrides
from .semantics import SemanticObject, Semantics

__version__ = "0.1.0"
__all__ = ["compress", "decompress", "inspect", "analyze", "Semantics", "SemanticObject", "SedicError",
           "BitstreamError", "InputError", "RateError", "ModelUnavailableError", "SedicWarning", "Profile",
           "ScheduleOverrides"]


def _as_image(image) -> np.ndarray:
    """A path, the bytes of a PNG/JPEG/WebP file, a PIL image or a uint8 (H, W, 3) array, as uint8 RGB
    (alpha dropped and grayscale expanded with a warning, as the CLI reads files)."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _image_from_bytes(bytes(image))
    if isinstance(image, Image.Image):
        from .imageio import read_opened

        return read_opened(image, "image")  # as a file: upright by its EXIF orientation, sRGB
    if isinstance(image, np.ndarray):
        return image
    raise InputError(f"image must be a path, the bytes of an image file, a PIL image or a uint8 (H, W, 3) array; "
                     f"got {type(image).__name__}")


def _image_from_bytes(data: bytes) -> np.ndarray:
    """The bytes of an image file, read as the file would be (the one loading path of imageio)."""
    import io

    from PIL import Image, UnidentifiedImageError

    from .imageio import ACCEPTED_FORMATS, ACCEPTED_NAMES, open_image, read_opened

    try:
        img = open_image(io.BytesIO(data), "image")
        with img:
            if img.format not in ACCEPTED_FORMATS:
                raise InputError(f"image bytes: unsupported image format {img.format} (use {ACCEPTED_NAMES})")
            return read_opened(img, "image")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"image bytes ({len(data)}) are not a readable {ACCEPTED_NAMES} image: {exc}") from None


def _check_flag(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")


def _as_file_bytes(data) -> bytes:
    """The bytes of a .sedic file, given them or its path (as compress takes an image's path)."""
    if isinstance(data, (str, os.PathLike)):
        from .bitstream import read_file

        return read_file(data)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"expected the bytes of a .sedic file or its path, got {type(data).__name__}")
    return bytes(data)


def analyze(image, *, profile: str | Profile | None = None, device: str | None = None) -> Semantics:
    """Turn an image into its semantics (descriptions and masks) with the profile's models."""
    _check_device(device)
    return _analyze(_as_image(image), profile, device)


def _check_device(device: str | None) -> None:
    if device is not None:
        resolve_device(device)  # a bad or absent device fails before any work


def _analyze(pixels: np.ndarray, profile: str | Profile | None, device: str | None) -> Semantics:
    from .analysis import analyze as run_analysis

    chosen = get_profile(profile)
    # the name as given ("my.json" is what `sedic models download` takes), else the profile's own
    name = profile if isinstance(profile, str) else chosen.name
    return run_analysis(pixels, chosen.analysis, device=device, profile=name)


def compress(image, *, bpp: float | None = 0.03, reference_bpp: float | None = None,
             semantics: Semantics | str | os.PathLike | None = None, analyze: bool = True,
             profile: str | Profile | None = None, best_effort: bool = False, seed: int = 0,
             schedule: dict | ScheduleOverrides | None = None, device: str | None = None,
             effort: int | None = None, progress=None) -> bytes:
    """Compress an image (path or uint8 array) into .sedic bytes.

    semantics: a Semantics object or a path to its JSON; None with analyze=True runs the profile's
    analysis models; None with analyze=False codes the reference alone.
    schedule: decoder steps/guidance stored in the file, e.g. {"object_steps": 8, "final_cfg": 6.5}
    or ScheduleOverrides(object_steps=8, final_cfg=6.5) (its fields are the names a dict may use).
    effort: the AVIF reference's encoder effort after the rate search, 0 (none), 1 (speed-2
    re-encodes filling the budget) or 2 (also neighbouring sizes and pre-filtered downscales);
    None takes the profile's (`reference.effort`, 2). Encoder only: the file decodes the same way.
    progress(text), when given, hears what the reference search is doing.
    """
    # options first: a bad one fails before the analysis, not after it
    _check_flag("analyze", analyze)
    _check_flag("best_effort", best_effort)
    if schedule is not None and not isinstance(schedule, (dict, ScheduleOverrides)):
        raise InputError(f"schedule must be a dict such as {{'object_steps': 8}} or a ScheduleOverrides, "
                         f"got {type(schedule).__name__}")
    if semantics is not None and not isinstance(semantics, (Semantics, str, os.PathLike)):
        raise InputError(f"semantics must be a Semantics, the path of its JSON file, or None; "
                         f"got {type(semantics).__name__}")
    codec.settings_section(profile, bpp=bpp, reference_bpp=reference_bpp, seed=seed,
                           overrides=schedule)
    coding = get_profile(profile)
    if effort is not None:
        check_effort(effort)
        coding = replace(coding, reference=replace(coding.reference, effort=effort))
    _check_device(device)
    pixels = _as_image(image)
    if isinstance(semantics, (str, os.PathLike)):
        semantics = Semantics.load(Path(semantics))
    elif semantics is None and analyze:
        semantics = _analyze(pixels, profile, device)
    return codec.encode(pixels, semantics, coding, bpp=bpp, reference_bpp=reference_bpp,
                        best_effort=best_effort, seed=seed, overrides=schedule, progress=progress)


def decompress(data: bytes | str | os.PathLike, *, profile: str | Profile | None = None, stages: int | None = None,
               device: str | None = None, progress=None, on_step=None, on_image=None) -> np.ndarray:
    """Decode .sedic bytes (or a .sedic file's path) to uint8 (H, W, 3) at the original size;
    stages=0 gives the preview.

    progress(stage, stages, label) before each decoder stage; on_step(stage, stages, step, steps)
    after each denoising step; on_image(stages_value, image) with the preview (0) and every stage's
    image as it is ready (each equal to a decode with stages=stages_value).
    """
    _check_device(device)
    if stages is not None and (not isinstance(stages, (int, np.integer)) or isinstance(stages, bool)):
        raise InputError(f"stages must be an integer or None, got {stages!r}")
    return codec.decode(_as_file_bytes(data), profile, stages=stages, device=device, progress=progress,
                        on_step=on_step, on_image=on_image)


def inspect(data: bytes | str | os.PathLike) -> dict:
    """Width, height, bytes, bpp, bits per stream and the decoded texts of a .sedic file."""
    return codec.inspect(_as_file_bytes(data))
