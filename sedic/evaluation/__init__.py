"""`sedic evaluate`: a folder of images -> per-image CSV, summary JSON, markdown table and plots.

The protocol (metrics, FID/KID patching, rate accounting, baselines) is in docs/evaluation.md.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ..batch.executor import Executor, RayExecutor
from ..devices import resolve_device
from ..errors import InputError
from .baselines import CLASSICAL
from .methods import SEDIC_METHODS
from .metrics import parse_metric_list
from .published import PUBLISHED_KODAK
from .report import aggregate, markdown_table, metric_order, plot_metrics, write_csv, write_json
from .runner import list_images, machine_description
from .spec import EvaluateImages, EvaluationSpec

DEFAULT_BPPS = (0.01, 0.02, 0.03, 0.05)
DEFAULT_BASELINES = (*CLASSICAL, "compressai-cheng2020-attn")
DEFAULT_CLIP = "openai/clip-vit-large-patch14"

__all__ = ["evaluate", "DEFAULT_BPPS", "DEFAULT_BASELINES", "DEFAULT_CLIP"]


def _split(value) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [x for v in value for x in v.split(",")]
    items = [i.strip().lower() for i in items if i.strip()]
    return [] if items == ["none"] else list(dict.fromkeys(items))


def evaluate(dataset_dir, out_dir, *, bpps=DEFAULT_BPPS, profile: str | None = None, metrics="all",
             methods=SEDIC_METHODS, baselines=DEFAULT_BASELINES, semantics_dir=None, analyze: bool = True,
             limit: int | None = None, device: str | None = None, stages: int | None = None,
             weights_dir=None, clip_model: str = DEFAULT_CLIP, compressai_checkpoints=None,
             fid_patch: int = 256, seed: int = 0, progress: bool = True, command: str | None = None,
             published: str = "auto", log=print, executor=None) -> dict:
    """Run the evaluation and write RESULTS_DIR/{results.csv, summary.json, table.md, plots/}.

    executor: None runs every image in this process; a sedic.batch Executor (or a callable making
    one, closed at the end) runs one image per worker task, e.g. on Ray (docs/scale-out.md)."""
    bpps = [float(b) for b in bpps]
    if not bpps or any(not (0 < b < 24) for b in bpps):
        raise InputError("--bpp values must be in (0, 24)")
    bpps = list(dict.fromkeys(bpps))
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    metric_names = parse_metric_list(metrics)
    method_names = _split(methods)
    for name in method_names:
        if name not in SEDIC_METHODS:
            raise InputError(f"unknown method {name!r} (known: {', '.join(SEDIC_METHODS)}; baselines go "
                             "in --baselines)")
    baseline_names = _split(baselines)
    if semantics_dir is not None and not Path(semantics_dir).is_dir():
        raise InputError(f"--semantics-dir {semantics_dir}: no such directory")
    images = list_images(dataset_dir, limit)
    if executor is None:
        device = resolve_device(device)
    out = Path(out_dir)
    spec = EvaluationSpec(str(out.resolve()), tuple(bpps), tuple(metric_names), tuple(method_names),
                          tuple(baseline_names), profile=profile,
                          semantics_dir=str(Path(semantics_dir).resolve()) if semantics_dir else None,
                          analyze=analyze, stages=stages, seed=seed,
                          weights_dir=str(weights_dir) if weights_dir else None, clip_model=clip_model,
                          compressai_checkpoints=tuple((a, tuple(sorted(q.items())))
                                                       for a, q in sorted((compressai_checkpoints or {}).items())),
                          fid_patch=fid_patch)
    own = executor is not None and not isinstance(executor, Executor)
    if own:
        executor = executor()  # after every option check: a bad option never waits for Ray to start
    try:
        if executor is not None:
            worker_device = device
            if device:  # the workers' device must exist where they run (GPUs of the cluster)
                resolve_device(device, executor.gpus if isinstance(executor, RayExecutor) else None)
            device = device or ("cuda" if executor.gpus else "cpu")
        assert device is not None  # resolved: above for this process, here for the workers
        out.mkdir(parents=True, exist_ok=True)
        # The driver builds the evaluation too (names, metric list, FID/KID from cached features);
        # with an executor its models stay on the CPU and the workers do the work.
        ev, unavailable = spec.build(device if executor is None else "cpu", progress=progress)
        if not ev.methods:
            raise InputError("nothing to evaluate: every method was excluded or is unavailable "
                             + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
        worker = EvaluateImages(spec.available(unavailable), worker_device) if executor is not None else None
        result = ev.run(images, executor=executor, worker=worker)
    finally:
        if own:
            executor.close()
    run_methods, suite = ev.methods, ev.suite

    computed = suite.names
    names = [m.name for m in run_methods]
    means = aggregate(result.rows, result.set_metrics, names, bpps, computed)
    notes = _notes(profile, names, suite, unavailable, result, fid_patch, len(images))
    title = f"{Path(dataset_dir).name}: {len(images)} image(s), profile {profile or 'sedic (default)'}"
    write_csv(out / "results.csv", result.rows, computed)
    table = markdown_table(means, computed, notes)
    from ..imageio import atomic_write_bytes

    header = (f"# sedic evaluate: {title}\n\n"
              + (f"Command: `{command}`\n\n" if command else "")
              + f"Machine: {machine_description(device)}\n\n")
    atomic_write_bytes(out / "table.md", (header + table).encode(), force=True)
    # The peers' points are Kodak means: drawn on Kodak runs only unless asked.
    show_published = published == "always" or (published == "auto"
                                                and "kodak" in Path(dataset_dir).resolve().name.lower())
    plots = plot_metrics(out / "plots", means, names, computed, title, show_published=show_published)

    summary = {
        "command": command,
        "dataset": str(Path(dataset_dir).resolve()),
        "images": [p.name for p in images],
        "target_bpps": bpps,
        "profile": profile,
        "device": device,
        "machine": machine_description(device),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "methods": names,
        "methods_unavailable": unavailable,
        "metrics": metric_order(computed),
        "metrics_skipped": suite.skipped,
        "fid_kid": {"patch": fid_patch, "per_method_rate": {f"{m}@{b:g}": v for (m, b), v in
                                                            result.set_metrics.items()}},
        "means": means,
        "failures": [{k: r.get(k) for k in ("image", "method", "target_bpp", "error")}
                     for r in result.rows if r.get("status") != "ok"],
        "notes": notes,
        "published_points": PUBLISHED_KODAK if show_published else [],
        "work_done_this_run": result.work,
        "outputs": {"csv": "results.csv", "table": "table.md", "plots": [str(p.relative_to(out)) for p in plots]},
    }
    write_json(out / "summary.json", summary)
    if log:
        log(f"\n{header}{table}")
        log(f"work this run: encodes {result.work['encode']}, decodes {result.work['decode']}, "
            f"metric values {result.work['metrics']}, patch-feature sets {result.work['features']} "
            "(the rest reused from the results folder)")
        log(f"wrote {out / 'results.csv'}, {out / 'summary.json'}, {out / 'table.md'}, "
            f"{len(plots)} plot(s) in {out / 'plots'}")
    return summary


def _notes(profile, names, suite, unavailable, result, fid_patch, n_images) -> list[str]:
    notes = ["bpp = 8 x (whole file size in bytes) / (original width x height), measured from the files "
             "written; means are over the images where the method met the target rate."]
    if profile == "test" and "sedic" in names:
        notes.append("profile `test`: sedic's decoder and analysis are tiny random-weight models, so the "
                     "`sedic` rows are meaningless (code-path check only); `sedic-preview` (stage 0: the "
                     "reference image alone, a real codec) is meaningful.")
    for name, reason in suite.skipped.items():
        notes.append(f"metric {name} skipped: {reason}")
    for name, reason in unavailable.items():
        notes.append(f"baseline {name} skipped: {reason}")
    failed = [r for r in result.rows if r.get("status") != "ok"]
    if failed:
        by: dict[tuple[str, float], list[str]] = {}
        for r in failed:
            by.setdefault((r["method"], r["target_bpp"]), []).append(r["image"])
        for (m, b), imgs in sorted(by.items()):
            first_error = next(r["error"] for r in failed if r["method"] == m and r["target_bpp"] == b)
            notes.append(f"{m} at {b:g} bpp failed on {len(imgs)} image(s) ({', '.join(imgs[:5])}"
                         f"{', ...' if len(imgs) > 5 else ''}): {first_error}")
    if suite.set_names:
        pts = {v.get("patches") for v in result.set_metrics.values()}
        notes.append(f"FID/KID on {fid_patch}-px patches (grid from the top-left corner plus a grid shifted "
                     f"by {fid_patch // 2} px), {', '.join(str(p) for p in sorted(pts))} patches per set from "
                     f"{n_images} image(s); KID x 1000 is not applied (raw MMD^2).")
    return notes
