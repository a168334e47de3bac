"""Uploads in, library objects out: body size limit, image and .sedic pixel limits, semantics.

Clients never name server-side paths: images, .sedic files, semantics JSON and mask PNGs arrive
as bytes; the semantics are written to a private temporary directory only so that the library's
own loader (and its messages) read them, and each mask must be one of the uploaded files.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import tempfile
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .. import bitstream as bs, codec, jsontext
from ..errors import InputError
from ..imageio import ACCEPTED_FORMATS, ACCEPTED_NAMES, open_image, read_opened, srgb_pnginfo
from ..semantics import MAX_OBJECTS, Semantics
from .errors import TooLarge, UnsupportedMedia, error_body


class BodyLimit:
    """ASGI middleware: read at most `limit` bytes of a request body, and fast enough, else answer
    413 or 408 at once.

    The body is buffered here, before FastAPI's multipart parser sees (or spools) any of it; a
    Content-Length above the limit is refused without reading. A body must arrive within
    BODY_GRACE_S seconds plus one second per BODY_MIN_RATE bytes: a client trickling 2 KB/s
    is cut after about BODY_GRACE_S seconds, a 20 MB upload at 1 MB/s passes.
    """

    def __init__(self, app, limit_mb: float, grace_s: float = 10.0, min_rate: int = 64 << 10):
        self.app = app
        self.limit_mb = limit_mb
        self.limit = int(limit_mb * (1 << 20))
        self.grace_s, self.min_rate = grace_s, min_rate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, 413, f"request body above this server's limit of {self.limit_mb:g} MB "
                                                 f"({self.limit} bytes)")
        loop = asyncio.get_running_loop()
        started = loop.time()
        chunks, size = [], 0
        while True:
            allowed = started + self.grace_s + size / self.min_rate - loop.time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(allowed, 0.001))
            except asyncio.TimeoutError:
                return await self._refuse(send, 408, f"request body too slow: {size} bytes in "
                                                     f"{loop.time() - started:.0f} s (this server wants "
                                                     f"{self.min_rate >> 10} KiB/s after {self.grace_s:g} s)")
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._refuse(send, 413, f"request body above this server's limit of "
                                                     f"{self.limit_mb:g} MB ({self.limit} bytes)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls: the client's disconnect

        await self.app(scope, replay, send)

    async def _refuse(self, send, status: int, message: str):
        from starlette.responses import JSONResponse

        response = JSONResponse(error_body(status, message), status_code=status, headers={"Connection": "close"})
        await response({"type": "http"}, None, send)  # type: ignore[arg-type]  # a JSONResponse never receives


def safe_name(name: str | None, default: str) -> str:
    """A display and temp-file name from a client's filename: base name, plain characters only."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)[:100].lstrip(".")
    return base or default


def _check_pixels(width: int, height: int, what: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLarge(f"{what} is {width}x{height} ({width * height} pixels), above this server's limit of "
                       f"{max_pixels} pixels")


def image_pixels(data: bytes) -> int:
    """An upload's pixel count from its header (no decoding), for admission; 1 when unreadable
    (decode_image then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return max(1, img.size[0] * img.size[1])
    except Exception:  # noqa: BLE001 - any unreadable upload is refused with a message later
        return 1


def file_pixels(data: bytes) -> int:
    """A .sedic file's pixel count from its container header, for admission; 1 when unreadable."""
    try:
        container = bs.unpack(data)
    except Exception:  # noqa: BLE001 - parse_sedic reports it
        return 1
    return max(1, container.width * container.height)


def decode_image(data: bytes, name: str, max_pixels: int):
    """uint8 RGB (H, W, 3), upright and sRGB, from an uploaded image; the size is checked before decoding."""
    try:
        img = open_image(io.BytesIO(data), name)  # a PNG chunk bomb: the loader's InputError (400)
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image {name}: {exc}; this server's limit is {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UnsupportedMedia(f"{name}: not a {ACCEPTED_NAMES} image") from None
    with img:
        if img.format not in ACCEPTED_FORMATS:
            raise UnsupportedMedia(f"{name}: unsupported image format {img.format} (use {ACCEPTED_NAMES})")
        _check_pixels(*img.size, f"image {name}", max_pixels)
        try:  # the library's loading path: orientation, colour profile, what reading drops
            return read_opened(img, name)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(f"{name}: cannot read image: {exc}") from None


def load_semantics(json_data: bytes, json_name: str, masks: dict[str, bytes], image_size: tuple[int, int],
                   max_pixels: int) -> Semantics:
    """Semantics from an uploaded JSON and its mask PNGs: each `mask` field is matched to an uploaded
    file by its file name (`../masks/x.png` is the part named x.png, as `sedic analyze` writes them).

    Counts, nesting and every mask's declared size are checked before any mask is decoded."""
    if json_name in masks:
        raise InputError(f"a mask part is named {json_name!r}, as the semantics JSON is; give it another name")
    try:
        raw = jsontext.loads(json_data.decode("utf-8"), f"semantics {json_name}")
    except (ValueError, UnicodeDecodeError):
        raw = None  # the library's loader below reports it in its own words
    used: dict[str, bytes] = {}
    if isinstance(raw, dict) and isinstance(raw.get("objects"), list):
        if len(raw["objects"]) > MAX_OBJECTS:
            raise InputError(f"semantics {json_name}: {len(raw['objects'])} objects; "
                             f"at most {MAX_OBJECTS} are supported")
        for i, item in enumerate(raw["objects"]):
            ref = item.get("mask") if isinstance(item, dict) else None
            if not isinstance(ref, str):
                continue  # the loader names the missing field
            name = safe_name(ref, "")
            if name not in masks:
                raise InputError(f"semantics {json_name}: objects[{i}]: mask {ref!r} was not uploaded "
                                 f"(send each mask PNG as a 'masks' file part with the file name {name!r})")
            item["mask"] = name
            if name not in used:
                _check_mask_size(masks[name], name, image_size, max_pixels)
                used[name] = masks[name]
        json_data = json.dumps(raw).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="sedic-serve-") as tmp:
        root = Path(tmp)
        (root / json_name).write_bytes(json_data)
        for name, data in used.items():
            (root / name).write_bytes(data)
        try:
            return Semantics.load(root / json_name)
        except InputError as exc:  # the client sees its own file names, not our directory
            raise InputError(str(exc).replace(f"{root}/", "").replace(str(root), ".")) from None


def _check_mask_size(data: bytes, name: str, image_size: tuple[int, int], max_pixels: int) -> None:
    """A mask's size from its header: it must be the image's (checked before it is decoded)."""
    try:
        img = open_image(io.BytesIO(data), f"mask {name}")
        with img:
            _check_pixels(*img.size, f"mask {name}", max_pixels)
            if img.size != tuple(image_size):
                raise InputError(f"mask {name} is {img.size[0]}x{img.size[1]}, "
                                 f"image is {image_size[0]}x{image_size[1]}")
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"mask {name}: {exc}; this server's limit is {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UnsupportedMedia(f"mask {name}: not a PNG, JPEG or WebP image") from None


def parse_sedic(data: bytes, max_pixels: int) -> codec.DecodedFile:
    """Parse an uploaded .sedic file (container, texts, masks), refusing sizes above the limit first."""
    container = bs.unpack(data)
    _check_pixels(container.width, container.height, "the file's image", max_pixels)
    return codec.parse(data)


def png_bytes(image, compress_level: int = 3) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG", compress_level=compress_level, pnginfo=srgb_pnginfo())
    return buf.getvalue()
