"""Settings of the encoder-side semantic analysis (a profile's `analysis` part)."""

from __future__ import annotations

from dataclasses import dataclass


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
