"""Reading input images and writing outputs safely (never overwrite without force; atomic)."""

from __future__ import annotations

import io
import os
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from . import bitstream as bs
from .errors import BitstreamError, InputError, SedicWarning

try:  # phones save HEIC; pillow-heif (in the [eval]/[all] extras) teaches Pillow to read it
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_READABLE = True
except ImportError:  # pragma: no cover - depends on the installed extras
    HEIF_READABLE = False

# AVIF is read by Pillow itself (libavif); HEIF needs pillow-heif.
ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP", "AVIF"} | ({"HEIF"} if HEIF_READABLE else set())
ACCEPTED_NAMES = "PNG, JPEG, WebP, AVIF" + (" or HEIC/HEIF" if HEIF_READABLE else "")

# Embedded profiles are converted with relative colorimetric intent: in-gamut colours keep their
# measured value (the usual choice for photos; display profiles rarely carry perceptual tables,
# so littleCMS would fall back to it anyway), out-of-gamut ones are clipped.
RENDERING_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _chunk_kind(exc: BaseException) -> str:
    """Which PNG chunk handler raised (Pillow's PngStream.chunk_<type>), from the traceback."""
    names = {"chunk_zTXt": "zTXt text", "chunk_iTXt": "iTXt text", "chunk_iCCP": "iCCP colour-profile",
             "chunk_tEXt": "tEXt text"}
    tb, kind = exc.__traceback__, None
    while tb is not None:
        kind = names.get(tb.tb_frame.f_code.co_name, kind)
        tb = tb.tb_next
    return kind or "text or colour-profile (zTXt, iTXt or iCCP)"


def chunk_bomb(exc: BaseException, label: str) -> InputError | None:
    """Pillow's refusal of a PNG whose text or ICC chunks inflate past its limits (a zTXt, iTXt or
    iCCP decompression bomb, or megabytes of text chunks) as the loader's one-line error; None for
    any other error. Pillow raises a plain ValueError for these, which callers would otherwise
    report as an unreadable image."""
    text = str(exc)
    if not isinstance(exc, ValueError):
        return None
    if "MAX_TEXT_CHUNK" in text:
        return InputError(f"{label}: PNG {_chunk_kind(exc)} chunk inflates past "
                          f"{PngImagePlugin.MAX_TEXT_CHUNK >> 20} MiB (a decompression bomb); refused")
    if "MAX_TEXT_MEMORY" in text:
        return InputError(f"{label}: PNG text chunks hold more than {PngImagePlugin.MAX_TEXT_MEMORY >> 20} MiB "
                          f"of text (a decompression bomb); refused")
    return None


def open_image(source: str | os.PathLike | io.BytesIO, label: str = "image") -> Image.Image:
    """Image.open, with Pillow's pixel-count warning silenced (the codec's own limit is checked in
    read_opened) and a PNG text/ICC chunk bomb refused with its own message. Other errors pass."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked
            return Image.open(source)
    except ValueError as exc:
        bomb = chunk_bomb(exc, label)
        if bomb is not None:
            raise bomb from None
        raise


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG, JPEG, WebP, AVIF or HEIC as uint8 RGB (H, W, 3), as a photo viewer shows it:
    turned upright by its EXIF orientation and converted to sRGB from its embedded colour profile.
    The declared size is checked before decoding; alpha is dropped and 16-bit reduced, with a warning."""
    path = Path(path)
    try:
        img = open_image(path, str(path))
        with img:
            fmt = img.format
            if fmt not in ACCEPTED_FORMATS:
                raise InputError(f"{path}: unsupported image format {fmt} (use {ACCEPTED_NAMES})")
            return read_opened(img, str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected an image") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image above the limit of {bs.MAX_PIXELS} pixels: {exc}") from None
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: cannot read image: {exc}{_heif_hint(path)}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image: {exc}") from None


