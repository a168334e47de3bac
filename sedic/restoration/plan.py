"""The stage plan: one record per stage of a decode, derived once from the file's semantics and the
decoder settings. restore() runs it, the server and the progress display read it, the tests check
it; nobody re-derives the staging rules. No torch here (the server imports it cheaply).

Sequential schedule: object stages 1..K, then the final ("overall") stage K+1. Fused schedule: one
stage (index 1, `stages` value K+1). See docs/orag.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..streams.text import join_object_prompt


@dataclass(frozen=True)
class StagePlan:
    index: int              # 1-based position in the decode (what progress() reports)
    total: int              # stages in the decode
    stages: int             # the `stages=` value of a decode that stops after this stage
    kind: str               # "object", "final" or "fused"
    label: str
    prompt: str             # the stage's text prompt (fused: the overall description)
    objects: tuple[int, ...]  # 0-based indices of the objects it restores (object: one; fused: those with cells)
    steps: int
    cfg: float
    start_strength: float   # t_0 = round(start_strength * 999)
    start: str              # what is noised to t_0: "input", "noise" or "low-frequency"
    condition: str          # the ControlNet's condition: "previous" (z^(k-1)) or "reference" (z^(0))
    blend: str              # outside the object's mask: "every step", "end" (pasted once) or "none"
    guided: bool            # ORAG attention guidance on its object(s)
    generator: int          # the noise stream: stage_generator(seed, generator)
    empty: bool = False     # an object stage whose mask has no cell on the latent grid: changes nothing


def object_prompt(obj, settings) -> str:
    if settings.pipeline.object_prompt == "name+description":
        return join_object_prompt(obj.name, obj.description)
    return obj.description


def _has_cells(obj) -> bool:
    import numpy as np

    return bool(np.asarray(obj.mask, dtype=bool).any())


def plan_stages(semantics, settings, stages: int | None = None) -> list[StagePlan]:
    """The stages a decode with `stages` (None = all) runs; [] for stages=0 (the preview)."""
    objects = list(semantics.objects)
    n_obj = len(objects)
    n_stages = n_obj + 1 if stages is None else int(stages)
    if not 0 <= n_stages <= n_obj + 1:
        raise InputError(f"stages must be between 0 and {n_obj + 1} for this file, got {stages}")
    if n_stages == 0:
        return []
    orag, st = settings.orag, settings.pipeline
    if settings.schedule == "fused":
        if n_stages != n_obj + 1:
            raise InputError(f"the fused schedule restores all objects in one pass: stages must be 0 or "
                             f"{n_obj + 1} for this file, got {stages}")
        live = tuple(i for i, o in enumerate(objects) if _has_cells(o))
        return [StagePlan(
            index=1, total=1, stages=n_obj + 1, kind="fused",
            label=f"fused: {n_obj} object{'s' if n_obj != 1 else ''} + overall",
            prompt=semantics.overall, objects=live if orag.enabled else (), steps=settings.final_steps,
            cfg=settings.final_cfg, start_strength=st.final_start_strength, start=st.final_start,
            condition="reference", blend="none", guided=orag.attention_on and bool(live),
            generator=n_obj + 1)]
    plan = []
    for k, obj in enumerate(objects[:n_stages], start=1):
        blend = ("every step" if orag.blend_every_step else "end") if orag.blend_on else "none"
        plan.append(StagePlan(
            index=k, total=n_stages, stages=k, kind="object", label=f"object {k}/{n_obj}: {obj.name}",
            prompt=object_prompt(obj, settings), objects=(k - 1,), steps=settings.object_steps_for(k),
            cfg=settings.object_cfg, start_strength=st.object_start_strength, start=st.object_start,
            condition="previous", blend=blend, guided=orag.attention_on, generator=k, empty=not _has_cells(obj)))
    if n_stages == n_obj + 1:
        plan.append(StagePlan(
            index=n_stages, total=n_stages, stages=n_stages, kind="final", label="overall",
            prompt=semantics.overall, objects=(), steps=settings.final_steps, cfg=settings.final_cfg,
            start_strength=st.final_start_strength, start=st.final_start,
            condition="reference" if st.final_condition == "reference" else "previous", blend="none",
            guided=False, generator=n_obj + 1))
    return plan
