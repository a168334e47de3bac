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
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, one_line
from ..imageio import atomic_write_bytes
from .executor import Executor, LocalExecutor, Stage, WorkItem, opened
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


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Outputs:
    """OUT_DIR during one run: where each image's output goes, the manifest, and this run's tally."""

    out: Path
    suffix: str
    manifest: Manifest
    counts: dict = field(default_factory=lambda: {"ok": 0, "failed": 0})

    def target(self, name: str) -> Path:
        """The output path of the input file `name`."""
        return self.out / f"{Path(name).stem}{self.suffix}"

    def plan(self, files: list[Path]) -> tuple[list[Path], list[Path]]:
        """Split the inputs into those to run (no output yet) and those whose output exists but is
        not this batch's (never skipped as done, never replaced); the rest are finished."""
        made = {r.get("output") for r in self.manifest.records() if r.get("status") == "ok"}
        todo, foreign = [], []
        for p in files:
            target = self.target(p.name)
            if not target.exists():
                todo.append(p)
            elif target.name not in made:
                foreign.append(p)
        return todo, foreign

    def refuse(self, p: Path, log) -> None:
        """Fail an input whose output path holds a file this batch did not make."""
        error = (f"{self.target(p.name)} exists but {self.manifest.path.name} does not record it as this batch's "
                 "output; remove it or use another -o folder")
        log(f"sedic: error: {p.name}: {error}")
        self.add({"image": p.name, "status": "failed", "error": error, "attempts": 0, "finished": _now()})

    def record(self, item: WorkItem) -> dict:
        """The manifest record of a finished item, its output written first when it succeeded (a
        failed write fails the item)."""
        record = {"image": item.key, "status": item.status, "seconds": round(item.seconds, 3),
                  "attempts": item.attempts, "error": item.error, "warnings": item.warnings or None}
        if item.status == "ok":
            target = self.target(item.key)
            data = item.payload["data"]
            try:
                atomic_write_bytes(target, data)
                record.update(output=target.name, bytes=len(data),
                              bpp=item.payload.get("bpp") or 8 * len(data) / item.payload["pixels"])
                if "input_bytes" in item.payload:  # decompress: the rate is the input file's
                    record["bytes"] = item.payload["input_bytes"]
            except (InputError, OSError) as exc:
                record.update(status="failed", error=f"writing {target}: {one_line(exc)}")
        return record

    def add(self, record: dict) -> None:
        """Append a record to the manifest and count it."""
        self.manifest.append(record)
        self.counts[record["status"]] += 1


def _item_error(record: dict) -> str:
    """A failed record's message, naming the image once (input errors already start with its path)."""
    error = record["error"] or ""
    return record["error"] if record["image"] in error else f"{record['image']}: {record['error']}"


def _run_items(executor: Executor, stages: list[Stage], todo: list[Path], outputs: _Outputs, bar) -> None:
    """Every input through the stages on the executor; each finished item's output and record
    written as it arrives, failures printed above the progress bar."""
    items = [WorkItem(p.name, {"src": str(p.resolve())}) for p in todo]
    for item in executor.run(stages, items):
        record = outputs.record(item)
        if record["status"] != "ok":
            bar.write(f"sedic: error: {_item_error(record)}", file=sys.stderr)
        record["finished"] = _now()
        outputs.add(record)
        if outputs.counts["failed"]:  # before update(), which may print the line
            bar.set_postfix(failed=outputs.counts["failed"], refresh=False)
        bar.update(1)


def run_batch(command: str, in_dir, out_dir, *, suffixes, what: str, out_suffix: str, options: dict,
              stages: list[Stage], executor=None, progress: bool = True,
              log=None) -> BatchSummary:
    """The shared driver: list the inputs, claim OUT_DIR, skip what is finished, run the rest on the
    executor, write the outputs and the manifest, log the summary line.

    executor: an Executor (left open), a callable making one (closed at the end), or None (local)."""
    log = log or _stderr
    files = _inputs(in_dir, suffixes, what)
    out = Path(out_dir)
    _claim_out_dir(out, command, options)
    outputs = _Outputs(out, out_suffix, Manifest(out / MANIFEST_FILE))
    todo, foreign = outputs.plan(files)
    with opened(executor, LocalExecutor) as ex:  # made only now, after every check
        assert ex is not None  # a default is given
        start = time.perf_counter()
        for p in foreign:
            outputs.refuse(p, log)
        bar = progress_bar(total=len(todo), unit="img", file=sys.stderr, disable=not progress or not todo,
                           desc=f"batch {command}")
        try:
            _run_items(ex, stages, todo, outputs, bar)
        finally:
            bar.close()
    summary = BatchSummary(len(files), outputs.counts["ok"], outputs.counts["failed"],
                           len(files) - len(todo) - len(foreign), time.perf_counter() - start, out, ex.describe())
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