def _heif_hint(path: Path) -> str:
    """Why a HEIC file is not identified when pillow-heif is missing."""
    if HEIF_READABLE:
        return ""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return ""
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1"):
        return " (HEIC/HEIF needs pillow-heif: pip install 'sedic[all]')"
    return ""


def check_declared_size(img: Image.Image, label: str = "image") -> None:
    """The codec's size limits on the size the file declares, before any pixel is decoded."""
    width, height = img.size
    try:
        bs.check_size(width, height)
    except BitstreamError as exc:
        raise InputError(f"{label}: {exc} (refused before decoding)") from None


def read_opened(img: Image.Image, label: str = "image") -> np.ndarray:
    """An opened, not yet loaded image as the uint8 RGB array a viewer shows. The one loading path
    of the CLI, the API, batch, evaluate and the server: size check, load, orientation, colour."""
    check_declared_size(img, label)
    warn_before_load(img, label)
    try:
        img.load()
    except ValueError as exc:  # text chunks after the pixels are read here
        bomb = chunk_bomb(exc, label)
        if bomb is not None:
            raise bomb from None
        raise
    upright = ImageOps.exif_transpose(img) if _orientation(img) not in (0, 1) else img
    return image_to_array(to_srgb(upright, label), label)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a corrupt EXIF block: keep the pixels as stored
        return 1


def to_srgb(img: Image.Image, label: str = "image") -> Image.Image:
    """Convert from the embedded ICC profile to sRGB (one warning when colours changed); images
    without a profile, or whose profile is sRGB up to rounding, come back unchanged."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    modes = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "L": "RGB"}
    if img.mode not in modes:
        warnings.warn(f"{label}: colour profile ignored for a {img.mode} image", SedicWarning, stacklevel=2)
        return img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        transform = ImageCms.buildTransform(source, _SRGB, img.mode, modes[img.mode], RENDERING_INTENT)
        if img.mode != "CMYK" and _is_identity(transform, img.mode):
            return img
        converted = ImageCms.applyTransform(img, transform)
        assert converted is not None  # None only for inPlace=True
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        warnings.warn(f"{label}: unreadable colour profile ignored ({exc}); pixels taken as sRGB", SedicWarning,
                      stacklevel=2)
        return img
    name = (ImageCms.getProfileDescription(source) or "embedded profile").strip()
    warnings.warn(f"{label}: converted from its colour profile ({name}) to sRGB", SedicWarning, stacklevel=2)
    return converted


def _is_identity(transform, mode: str) -> bool:
    """Whether a profile is sRGB in effect: no level of a 16^3 colour grid moves by more than 1."""
    levels = np.linspace(0, 255, 16).round().astype(np.uint8)
    if mode == "L":
        sample = Image.fromarray(levels[None, :])
    else:
        grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
        sample = Image.fromarray(grid)
        if mode == "RGBA":
            sample = sample.convert("RGBA")
    applied = ImageCms.applyTransform(sample, transform)
    assert applied is not None  # None only for inPlace=True
    moved = np.asarray(applied.convert("RGB"), np.int16)
    return int(np.abs(moved - np.asarray(sample.convert("RGB"), np.int16)).max()) <= 1


def warn_before_load(img: Image.Image, label: str = "image") -> None:
    """Warn about what reading drops that only an unloaded image shows: frames after the first,
    and the low bytes of a 16-bit RGB(A) PNG. Call between Image.open and load."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        warnings.warn(f"{label}: animated image with {frames} frames; only the first is coded", SedicWarning,
                      stacklevel=2)
    # Pillow opens a 16-bit RGB(A) PNG as 8-bit "RGB"/"RGBA" keeping the high byte of each
    # sample; the depth shows only in the decoder's raw mode ("RGB;16B"), gone after load().
    if img.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in getattr(img, "tile", ())):
        warnings.warn(f"{label}: 16-bit image reduced to 8 bits", SedicWarning, stacklevel=2)


