"""Encoder and decoder of whole .sedic files: streams in, container out, and back.

The rate is the file: every byte written counts, bpp = 8 * len(file) / (width * height).
Rate control codes the side streams first and gives the reference what is left.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np

from . import bitstream as bs
from .config import Profile, get_profile, profile_by_id
from .errors import BitstreamError, InputError, RateError, SedicWarning
from .schedule import ScheduleOverrides
from .semantics import MAX_OBJECTS, SemanticObject, Semantics
from .streams import (
    codecs as reference_codecs,
    masks as mask_stream,
    reference as reference_stream,
    text as text_stream,
)

# Rates above this are no limit at all (uncompressed RGB is 24 bpp; the header of a tiny image
# costs a few hundred); a larger one would overflow the byte budget (1e308 * pixels is inf).
MAX_BPP = 1000


@dataclass
class DecodedFile:
    """A parsed file: the size, its decoder parameters, the semantics (masks on the latent grid)."""

    width: int
    height: int
    params: bs.DecoderParams
    semantics: Semantics
    container: bs.Container
    size: int

    @property
    def profile(self) -> Profile:
        return profile_by_id(self.params.profile_id)


def _reference_codec(profile: Profile):
    return reference_codecs.from_settings(profile.reference)


def _side_sections(semantics: Semantics | None, width: int, height: int) -> dict[int, bytes]:
    if semantics is None:
        return {}
    semantics = semantics.validated(width, height)
    strings = [text_stream.fit_prompt(semantics.overall)]
    _warn_if_cut("overall description", semantics.overall, strings[0])
    for obj in semantics.objects:
        name, description = text_stream.object_prompt(obj.name, obj.description)
        _warn_if_cut(f"object {name!r} description", obj.description, description)
        strings.extend((name, description))
    sections = {bs.TEXT: text_stream.encode_strings(strings)}
    if semantics.objects:
        grids = [mask_stream.to_grid(obj.mask) for obj in semantics.objects]
        sections[bs.MASKS] = mask_stream.encode_masks(grids)
    return sections


def settings_section(profile: Profile | str | None = None, *, bpp: float | None = 0.03,
                     reference_bpp: float | None = None, seed: int = 0,
                     overrides: dict | ScheduleOverrides | None = None) -> bytes:
    """Check the encoder's options and return the settings section they give.

    Cheap: callers run it before the analysis so that a bad option fails before minutes of work."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    for name, value in (("bpp", bpp), ("reference bpp", reference_bpp)):
        if value is not None and not (_is_number(value) and 0 < value <= MAX_BPP):
            raise InputError(f"{name} must be a positive finite number, at most {MAX_BPP}, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 1 << 32:
        raise InputError(f"seed must be an integer in 0..2^32-1, got {seed}")

    overrides = overrides.as_dict() if isinstance(overrides, ScheduleOverrides) else dict(overrides or {})
    if profile.decoder.schedule != profile_by_id(profile.id).decoder.schedule:
        # a profile file changed the schedule: the file must say so, or it would decode differently
        overrides.setdefault("schedule", profile.decoder.schedule)
    ScheduleOverrides.check_names(overrides)
    for name, value in overrides.items():
        if _is_number(value) and not math.isfinite(value):
            raise InputError(f"{name} must be a finite number, got {value}")
    try:
        carried = ScheduleOverrides.from_dict(overrides)  # the file's limits; the values it will carry
        # the decoder's own checks (e.g. steps vs start strength) on those values
        replace(profile.decoder, **carried.as_dict())
        return bs.DecoderParams(profile.id, seed, carried).to_bytes()
    except InputError as exc:
        raise InputError(f"schedule: {exc}") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _warn_if_cut(what: str, given: str, kept: str) -> None:
    """Say how much of a text the decoder's CLIP window (77 tokens, start and end included) cut."""
    canonical = text_stream.canonicalize(given)
    if canonical == kept:
        return
    total = text_stream.token_count(canonical)
    dropped = total - text_stream.token_count(kept)
    if dropped > 0:
        warnings.warn(f"{what} cut to fit the {text_stream.WINDOW}-token CLIP window: {dropped} of {total} "
                      f"tokens dropped", SedicWarning, stacklevel=2)


def encode(image: np.ndarray, semantics: Semantics | None = None, profile: Profile | str | None = None, *,
           bpp: float | None = 0.03, reference_bpp: float | None = None, best_effort: bool = False,
           seed: int = 0, overrides: dict | ScheduleOverrides | None = None, progress=None) -> bytes:
    """Code an RGB uint8 image (H, W, 3) and its semantics into .sedic bytes.

    `bpp` caps the whole file; `reference_bpp` caps the reference stream alone. With neither, the
    reference is coded at the best setting that fits the default target of 0.03 bpp.
    progress(text), when given, hears what the reference search is doing.
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    try:
        bs.check_size(width, height)
    except BitstreamError as exc:
        raise InputError(str(exc)) from None
    sections = {bs.SETTINGS: settings_section(profile, bpp=bpp, reference_bpp=reference_bpp, seed=seed,
                                              overrides=overrides)}
    sections.update(_side_sections(semantics, width, height))
    # Size of everything but the reference payload; the reference's own section header grows with
    # its length, so take the header size for the largest payload it could get.
    side = len(bs.pack(bs.Container(width, height, {**sections, bs.REFERENCE: b""})))
    pixels = width * height
    budgets = []
    if bpp is not None:
        total = int(bpp * pixels // 8)
        room = total - side
        room -= len(bs.write_varint(max(room, 0) << 3 | bs.REFERENCE)) - 1
        if room < 1:
            msg = (f"target {bpp} bpp ({total} bytes) cannot be met: the header, text and masks alone take "
                   f"{side} bytes ({8 * side / pixels:.4f} bpp)")
            if not best_effort:
                raise RateError(msg + "; raise --bpp, shorten the semantics or pass --best-effort")
            warnings.warn(msg + "; coding the smallest reference (best effort)", SedicWarning, stacklevel=2)
        else:
            budgets.append(room)
    if reference_bpp is not None:
        budgets.append(max(1, int(reference_bpp * pixels // 8)))

    codec = _reference_codec(profile)
    if budgets:
        try:
            if progress is not None:
                progress(f"reference search: {width}x{height} in {min(budgets)} bytes")
            payload, _ = reference_stream.encode_reference(image, min(budgets), codec, progress=progress)
        except RateError:
            if not best_effort:
                raise RateError(f"no reference setting fits in {min(budgets)} bytes; raise the rate "
                                f"or pass --best-effort") from None
            payload = _smallest_reference(image, codec)
    else:
        payload = _smallest_reference(image, codec)
    sections[bs.REFERENCE] = payload
    return bs.pack(bs.Container(width, height, sections))


def _smallest_reference(image: np.ndarray, codec) -> bytes:
    """Best effort: the cheapest setting of the search space (largest downscale, lowest quality)."""
    height, width = image.shape[:2]
    cheapest = min(codec.settings(width, height), key=lambda s: (-s.factor_index, s.quality))
    return codec.encode(image, cheapest)


def parse(data: bytes) -> DecodedFile:
    """Parse a file and decode its text and masks (cheap; no reference or model work)."""
    container = bs.unpack(data)
    params = bs.DecoderParams.from_bytes(container.sections[bs.SETTINGS])
    semantics = Semantics()
    if bs.TEXT in container.sections:
        strings = text_stream.decode_strings(container.sections[bs.TEXT])
        if len(strings) % 2 != 1:
            raise BitstreamError(f"text stream holds {len(strings)} strings; expected 1 + 2 per object")
        count = (len(strings) - 1) // 2
        if count > MAX_OBJECTS:
            raise BitstreamError(f"text stream names {count} objects; at most {MAX_OBJECTS} are allowed")
        shape = mask_stream.grid_shape(container.width, container.height)
        grids = []
        if count:
            if bs.MASKS not in container.sections:
                raise BitstreamError("file names objects but has no masks section")
            grids = mask_stream.decode_masks(container.sections[bs.MASKS], count, shape)
        elif bs.MASKS in container.sections:
            raise BitstreamError("masks section present but the text names no object")
        semantics = Semantics(strings[0], [SemanticObject(strings[1 + 2 * k], strings[2 + 2 * k], grids[k])
                                           for k in range(count)])
    # The reference header's rules (reserved bits, tool flags, sizes, ...) are checked here, not
    # only when the preview is decoded, so `inspect` refuses exactly what `decompress` refuses.
    reference_codecs.check_payload(container.sections[bs.REFERENCE], container.width, container.height)
    return DecodedFile(container.width, container.height, params, semantics, container, len(data))


def decode_preview(parsed: DecodedFile, profile: Profile | None = None) -> np.ndarray:
    """Stage 0: the reference, decoded and upsampled to the original size."""
    profile = profile or parsed.profile
    payload = parsed.container.sections[bs.REFERENCE]
    # The payload names its codec (and its options, e.g. the CompressAI model); the profile only
    # adds what the codec takes from it for decoding (where weights are).
    return reference_codecs.decode_reference(payload, parsed.width, parsed.height, settings=profile.reference)


def decoder_settings(parsed: DecodedFile, profile: Profile | None = None):
    """The profile's decoder settings with the file's schedule overrides applied.

    The schedule (sequential or fused) is always the file's, even under another profile (e.g. a
    profile file naming local weights): its key 5 when present, else its own profile's schedule."""
    profile = profile or parsed.profile
    try:
        settings = replace(profile.decoder, **parsed.params.overrides.as_dict())
        if parsed.params.overrides.schedule is None and _known(parsed.params.profile_id):
            settings = replace(settings, schedule=profile_by_id(parsed.params.profile_id).decoder.schedule)
    except InputError as exc:  # the file's schedule does not fit this profile's decoder
        raise InputError(f"schedule: {exc}") from None
    return settings


