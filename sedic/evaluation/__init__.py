"""`sedic evaluate`: a folder of images -> per-image CSV, summary JSON, markdown table and plots.

The protocol (metrics, FID/KID patching, rate accounting, baselines) is in docs/evaluation.md.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from ..batch.executor import Executor, RayExecutor, opened
from ..devices import resolve_device
from ..errors import InputError
from ..imageio import atomic_write_bytes
from .baselines import CLASSICAL
from .methods import SEDIC_METHODS
from .metrics import parse_metric_list
from .published import PUBLISHED_KODAK
from .report import aggregate, markdown_table, metric_order, plot_metrics, write_csv, write_json
from .runner import Evaluation, RunResult, list_images, machine_description
from .spec import EvaluateImages, EvaluationSpec

DEFAULT_BPPS = (0.01, 0.02, 0.03, 0.05)
DEFAULT_BASELINES = (*CLASSICAL, "compressai-cheng2020-attn")
DEFAULT_CLIP = "openai/clip-vit-large-patch14"

__all__ = ["evaluate", "DEFAULT_BPPS", "DEFAULT_BASELINES", "DEFAULT_CLIP"]


def _split(value) -> list[str]:
    """Names from a comma-separated string or a list of them: trimmed, lower-cased, without repeats;
    "none" alone means no names."""
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

    The steps: check every option (`_check_inputs`), list the images, resolve the device, build and
    run the evaluation (`_run`), write the reports (`_write_reports`), log them (`_log_reports`).

    executor: None runs every image in this process; a sedic.batch Executor (or a callable making
    one, closed at the end) runs one image per worker task, e.g. on Ray (docs/scale-out.md)."""
    spec = _check_inputs(out_dir, bpps=bpps, limit=limit, metrics=metrics, methods=methods, baselines=baselines,
                         semantics_dir=semantics_dir, weights_dir=weights_dir,
                         compressai_checkpoints=compressai_checkpoints, profile=profile, analyze=analyze,
                         stages=stages, seed=seed, clip_model=clip_model, fid_patch=fid_patch)
    images = list_images(dataset_dir, limit)
    if executor is None:
        device = resolve_device(device)
    run = _run(spec, images, device, executor, progress)
    out = Path(out_dir)
    summary, text, plots = _write_reports(run, spec, dataset_dir, out, images, command=command, published=published)
    if log:
        _log_reports(log, text, run.result.work, out, plots)
    return summary


# ------------------------------------------------------------------ step 1: the options

def _check_rates(bpps, limit: int | None) -> list[float]:
    """The target rates as floats, each in (0, 24), in the order given without repeats; and
    `limit` (a number of images) at least 1 when given."""
    rates = [float(b) for b in bpps]
    if not rates or any(not (0 < b < 24) for b in rates):
        raise InputError("--bpp values must be in (0, 24)")
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    return list(dict.fromkeys(rates))


def _check_methods(methods) -> list[str]:
    """sedic's methods asked for (names, or comma-separated lists), each one of SEDIC_METHODS."""
    names = _split(methods)
    for name in names:
        if name not in SEDIC_METHODS:
            raise InputError(f"unknown method {name!r} (known: {', '.join(SEDIC_METHODS)}; baselines go "
                             "in --baselines)")
    return names


def _check_inputs(out_dir, *, bpps, limit, metrics, methods, baselines, semantics_dir, weights_dir,
                  compressai_checkpoints, **options) -> EvaluationSpec:
    """Every option checked, each failure a one-line InputError, before any work; the spec they
    make (`options`: the EvaluationSpec fields passed through as given)."""
    rates = _check_rates(bpps, limit)
    metric_names = parse_metric_list(metrics)
    method_names = _check_methods(methods)
    baseline_names = _split(baselines)
    if semantics_dir is not None and not Path(semantics_dir).is_dir():
        raise InputError(f"--semantics-dir {semantics_dir}: no such directory")
    checkpoints = tuple((arch, tuple(sorted(q.items()))) for arch, q in sorted((compressai_checkpoints or {}).items()))
    return EvaluationSpec(str(Path(out_dir).resolve()), tuple(rates), tuple(metric_names), tuple(method_names),
                          tuple(baseline_names),
                          semantics_dir=str(Path(semantics_dir).resolve()) if semantics_dir else None,
                          weights_dir=str(weights_dir) if weights_dir else None,
                          compressai_checkpoints=checkpoints, **options)