def image_to_array(img: Image.Image, label: str = "image") -> np.ndarray:
    """Normalise a PIL image to uint8 RGB, warning about what is lost."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "RGB;16", "RGBA;16") or img.mode.startswith("I;16"):
        warnings.warn(f"{label}: 16-bit image converted to 8 bits", SedicWarning, stacklevel=2)
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        warnings.warn(f"{label}: alpha channel dropped", SedicWarning, stacklevel=2)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{label}: image is empty")
    return arr


MAX_TEXT_BYTES = 16 << 20  # a semantics or profile JSON is a few KB


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 text file, refused past MAX_TEXT_BYTES: a pipe or device (/dev/zero) reports size 0,
    so only a bounded read keeps it from filling the memory. OSError and UnicodeDecodeError pass."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(f"{what} {path} is larger than {MAX_TEXT_BYTES} bytes")
    return data.decode("utf-8")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (links and relative spellings included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where they would be
        return Path(a).resolve() == Path(b).resolve()


def check_writable(path: str | os.PathLike, force: bool, inputs=()) -> None:
    """Refuse, before any work, an output that would replace an input (even with --force), that
    exists (without --force), or whose directory is missing or cannot be written."""
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise InputError(f"{path} is an input of this command; choose another output")
    if path.is_dir():
        raise InputError(f"{path} is a directory")
    if path.exists() and not path.is_file():
        # the atomic rename would replace the device or pipe itself (as root: /dev/full, /dev/stdout)
        raise InputError(f"{path} is not a regular file (a device, pipe or socket); choose a file path")
    if path.exists() and not force:
        raise InputError(f"{path} exists; use --force to overwrite")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such directory")
    # Permission bits say too little (root, read-only mounts, ACLs): create and remove a file.
    fd, probe = _create_temp(path)
    os.close(fd)
    os.unlink(probe)


def _create_temp(path: Path) -> tuple[int, str]:
    """A new empty file beside `path` with mode 0666 before the umask, as any tool creates files
    (tempfile.mkstemp would give 0600)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"{path}: cannot write to {path.parent}: {exc.strerror or exc}") from None
    raise InputError(f"{path}: cannot create a temporary file in {path.parent}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, force: bool = False) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves a half-written output."""
    path = Path(path)
    check_writable(path, force)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if not force and path.exists():  # appeared meanwhile: keep the other writer's file
            raise InputError(f"{path} exists; use --force to overwrite")
        if path.exists():  # --force over a file the user made private (0600) keeps it private
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except OSError as exc:  # disk full, quota...: one line, and no half-written output
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_image_suffix(path: str | os.PathLike) -> str:
    """The Pillow format an output image's suffix names; InputError for any other suffix."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: output must end in .png, .jpg or .webp")
    return fmt


def srgb_pnginfo() -> PngImagePlugin.PngInfo:
    """A PNG sRGB chunk (rendering intent 0, perceptual): decoded images are sRGB, and say so."""
    info = PngImagePlugin.PngInfo()
    info.add(b"sRGB", b"\x00")
    return info


def save_image(path: str | os.PathLike, image: np.ndarray, force: bool = False) -> None:
    """Save uint8 RGB as PNG (or the format the suffix names), atomically, tagged as sRGB: a PNG
    gets the 13-byte sRGB chunk, JPEG and WebP littleCMS's sRGB profile."""
    path = Path(path)
    fmt = check_image_suffix(path)
    buf = io.BytesIO()
    save_kwargs: dict[str, Any]
    if fmt == "PNG":
        save_kwargs = {"pnginfo": srgb_pnginfo()}
    else:
        save_kwargs = {"quality": 95} if fmt == "JPEG" else {"lossless": True}
        save_kwargs["icc_profile"] = _SRGB.tobytes()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, fmt, **save_kwargs)
    atomic_write_bytes(path, buf.getvalue(), force=force)
