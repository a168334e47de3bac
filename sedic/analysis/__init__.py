"""Encoder-side semantic analysis: image -> overall description + K named, described, masked objects.

    describe (VLM: local transformers model, OpenAI-compatible endpoint, or tiny)
      -> detect (Grounding DINO, one text query per object name)
      -> segment (SAM / SAM 2, one mask per box)
      -> merge (union of the masks of one name; a name with no box is dropped with a warning)

Models are loaded once per process and reused (dataset evaluation analyses many images).
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache

import numpy as np

from ..devices import resolve_device, resolve_dtype
from ..errors import InputError, ModelUnavailableError, SedicWarning
from ..semantics import SemanticObject, Semantics
from .settings import AnalysisSettings

log = logging.getLogger(__name__)

# Below this the analysis models break (convolutions and group norms on 1x1 maps; Qwen2-VL asks
# for 28 pixels); the codec itself takes any size from 1x1.
MIN_SIDE = 32


# --------------------------------------------------------------------------------------------
# Loading. The models are shared per process, keyed on what determines them (repository,
# revision, device, dtype: sedic.models.load_shared), never on the profile that asks: profiles
# with equal model settings use one copy. The wrappers around them are cheap and built per call.

def _describer(settings: AnalysisSettings, device: str, profile: str | None):
    from .describe import LocalVLM, TinyVLM

    if settings.backend == "openai":
        return _openai_describer(settings)
    if settings.backend == "tiny":
        from .tiny import tiny_vlm

        model, processor = tiny_vlm()
        return TinyVLM(model, processor, settings, "tiny random VLM")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..models import load_shared

    dtype = resolve_dtype(settings.dtype, device)
    model = load_shared(AutoModelForImageTextToText, settings.vlm_model, settings.vlm_revision, profile,
                        device=device, dtype=dtype)
    processor = load_shared(AutoProcessor, settings.vlm_model, settings.vlm_revision, profile)
    return LocalVLM(model, processor, settings, f"model {settings.vlm_model}")


@lru_cache(maxsize=2)
def _openai_describer(settings: AnalysisSettings):
    """One client per endpoint configuration (it keeps what the endpoint refused)."""
    from .describe import OpenAIVLM

    return OpenAIVLM(settings)


def _grounder(settings: AnalysisSettings, device: str, profile: str | None):
    from .grounding import Grounder

    if settings.backend == "tiny":
        from .tiny import tiny_grounding, tiny_sam, tiny_sam2

        det, det_proc = tiny_grounding()
        seg, seg_proc = tiny_sam2() if settings.sam_variant == "sam2" else tiny_sam()
        return Grounder(det, det_proc, seg, seg_proc, settings)
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    from ..models import load_shared

    dtype = resolve_dtype(settings.dtype, device)
    det = load_shared(GroundingDinoForObjectDetection, settings.grounding_model, settings.grounding_revision,
                      profile, device=device, dtype=dtype)
    det_proc = load_shared(AutoProcessor, settings.grounding_model, settings.grounding_revision, profile)
    seg_classes: tuple[type, type]
    if settings.sam_variant == "sam2":
        from transformers import Sam2Model, Sam2Processor

        seg_classes = (Sam2Model, Sam2Processor)
    else:
        from transformers import SamModel, SamProcessor

        seg_classes = (SamModel, SamProcessor)
    SegModel, SegProcessor = seg_classes
    seg = load_shared(SegModel, settings.sam_model, settings.sam_revision, profile, device=device, dtype=dtype)
    seg_proc = load_shared(SegProcessor, settings.sam_model, settings.sam_revision, profile)
    return Grounder(det, det_proc, seg, seg_proc, settings)


# --------------------------------------------------------------------------------------------

def analyze(image: np.ndarray, settings: AnalysisSettings, device: str | None = None, *,
            profile: str | None = None) -> Semantics:
    """Describe and segment `image` (uint8 RGB, H x W x 3); masks are full-resolution bool.

    `profile` only names the profile in error messages (`sedic models download PROFILE`)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise InputError(f"analysis needs a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise InputError(f"image {image.shape[1]}x{image.shape[0]} is too small for the analysis (at least "
                         f"{MIN_SIDE} pixels on each side); compress it with hand-made semantics "
                         f"(--semantics) or the reference alone (--no-semantics)")
    device = resolve_device(device)
    k = settings.num_objects
    from ..models import require_models
    from .models import encoder_models

    require_models(encoder_models(settings), profile)  # one error naming every missing model

    description = _describer(settings, device, profile).describe(image, k)
    names = [name for name, _ in description.objects]
    if not names:
        return Semantics(description.overall, [])

    masks = _grounder(settings, device, profile).masks(image, names)
    objects = []
    for (name, text), mask in zip(description.objects, masks, strict=True):
        if mask is None or not mask.any():
            warnings.warn(f"object {name!r} was not found in the image by Grounding DINO "
                          f"(box threshold {settings.box_threshold}) and is dropped", SedicWarning, stacklevel=2)
            continue
        objects.append(SemanticObject(name, text, mask))
    return Semantics(description.overall, objects)


def clear_cache() -> None:
    """Release the loaded models (e.g. before loading the decoder on a small GPU)."""
    from ..models import release_shared

    _openai_describer.cache_clear()
    release_shared()


__all__ = ["AnalysisSettings", "ModelUnavailableError", "analyze", "clear_cache", "resolve_dtype"]
