"""The analysis models of a profile as `sedic.models.ModelRef`s (what `sedic models` lists and
fetches, and what `analyze` requires before it loads any)."""

from __future__ import annotations

from ..models import ModelRef

# Small files each processor reads besides config.json (they must be cached for the model to
# count as available).
_PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer_config.json")


def encoder_models(a, num_objects: int | None = None) -> list[ModelRef]:
    """The analysis models of AnalysisSettings `a` (none for the tiny backend); with
    num_objects=0 the grounding models are not needed."""
    refs = []
    if a.backend == "local":
        refs.append(ModelRef("vision-language model (descriptions)", a.vlm_model, a.vlm_revision, "transformers",
                             needs=_PROCESSOR_FILES))
    k = a.num_objects if num_objects is None else num_objects
    if a.backend in ("local", "openai") and k > 0:
        refs.append(ModelRef("Grounding DINO (boxes)", a.grounding_model, a.grounding_revision, "transformers",
                             needs=_PROCESSOR_FILES))
        sam2 = a.sam_variant == "sam2"
        refs.append(ModelRef(f"{'SAM 2' if sam2 else 'SAM'} (masks)", a.sam_model, a.sam_revision, "transformers",
                             needs=() if sam2 else ("preprocessor_config.json",)))
    return refs
