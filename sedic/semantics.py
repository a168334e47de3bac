"""The semantic side of a SEDIC file: an overall description and K described, masked objects.

One typed object travels from analysis (or a hand-written JSON file) through the encoder to the
decoder. On the encoder side masks are full-resolution; after decoding they are at the decoder's
latent grid (ceil(H/8) x ceil(W/8)), see `sedic.streams.masks.to_grid`.

JSON schema (also the analysis cache):
    {"overall": str,
     "objects": [{"name": str, "description": str, "mask": "<PNG path relative to the JSON>"}]}
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import jsontext
from .errors import InputError, SedicWarning
from .imageio import read_text_file

# A file carries at most this many objects: bounds decoder work and what a corrupted file can ask for.
MAX_OBJECTS = 32


@dataclass
class SemanticObject:
    name: str
    description: str
    mask: np.ndarray  # bool (H, W)

    def __post_init__(self):
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim != 2:
            raise InputError(f"mask of object {self.name!r} must be 2-D, got shape {self.mask.shape}")


@dataclass
class Semantics:
    overall: str = ""
    objects: list[SemanticObject] = field(default_factory=list)

    def validated(self, width: int, height: int) -> Semantics:
        """Check masks against the image size; drop objects whose mask is empty (with a warning)."""
        kept = []
        for obj in self.objects:
            if obj.mask.shape != (height, width):
                raise InputError(
                    f"mask of object {obj.name!r} is {obj.mask.shape[1]}x{obj.mask.shape[0]}, "
                    f"image is {width}x{height}")
            if not obj.name.strip():
                raise InputError("an object has an empty name")
            if not obj.mask.any():
                warnings.warn(f"object {obj.name!r} has an empty mask and is dropped", SedicWarning, stacklevel=2)
                continue
            kept.append(obj)
        if len(kept) > MAX_OBJECTS:
            raise InputError(f"{len(kept)} objects; at most {MAX_OBJECTS} are supported")
        return Semantics(self.overall, kept)

    def to_dict(self) -> dict:
        """The texts only (what `sedic inspect --json` reports)."""
        return {"overall": self.overall,
                "objects": [{"name": o.name, "description": o.description} for o in self.objects]}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Semantics:
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"Semantics.load takes the path of a semantics JSON file, got {type(path).__name__}")
        path = Path(path)
        try:
            raw = jsontext.loads(read_text_file(path, "semantics file"), f"semantics file {path}")
        except OSError as exc:
            raise InputError(f"cannot read semantics file {path}: {exc.strerror or exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"semantics file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(raw, lambda name, where: _read_mask(path.parent / name, where),
                             f"semantics file {path}")

    @classmethod
    def from_dict(cls, raw, read_mask, where: str = "semantics") -> Semantics:
        """Semantics from the parsed JSON of a semantics file. `read_mask(name, where)` gives the
        mask an object's "mask" field names (bool H x W; `mask_from_png` reads PNG bytes), so an
        upload needs no temporary folder. `where` starts every error message."""
        if not isinstance(raw, dict):
            raise InputError(f"{where}: top level must be an object")
        overall = raw.get("overall")
        if not isinstance(overall, str):
            raise InputError(f"{where}: 'overall' must be a string")
        objects_raw = raw.get("objects", [])
        if not isinstance(objects_raw, list):
            raise InputError(f"{where}: 'objects' must be a list")
        if len(objects_raw) > MAX_OBJECTS:  # before any mask is read: each one costs memory
            raise InputError(f"{where}: {len(objects_raw)} objects; at most {MAX_OBJECTS} are supported")
        objects = []
        for i, item in enumerate(objects_raw):
            here = f"{where}: objects[{i}]"
            if not isinstance(item, dict):
                raise InputError(f"{here} must be an object")
            for key in ("name", "description", "mask"):
                if not isinstance(item.get(key), str):
                    raise InputError(f"{here}: missing or non-string field '{key}'")
            objects.append(SemanticObject(item["name"], item["description"], read_mask(item["mask"], here)))
        return cls(overall, objects)

    def save(self, path: str | os.PathLike, force: bool = False, inputs=()) -> None:
        """Write the JSON and one PNG per mask beside it (`<stem>.mask<k>.png`), atomically.

        Every output is checked before the first is written: none may be one of `inputs`, and
        none may exist unless `force`."""
        from .imageio import atomic_write_bytes

        path = Path(path)
        check_outputs(path, len(self.objects), force, inputs)
        entries = []
        for k, obj in enumerate(self.objects):
            mask = mask_path(path, k)
            atomic_write_bytes(mask, _png_bytes(obj.mask), force=force)
            entries.append({"name": obj.name, "description": obj.description, "mask": mask.name})
        text = json.dumps({"overall": self.overall, "objects": entries}, indent=2, ensure_ascii=False)
        atomic_write_bytes(path, (text + "\n").encode("utf-8"), force=force)


def input_files(json_path: str | os.PathLike) -> list[Path]:
    """The semantics JSON and the mask files it names: inputs that no output may replace.

    Best effort: a JSON that cannot be read gives just itself (loading it reports why).
    Regular files only: a pipe would be consumed here and be empty for the load."""
    json_path = Path(json_path)
    if not json_path.is_file():  # a pipe (`--semantics <(...)`) can be read only once: by the load
        return [json_path]
    try:
        raw = jsontext.loads(read_text_file(json_path, "semantics file"), "semantics file")
        items = raw.get("objects", []) if isinstance(raw, dict) else []
        masks = [json_path.parent / item["mask"] for item in items
                 if isinstance(item, dict) and isinstance(item.get("mask"), str)]
    except (OSError, ValueError, UnicodeDecodeError, AttributeError, TypeError, InputError):
        masks = []
    return [json_path] + masks


def mask_path(json_path: str | os.PathLike, k: int) -> Path:
    """Where `Semantics.save` writes the mask of object k: `<stem>.mask<k>.png` beside the JSON."""
    json_path = Path(json_path)
    return json_path.parent / f"{json_path.stem}.mask{k}.png"


def check_outputs(json_path: str | os.PathLike, objects: int, force: bool, inputs=()) -> None:
    """Check the JSON and the first `objects` mask paths (callers pass the most objects the
    analysis can find, so nothing is overwritten without force after minutes of work)."""
    from .imageio import check_writable

    for target in [Path(json_path)] + [mask_path(json_path, k) for k in range(objects)]:
        check_writable(target, force, inputs)


def _read_mask(path: Path, where: str) -> np.ndarray:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{where}: mask file {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"{where}: cannot read mask {path}: {exc.strerror or exc}") from None
    return mask_from_png(data, str(path), where)


def mask_from_png(data: bytes, name: str, where: str) -> np.ndarray:
    """A mask from the bytes of its image file (grey >= 128 is inside), as `load` reads files."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = np.asarray(img.convert("L"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        from .imageio import chunk_bomb

        bomb = chunk_bomb(exc, f"{where}: mask {name}")
        raise bomb or InputError(f"{where}: cannot read mask {name}: {exc}") from None
    return arr >= 128


def _png_bytes(mask: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool)).save(buf, "PNG", optimize=True)
    return buf.getvalue()