def decode(data: bytes, profile: Profile | str | None = None, stages: int | None = None,
           device: str | None = None, progress=None, on_step=None, on_image=None) -> np.ndarray:
    """Decode a file to uint8 RGB at its original size. stages=0 gives the preview.

    on_image(stages_value, image) receives the preview (0) and each stage's image as it is ready."""
    parsed = parse(data)
    requested = profile if isinstance(profile, str) else None  # "my.json": what `models download` takes
    if profile is not None and not isinstance(profile, Profile):
        profile = get_profile(profile)
    profile = profile or parsed.profile
    preview = decode_preview(parsed, profile)
    count = len(parsed.semantics.objects)
    if stages is not None and not 0 <= stages <= count + 1:
        raise InputError(f"--stages must be in 0..{count + 1} for this file ({count} objects)")
    if on_image is not None:
        on_image(0, preview)
    if stages == 0:
        return preview
    from .models import require_models
    from .restoration import restore
    from .restoration.models import decoder_models

    settings = decoder_settings(parsed, profile)
    require_models(decoder_models(settings), requested or profile.name)  # one error naming every missing model
    return restore(preview, parsed.semantics, settings, parsed.params.seed,
                   stages=stages, device=device, progress=progress, on_step=on_step,
                   on_image=on_image)


def inspect(data: bytes) -> dict:
    """Sizes and bits per stream (adding up exactly to 8 x bytes) and the decoded texts."""
    parsed = parse(data)
    sections = parsed.container.sections
    streams = {name: 8 * len(sections.get(kind, b""))
               for kind, name in ((bs.REFERENCE, "reference"), (bs.TEXT, "text"), (bs.MASKS, "masks"))}
    streams["header"] = parsed.container.header_bits(len(data))
    return {
        "width": parsed.width,
        "height": parsed.height,
        "bytes": len(data),
        "bpp": 8 * len(data) / (parsed.width * parsed.height),
        "profile": parsed.profile.name if _known(parsed.params.profile_id) else parsed.params.profile_id,
        "seed": parsed.params.seed,
        "schedule": parsed.params.overrides.as_dict(),
        "streams": streams,
        # the reference's header: codec, coded (reduced) size and the codec's own fields
        "reference": reference_codecs.describe_payload(sections[bs.REFERENCE], parsed.width, parsed.height),
        "semantics": parsed.semantics.to_dict(),
    }


def _known(profile_id: int) -> bool:
    try:
        profile_by_id(profile_id)
        return True
    except BitstreamError:
        return False
