"""Reading input images and writing outputs safely (never overwrite without force; atomic)."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError, SedicWarning

ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP"}


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG, JPEG or WebP as uint8 RGB (H, W, 3); alpha is dropped and 16-bit reduced, with a warning."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            fmt = img.format
            if fmt not in ACCEPTED_FORMATS:
                raise InputError(f"{path}: unsupported image format {fmt} (use PNG, JPEG or WebP)")
            img.load()
            return image_to_array(img, str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected an image") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read image: {exc}") from None


def image_to_array(img: Image.Image, label: str = "image") -> np.ndarray:
    """Normalise a PIL image to uint8 RGB, warning about what is lost."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "RGB;16", "RGBA;16") or img.mode.startswith("I;16"):
        warnings.warn(f"{label}: 16-bit image converted to 8 bits", SedicWarning)
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        warnings.warn(f"{label}: alpha channel dropped", SedicWarning)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{label}: image is empty")
    return arr


def check_writable(path: str | os.PathLike, force: bool) -> None:
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} exists; use --force to overwrite")
    if path.is_dir():
        raise InputError(f"{path} is a directory")
    if not path.parent.exists():
        raise InputError(f"{path.parent}: no such directory")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, force: bool = False) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves a half-written output."""
    path = Path(path)
    check_writable(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if not force and path.exists():  # appeared meanwhile: keep the other writer's file
            raise InputError(f"{path} exists; use --force to overwrite")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_image(path: str | os.PathLike, image: np.ndarray, force: bool = False) -> None:
    """Save uint8 RGB as PNG (or the format the suffix names), atomically."""
    import io

    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: output must end in .png, .jpg or .webp")
    buf = io.BytesIO()
    save_kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "WEBP":
        save_kwargs = {"lossless": True}
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, fmt, **save_kwargs)
    atomic_write_bytes(path, buf.getvalue(), force=force)