# ------------------------------------------------------------------ step 2: the run

@dataclass
class _Run:
    """What the run hands to the reports."""

    ev: Evaluation
    unavailable: dict[str, str]  # baseline -> why it did not run
    result: RunResult
    device: str  # where the images ran (the report's machine line)


def _devices(device: str | None, executor: Executor | None) -> tuple[str | None, str | None]:
    """The run's device, and the one the workers are told (None: each worker's own: cuda on a GPU
    worker). Without an executor `device` is already resolved and both are it."""
    if executor is None:
        return device, device
    if device:  # the workers' device must exist where they run (GPUs of the cluster)
        resolve_device(device, executor.gpus if isinstance(executor, RayExecutor) else None)
    return device or ("cuda" if executor.gpus else "cpu"), device


def _run(spec: EvaluationSpec, images: list[Path], device: str | None, executor, progress: bool) -> _Run:
    """Build the evaluation and run every image: in this process, or one image per task on the
    executor (a factory is called only now, after every option check, and closed after the run)."""
    with opened(executor) as ex:
        device, worker_device = _devices(device, ex)
        assert device is not None  # resolved: by evaluate() for this process, by _devices for the workers
        Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
        # The driver builds the evaluation too (names, metric list, FID/KID from cached features);
        # with an executor its models stay on the CPU and the workers do the work.
        ev, unavailable = spec.build(device if ex is None else "cpu", progress=progress)
        if not ev.methods:
            raise InputError("nothing to evaluate: every method was excluded or is unavailable "
                             + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
        worker = EvaluateImages(spec.available(unavailable), worker_device) if ex is not None else None
        return _Run(ev, unavailable, ev.run(images, executor=ex, worker=worker), device)


# ------------------------------------------------------------------ step 3: the reports

def _write_reports(run: _Run, spec: EvaluationSpec, dataset_dir, out: Path, images: list[Path], *,
                   command: str | None, published: str) -> tuple[dict, str, list[Path]]:
    """results.csv, table.md, the plots and summary.json; returns the summary, the table's text
    (with its header) and the plots written."""
    suite, result, computed = run.ev.suite, run.result, run.ev.suite.names
    names = [m.name for m in run.ev.methods]
    means = aggregate(result.rows, result.set_metrics, names, list(spec.bpps), computed)
    notes = _notes(spec.profile, names, suite, run.unavailable, result, spec.fid_patch, len(images))
    title = f"{Path(dataset_dir).name}: {len(images)} image(s), profile {spec.profile or 'sedic (default)'}"
    write_csv(out / "results.csv", result.rows, computed)
    text = _header(title, command, run.device) + markdown_table(means, computed, notes)
    atomic_write_bytes(out / "table.md", text.encode(), force=True)
    show_published = _show_published(published, dataset_dir)
    plots = plot_metrics(out / "plots", means, names, computed, title, show_published=show_published)
    summary = _summary(run, spec, dataset_dir, out, images, command=command, means=means, notes=notes,
                       show_published=show_published, plots=plots)
    write_json(out / "summary.json", summary)
    return summary, text, plots


def _header(title: str, command: str | None, device: str) -> str:
    """table.md's heading: the title, the command (when known) and the machine."""
    return (f"# sedic evaluate: {title}\n\n"
            + (f"Command: `{command}`\n\n" if command else "")
            + f"Machine: {machine_description(device)}\n\n")


def _show_published(published: str, dataset_dir) -> bool:
    """Whether the peers' published points are drawn: they are Kodak means, so on Kodak runs only
    unless asked ("always"; "never")."""
    return published == "always" or (published == "auto" and "kodak" in Path(dataset_dir).resolve().name.lower())


def _summary(run: _Run, spec: EvaluationSpec, dataset_dir, out: Path, images: list[Path], *, command: str | None,
             means: list[dict], notes: list[str], show_published: bool, plots: list[Path]) -> dict:
    """summary.json's content (also evaluate()'s return value)."""
    result = run.result
    return {
        "command": command,
        "dataset": str(Path(dataset_dir).resolve()),
        "images": [p.name for p in images],
        "target_bpps": list(spec.bpps),
        "profile": spec.profile,
        "device": run.device,
        "machine": machine_description(run.device),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "methods": [m.name for m in run.ev.methods],
        "methods_unavailable": run.unavailable,
        "metrics": metric_order(run.ev.suite.names),
        "metrics_skipped": run.ev.suite.skipped,
        "fid_kid": {"patch": spec.fid_patch, "per_method_rate": {f"{m}@{b:g}": v for (m, b), v in
                                                                 result.set_metrics.items()}},
        "means": means,
        "failures": [{k: r.get(k) for k in ("image", "method", "target_bpp", "error")}
                     for r in result.rows if r.get("status") != "ok"],
        "notes": notes,
        "published_points": PUBLISHED_KODAK if show_published else [],
        "work_done_this_run": result.work,
        "outputs": {"csv": "results.csv", "table": "table.md", "plots": [str(p.relative_to(out)) for p in plots]},
    }


def _log_reports(log, text: str, work: dict, out: Path, plots: list[Path]) -> None:
    """The table, the work this run did (the rest was reused) and the files written, to `log`."""
    log(f"\n{text}")
    log(f"work this run: encodes {work['encode']}, decodes {work['decode']}, "
        f"metric values {work['metrics']}, patch-feature sets {work['features']} "
        "(the rest reused from the results folder)")
    log(f"wrote {out / 'results.csv'}, {out / 'summary.json'}, {out / 'table.md'}, "
        f"{len(plots)} plot(s) in {out / 'plots'}")


def _notes(profile, names, suite, unavailable, result, fid_patch, n_images) -> list[str]:
    """The table's notes: how the rate is measured, what is meaningless with profile `test`, what
    was skipped, what failed and how FID/KID were computed."""
    notes = ["bpp = 8 x (whole file size in bytes) / (original width x height), measured from the files "
             "written; means are over the images where the method met the target rate."]
    if profile == "test" and "sedic" in names:
        notes.append("profile `test`: sedic's decoder and analysis are tiny random-weight models, so the "
                     "`sedic` rows are meaningless (code-path check only); `sedic-preview` (stage 0: the "
                     "reference image alone, a real codec) is meaningful.")
    notes += [f"metric {name} skipped: {reason}" for name, reason in suite.skipped.items()]
    notes += [f"baseline {name} skipped: {reason}" for name, reason in unavailable.items()]
    notes += _failure_notes([r for r in result.rows if r.get("status") != "ok"])
    if suite.set_names:
        pts = {v.get("patches") for v in result.set_metrics.values()}
        notes.append(f"FID/KID on {fid_patch}-px patches (grid from the top-left corner plus a grid shifted "
                     f"by {fid_patch // 2} px), {', '.join(str(p) for p in sorted(pts))} patches per set from "
                     f"{n_images} image(s); KID x 1000 is not applied (raw MMD^2).")
    return notes


def _failure_notes(failed: list[dict]) -> list[str]:
    """One note per (method, rate) that failed somewhere: how many images (the first five named)
    and the first error."""
    by: dict[tuple[str, float], list[str]] = {}
    for r in failed:
        by.setdefault((r["method"], r["target_bpp"]), []).append(r["image"])
    notes = []
    for (m, b), imgs in sorted(by.items()):
        first_error = next(r["error"] for r in failed if r["method"] == m and r["target_bpp"] == b)
        notes.append(f"{m} at {b:g} bpp failed on {len(imgs)} image(s) ({', '.join(imgs[:5])}"
                     f"{', ...' if len(imgs) > 5 else ''}): {first_error}")
    return notes
