"""Settings of the encoder-side semantic analysis (a profile's `analysis` part).

Checked when made (`__post_init__`, InputError), like the decoder's settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..devices import check_dtype
from ..errors import InputError
from ..semantics import MAX_OBJECTS

BACKENDS = ("local", "openai", "tiny")


@dataclass(frozen=True)
class AnalysisSettings:
    # "local": an open vision-language model through transformers; "openai": an OpenAI-compatible
    # endpoint; "tiny": random-weight miniatures built in-process (profile `test`).
    backend: str = "local"
    vlm_model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    grounding_model: str = "IDEA-Research/grounding-dino-base"
    sam_model: str = "facebook/sam-vit-huge"
    num_objects: int = 3
    box_threshold: float = 0.3
    text_threshold: float = 0.25

    # Revisions pin what `from_pretrained` loads (None: the repository's default branch).
    vlm_revision: str | None = None
    grounding_revision: str | None = None
    sam_revision: str | None = None
    # "sam": transformers SamModel (the paper); "sam2": Sam2Model (sam_model must then name a SAM 2 repo).
    sam_variant: str = "sam"
    # "auto": bfloat16 on a GPU, float32 on the CPU; or "float32" / "bfloat16" / "float16".
    dtype: str = "auto"

    # Text budgets in the decoder's CLIP tokens (its window is 77 including start/end tokens):
    # an object prompt is "name, description", the final stage uses the overall description.
    description_tokens: int = 60
    overall_tokens: int = 75
    # Images given to the local VLM are reduced to at most this many pixels (Qwen2.5-VL: one token
    # per 28x28 patch, so 401408 px ~ 512 image tokens; a Kodak image fits as is).
    vlm_max_pixels: int = 512 * 28 * 28
    # Speed levers of local generation: a static KV cache and, on a GPU, a compiled decoding step.
    static_cache: bool = False
    compile: bool = False

    # OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, LM Studio). The key is read only from the
    # environment variables named here (first one set wins); it is never logged or written.
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o"
    api_key_env: tuple[str, ...] = ("SEDIC_OPENAI_API_KEY", "OPENAI_API_KEY")
    timeout_s: float = 120.0
    http_retries: int = 1             # transport-level retries (connection errors, 5xx, 429)
    max_reply_bytes: int = 1_000_000  # an HTTP body larger than this is refused unread
    max_image_side: int = 1024        # the image sent to an endpoint is reduced to this long side

    # Extra attempts after a reply that is not valid JSON of the schema; then a clear error.
    retries: int = 2

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise InputError(f"unknown analysis backend {self.backend!r} (known: {', '.join(BACKENDS)})")
        if not 0 <= self.num_objects <= MAX_OBJECTS:
            raise InputError(f"number of objects must be between 0 and {MAX_OBJECTS}, got {self.num_objects}")
        if not 8 <= self.description_tokens <= 75 or not 8 <= self.overall_tokens <= 75:
            raise InputError("description budgets must be 8 to 75 CLIP tokens (the decoder's window is 77 "
                             "including its start and end tokens)")
        if self.sam_variant not in ("sam", "sam2"):
            raise InputError(f"unknown SAM variant {self.sam_variant!r} (sam, sam2)")
        check_dtype(self.dtype, "the analysis dtype")
        if self.retries < 0 or not 0 < self.timeout_s < math.inf:  # nan fails both
            raise InputError(f"retries must be >= 0 and the time-out positive and finite, got {self.timeout_s}")
