"""What an evaluation is made of, in a form any process can rebuild it from.

`sedic evaluate` builds its `Evaluation` from an `EvaluationSpec` on the driver; with `--ray`
each worker (a Ray actor, models loaded once) rebuilds the same one from the same spec and runs
the runner's per-image step, writing into the shared results folder. One construction path,
one runner: the distributed run is not a second pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import InputError
from .baselines import BaselineUnavailable, build_baseline
from .methods import SEDIC_METHODS, BaselineMethod, Method, SedicMethod
from .metrics import build_metrics
from .runner import Evaluation


@dataclass(frozen=True)
class EvaluationSpec:
    out_dir: str
    bpps: tuple
    metric_names: tuple
    method_names: tuple
    baseline_names: tuple
    profile: str | None = None
    semantics_dir: str | None = None
    analyze: bool = True
    stages: int | None = None
    seed: int = 0
    weights_dir: str | None = None
    clip_model: str = "openai/clip-vit-large-patch14"
    compressai_checkpoints: tuple = ()  # ((arch, ((quality, path), ...)), ...): hashable
    fid_patch: int = 256

    def checkpoints(self) -> dict:
        return {arch: dict(q) for arch, q in self.compressai_checkpoints}

    def build(self, device: str, *, progress: bool = False) -> tuple[Evaluation, dict[str, str]]:
        """The Evaluation on `device`, and the baselines that are unavailable here (name -> reason)."""
        methods: list[Method] = []
        # sedic first: baselines look up the overall description in its file for the CLIP score.
        for name in SEDIC_METHODS:
            if name in self.method_names:
                methods.append(SedicMethod(profile=self.profile, semantics_dir=self.semantics_dir,
                                           analyze=self.analyze, device=device, stages=self.stages, seed=self.seed,
                                           preview=(name == "sedic-preview")))
        unavailable: dict[str, str] = {}
        for name in self.baseline_names:
            try:
                methods.append(BaselineMethod(build_baseline(name, compressai_ckpts=self.checkpoints(),
                                                             device=device), device))
            except BaselineUnavailable as exc:
                unavailable[name] = str(exc)
        suite = build_metrics(list(self.metric_names), weights_dir=self.weights_dir, device=device,
                              clip_model=self.clip_model, fid_patch=self.fid_patch)
        ev = Evaluation(Path(self.out_dir), methods, suite, list(self.bpps), semantics_dir=self.semantics_dir,
                        progress=progress)
        return ev, unavailable

    def available(self, unavailable: dict[str, str]) -> EvaluationSpec:
        """The same spec without the baselines the driver found unavailable (workers skip them too)."""
        from dataclasses import replace

        return replace(self, baseline_names=tuple(n for n in self.baseline_names if n not in unavailable))


@dataclass(frozen=True)
class EvaluateImages:
    """Stage worker factory for the batch executor: one Evaluation per worker, one image per call."""

    spec: EvaluationSpec
    device: str | None = None  # None: the worker's own device (cuda on a GPU worker)

    def __call__(self, device: str):
        ev, unavailable = self.spec.build(self.device or device)
        if unavailable:
            raise InputError("unavailable on this worker: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
        return partial(_evaluate_image, ev)


def _evaluate_image(ev: Evaluation, payload: dict) -> dict:
    before = dict(ev.result.work)
    rows = ev.image_rows(Path(payload["src"]))
    return {"rows": rows, "work": {k: ev.result.work[k] - before.get(k, 0) for k in ev.result.work}}
