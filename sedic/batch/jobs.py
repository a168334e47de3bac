"""`sedic batch compress|decompress`: a folder in, a folder out, resumably, on any executor.

OUT_DIR holds the outputs (<stem>.sedic or <stem>.png, each written atomically; an output that
exists AND that the manifest records as made is finished; one it does not record is never
skipped nor replaced, but reported as a failure), `manifest.jsonl` (one line per image processed: see manifest.py) and
`batch.json` (the options the outputs were made with: a rerun with other options into the same
folder is refused rather than mixing files made two ways). A rerun skips every finished output.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, one_line
from ..imageio import atomic_write_bytes
from .executor import Executor, LocalExecutor, Stage, WorkItem
from .manifest import Manifest
from .progress import progress_bar
from .work import Analyzer, Decoder, Encoder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".avif", ".heic", ".heif")
OPTIONS_FILE = "batch.json"
MANIFEST_FILE = "manifest.jsonl"


@dataclass
class BatchSummary:
    inputs: int
    done: int
    failed: int
    skipped: int
    seconds: float
    out_dir: Path
    executor: str

    @property
    def exit_code(self) -> int:
        return 2 if self.failed else 0

    def line(self) -> str:
        rate = self.done / self.seconds * 3600 if self.seconds > 0 and self.done else 0.0
        return (f"{self.done} done, {self.failed} failed, {self.skipped} already done (skipped) of {self.inputs} "
                f"in {self.seconds:.1f} s ({rate:.0f} images/hour; {self.executor}); "
                f"manifest {self.out_dir / MANIFEST_FILE}")


def _inputs(in_dir: str | Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    d = Path(in_dir)
    if not d.is_dir():
        raise InputError(f"{d}: not a directory")
    files = sorted((p for p in d.iterdir() if p.is_file() and p.suffix.lower() in suffixes), key=lambda p: p.name)
    if not files:
        raise InputError(f"{d}: no {what}")
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise InputError(f"{stems[p.stem].name} and {p.name} would both write {p.stem}.*: rename one")
        stems[p.stem] = p
    return files


def _claim_out_dir(out_dir: Path, command: str, options: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / OPTIONS_FILE
    wanted = {"command": command, "options": options}
    if path.is_file():
        try:
            found = json.loads(path.read_text())
        except ValueError:
            found = None
        if found != wanted:
            raise InputError(f"{out_dir} holds outputs of another batch ({path}: {json.dumps(found)}); "
                             f"use a new -o folder, or remove it to start over")
        return
    atomic_write_bytes(path, (json.dumps(wanted, indent=1, sort_keys=True) + "\n").encode(), force=True)


def run_batch(command: str, in_dir, out_dir, *, suffixes, what: str, out_suffix: str, options: dict,
              stages: list[Stage], executor=None, progress: bool = True,
              log=None) -> BatchSummary:
    """The shared driver: list, skip what is finished, run the rest, write outputs and the manifest.

    executor: an Executor (left open), a callable making one (closed at the end), or None (local)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    files = _inputs(in_dir, suffixes, what)
    out = Path(out_dir)
    _claim_out_dir(out, command, options)
    manifest = Manifest(out / MANIFEST_FILE)
    made = {r.get("output") for r in manifest.records() if r.get("status") == "ok"}
    todo, foreign = [], []
    for p in files:
        target = out / f"{p.stem}{out_suffix}"
        if not target.exists():
            todo.append(p)
        elif target.name not in made:  # not this batch's output: never skipped as done, never replaced
            foreign.append(p)
    skipped = len(files) - len(todo) - len(foreign)
    # a factory is called only now, after every check: a bad option never waits for Ray to start
    own = not isinstance(executor, Executor)
    executor = (executor or LocalExecutor)() if own else executor
    counts = {"ok": 0, "failed": 0}
    start = time.perf_counter()
    for p in foreign:
        target = out / f"{p.stem}{out_suffix}"
        error = (f"{target} exists but {manifest.path.name} does not record it as this batch's output; "
                 "remove it or use another -o folder")
        log(f"sedic: error: {p.name}: {error}")
        manifest.append({"image": p.name, "status": "failed", "error": error, "attempts": 0,
                         "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        counts["failed"] += 1
    bar = progress_bar(total=len(todo), unit="img", file=sys.stderr, disable=not progress or not todo,
                       desc=f"batch {command}")
    try:
        items = [WorkItem(p.name, {"src": str(p.resolve())}) for p in todo]
        for item in executor.run(stages, items):
            target = out / f"{Path(item.key).stem}{out_suffix}"
            record = {"image": item.key, "status": item.status, "seconds": round(item.seconds, 3),
                      "attempts": item.attempts, "error": item.error, "warnings": item.warnings or None}
            if item.status == "ok":
                data = item.payload["data"]
                try:
                    atomic_write_bytes(target, data)
                    record.update(output=target.name, bytes=len(data),
                                  bpp=item.payload.get("bpp") or 8 * len(data) / item.payload["pixels"])
                    if "input_bytes" in item.payload:  # decompress: the rate is the input file's
                        record["bytes"] = item.payload["input_bytes"]
                except (InputError, OSError) as exc:
                    record.update(status="failed", error=f"writing {target}: {one_line(exc)}")
            if record["status"] != "ok":  # name the image once (input errors already start with its path)
                error = record["error"] if item.key in (record["error"] or "") else f"{item.key}: {record['error']}"
                bar.write(f"sedic: error: {error}", file=sys.stderr)
            record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            manifest.append(record)
            counts[record["status"]] += 1
            if counts["failed"]:  # before update(), which may print the line
                bar.set_postfix(failed=counts["failed"], refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if own:
            executor.close()
    summary = BatchSummary(len(files), counts["ok"], counts["failed"], skipped, time.perf_counter() - start, out,
                           executor.describe())
    log(f"sedic batch {command}: {summary.line()}")
    return summary


def compress_dir(in_dir, out_dir, *, bpp: float = 0.03, semantics_dir=None, analyze: bool = False,
                 profile: str | None = None, seed: int = 0, schedule: dict | None = None,
                 best_effort: bool = False, executor=None, progress: bool = True, log=None) -> BatchSummary:
    """Compress every PNG/JPEG/WebP of in_dir to out_dir/<stem>.sedic.

    Semantics: `analyze` runs the profile's analysis models; `semantics_dir` reads
    <stem>.json there (an image without one fails); neither codes the reference alone."""
    from ..codec import settings_section

    schedule = dict(schedule or {})
    # the codec's own checks (profile, rate, seed, every schedule value), before any work or batch.json
    settings_section(profile, bpp=bpp, seed=seed, overrides=schedule)
    if analyze and semantics_dir is not None:
        raise InputError("--analyze and --semantics-dir exclude each other")
    if semantics_dir is not None:
        if not Path(semantics_dir).is_dir():
            raise InputError(f"--semantics-dir {semantics_dir}: no such directory")
        semantics_dir = str(Path(semantics_dir).resolve())
    options = {"bpp": bpp, "profile": profile, "seed": seed, "schedule": schedule,
               "semantics": "analyze" if analyze else (semantics_dir or "none")}
    if best_effort:  # only when set: folders made before the option existed keep their batch.json
        options["best_effort"] = True
    stages = [Stage("encode", Encoder(bpp, profile, seed, tuple(sorted(schedule.items())), semantics_dir,
                              best_effort))]
    if analyze:
        stages.insert(0, Stage("analyze", Analyzer(profile), uses_models=True))
    return run_batch("compress", in_dir, out_dir, suffixes=IMAGE_SUFFIXES, what="PNG, JPEG or WebP images",
                     out_suffix=".sedic", options=options, stages=stages, executor=executor,
                     progress=progress, log=log)


def decompress_dir(in_dir, out_dir, *, stages: int | None = None, profile: str | None = None,
                   executor=None, progress: bool = True, log=None) -> BatchSummary:
    """Decode every .sedic file of in_dir to out_dir/<stem>.png (stages=0: the previews)."""
    from ..config import get_profile

    if profile is not None:
        get_profile(profile)
    if stages is not None and stages < 0:
        raise InputError(f"--stages must be at least 0, got {stages}")
    options = {"profile": profile, "stages": stages}
    return run_batch("decompress", in_dir, out_dir, suffixes=(".sedic",), what=".sedic files", out_suffix=".png",
                     options=options, stages=[Stage("decode", Decoder(profile, stages), uses_models=True)],
                     executor=executor, progress=progress, log=log)
