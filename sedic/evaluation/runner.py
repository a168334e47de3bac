"""Running every method on every image at every rate, resumably.

Layout of RESULTS_DIR (every file written atomically, so a killed run leaves only whole files):
    files/<file_key>/bpp<rate>/<stem><ext>        the encoded file (the rate is measured from it)
    files/<file_key>/bpp<rate>/<stem><ext>.json   encode seconds, device, codec settings
    decoded/<method>/bpp<rate>/<stem>.png (+.json) the decoded image, decode seconds, device
    features/<extractor>/<method|original>/...npy  Inception features of the 256-px patches
    rows/<method>/bpp<rate>/<stem>.json            the finished row: rates and metrics
A rerun reuses each of these, so a resumed run encodes, decodes and measures nothing twice; only
FID/KID, cheap aggregates of the cached features, are recomputed from the cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import RateError, SedicError, one_line
from ..imageio import atomic_write_bytes, load_image
from .methods import STREAMS, Method
from .metrics import MetricSkipped, MetricSuite, frechet_distance, kernel_distance

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".avif", ".heic", ".heif"}


def list_images(dataset_dir: str | Path, limit: int | None = None) -> list[Path]:
    d = Path(dataset_dir)
    if not d.is_dir():
        from ..errors import InputError

        raise InputError(f"{d}: not a directory of images")
    files = sorted((p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.name)
    if not files:
        from ..errors import InputError

        raise InputError(f"{d}: no PNG, JPEG or WebP images")
    return files[:limit] if limit else files


def rate_tag(bpp: float) -> str:
    return f"bpp{bpp:g}"


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), force=True)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or torn by a kill before the rename: redo that step


def _png_bytes(img: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class RunResult:
    rows: list[dict] = field(default_factory=list)
    set_metrics: dict = field(default_factory=dict)   # (method, bpp) -> {"fid": .., "kid": .., ...}
    work: dict = field(default_factory=lambda: {"encode": 0, "decode": 0, "metrics": 0, "features": 0})


class Evaluation:
    def __init__(self, out_dir: str | Path, methods: list[Method], suite: MetricSuite, bpps: list[float],
                 *, semantics_dir: str | Path | None = None, progress: bool = True):
        self.out = Path(out_dir)
        self.methods = methods
        self.suite = suite
        self.bpps = list(bpps)
        self.semantics_dir = Path(semantics_dir) if semantics_dir else None
        self.progress = progress
        self.result = RunResult()

    # ------------------------------------------------------------ paths
    def _file(self, m: Method, bpp: float, stem: str) -> Path:
        return self.out / "files" / m.file_key / rate_tag(bpp) / f"{stem}{m.ext}"

    def _decoded(self, m: Method, bpp: float, stem: str) -> Path:
        return self.out / "decoded" / m.name / rate_tag(bpp) / f"{stem}.png"

    def _row(self, m: Method, bpp: float, stem: str) -> Path:
        return self.out / "rows" / m.name / rate_tag(bpp) / f"{stem}.json"

    def _features(self, who: str, bpp: float | None, stem: str) -> Path:
        assert self.suite.patch_features is not None  # called only when FID/KID are computed
        base = self.out / "features" / self.suite.patch_features.name / who
        return (base / rate_tag(bpp) if bpp is not None else base) / f"{stem}.npy"

    # ------------------------------------------------------------ steps
    def _encoded(self, m: Method, image: np.ndarray, bpp: float, stem: str) -> tuple[bytes, dict]:
        path = self._file(m, bpp, stem)
        meta_path = path.with_name(path.name + ".json")
        meta = _read_json(meta_path)
        if meta is not None and path.is_file() and meta.get("config") == m.encode_config():
            return path.read_bytes(), meta
        t = time.perf_counter()
        enc = m.encode(image, bpp, stem)
        wall = time.perf_counter() - t
        self.result.work["encode"] += 1
        info = dict(enc.info)
        meta = {"encode_s": info.pop("encode_s", wall), "search_s": wall, "device": m.device, "info": info,
                "config": m.encode_config()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, enc.data, force=True)
        _write_json(meta_path, meta)  # written last: its presence means the file is complete
        return enc.data, meta

    def _decode(self, m: Method, data: bytes, size, info: dict, bpp: float, stem: str) -> tuple[np.ndarray, dict]:
        path = self._decoded(m, bpp, stem)
        meta_path = path.with_name(path.name + ".json")
        config = {"file_sha256": hashlib.sha256(data).hexdigest(), **m.decode_config()}
        meta = _read_json(meta_path)
        if meta is not None and path.is_file() and meta.get("config") == config:
            return np.asarray(Image.open(path).convert("RGB")), meta
        t = time.perf_counter()
        img = np.asarray(m.decode(data, size, info), dtype=np.uint8)
        meta = {"decode_s": time.perf_counter() - t, "device": m.device, "config": config}
        self.result.work["decode"] += 1
        if img.shape[:2] != (size[1], size[0]):
            raise RuntimeError(f"{m.name} decoded {img.shape[1]}x{img.shape[0]}, expected {size[0]}x{size[1]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, _png_bytes(img), force=True)
        _write_json(meta_path, meta)
        return img, meta

    def _patch_features(self, who: str, bpp, stem: str, img_fn) -> np.ndarray:
        path = self._features(who, bpp, stem)
        if path.is_file():
            try:
                return np.load(path)
            except (OSError, ValueError):
                pass
        assert self.suite.patch_features is not None  # called only when FID/KID are computed
        feats = self.suite.patch_features(img_fn())
        self.result.work["features"] += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        import io

        buf = io.BytesIO()
        np.save(buf, feats)
        atomic_write_bytes(path, buf.getvalue(), force=True)
        return feats

    def _description(self, stem: str, bpp: float) -> str | None:
        """Overall description for the CLIP score: the semantics cache, else what sedic's file carries."""
        cached = self._cached_description(stem)
        if cached:
            return cached
        for m in self.methods:
            if m.file_key == "sedic":
                path = self._file(m, bpp, stem)
                if path.is_file():
                    try:
                        return m.description(path.read_bytes())
                    except SedicError:
                        return None
        return None

    def _cached_description(self, stem: str) -> str | None:
        """The "overall" description of the image's semantics file, if there is one and it has it."""
        if self.semantics_dir is None:
            return None
        p = self.semantics_dir / f"{stem}.json"
        obj = _read_json(p) if p.is_file() else None
        return obj.get("overall") if obj else None

    def _one(self, m: Method, stem: str, original: np.ndarray, bpp: float) -> dict:
        """One method at one rate on one image: the row, reused from the results folder when it was
        made with the same options and has every metric asked for, else (re)made and written; then
        the decoded image's patch features for FID/KID."""
        config = {"encode": m.encode_config(), "decode": m.decode_config()}
        row = self._cached_row(self._row(m, bpp, stem), config)
        if _unmet_rate(row):
            return row  # a rate that cannot be met stays unmet: do not retry on resume (other failures: retry)
        if not self._complete(row):
            row = self._make_row(m, stem, original, bpp, row, config)
        if self.suite.patch_features is not None and row.get("status") == "ok":
            self._patch_features(m.name, bpp, stem,
                                 lambda: np.asarray(Image.open(self._decoded(m, bpp, stem)).convert("RGB")))
        return row

    @staticmethod
    def _cached_row(row_path: Path, config: dict) -> dict:
        """The row written by an earlier run with the same options, else an empty one."""
        row = _read_json(row_path) or {}
        return row if row.get("config") == config else {}  # other options (profile, stages, seed, search...): redo

    def _complete(self, row: dict) -> bool:
        """Whether a row succeeded and holds (or skipped) every per-image metric of this run."""
        return row.get("status") == "ok" and all(k in row.get("metrics", {}) or k in row.get("skipped", {})
                                                 for k in self.suite.image)

    def _make_row(self, m: Method, stem: str, original: np.ndarray, bpp: float, row: dict, config: dict) -> dict:
        """Encode (or reuse the file), decode (or reuse the PNG), measure the rates and the metrics
        `row` lacks, and write the row; an encode that fails gives a failed row instead."""
        row_path = self._row(m, bpp, stem)
        h, w = original.shape[:2]
        try:
            data, emeta = self._encoded(m, original, bpp, stem)
        except SedicError as exc:
            failed = {"image": stem, "method": m.name, "target_bpp": bpp, "status": "failed",
                      "error": f"{type(exc).__name__}: {exc}", "width": w, "height": h, "config": config}
            # Only an unmet rate belongs to the image and the options in `config`; any other
            # failure (device, missing model, ...) comes from this run's environment and is
            # not cached, so a rerun with other options tries again.
            if isinstance(exc, RateError):
                _write_json(row_path, failed)
            return failed
        decoded, dmeta = self._decode(m, data, (w, h), emeta.get("info", {}), bpp, stem)
        row.update({"image": stem, "method": m.name, "target_bpp": bpp, "status": "ok", "width": w,
                    "height": h, "bytes": len(data), "bpp": 8 * len(data) / (w * h),
                    "encode_s": emeta["encode_s"], "search_s": emeta.get("search_s"),
                    "decode_s": dmeta["decode_s"], "device": dmeta.get("device", m.device),
                    "info": emeta.get("info", {}), "config": config})
        row.update(_stream_rates(m.stream_bits(data), w * h))
        self._measure(row, stem, bpp, original, decoded)
        _write_json(row_path, row)
        return row

    def _measure(self, row: dict, stem: str, bpp: float, original: np.ndarray, decoded: np.ndarray) -> None:
        """Compute the per-image metrics the row lacks into row["metrics"] (a metric that cannot run
        on this image goes to row["skipped"] with the reason)."""
        metrics, skipped = row.setdefault("metrics", {}), row.setdefault("skipped", {})
        text = None
        for name, fn in self.suite.image.items():
            if name in metrics:
                continue
            if getattr(fn, "needs_text", False) and text is None:
                text = self._description(stem, bpp) or ""
            try:
                metrics[name] = float(fn(original, decoded, text=text))
                skipped.pop(name, None)
                self.result.work["metrics"] += 1
            except MetricSkipped as exc:
                skipped[name] = str(exc)

    # ------------------------------------------------------------ the run
    def image_rows(self, path: Path, bar=None) -> list[dict]:
        """Every method at every rate on one image (the unit a worker runs): its rows. An image that
        fails as a whole (a SedicError: unreadable, above the pixel limit...) gives a failed row
        per method and rate with the one-line reason, in this process and on a worker alike."""
        rows: list[dict] = []
        try:
            self._fill_rows(path, rows, bar)
        except SedicError as exc:
            if bar is not None:
                bar.update(len(self.methods) * len(self.bpps) - len(rows))
            return self._failed_rows(path.stem, one_line(exc))
        return rows

    def _failed_rows(self, stem: str, error: str | None) -> list[dict]:
        """A failed row per method and rate for an image that failed as a whole (nothing cached)."""
        return [{"image": stem, "method": m.name, "target_bpp": bpp, "status": "failed", "error": error}
                for m in self.methods for bpp in self.bpps]

    def _fill_rows(self, path: Path, rows: list[dict], bar) -> None:
        """image_rows' work: each row appended to `rows` as it is made."""
        stem = path.stem
        original = load_image(path)
        if self.suite.patch_features is not None:
            self._patch_features("original", None, stem, lambda: original)
        for m in self.methods:
            for bpp in self.bpps:
                if bar is not None:
                    bar.set_description(f"{stem} {m.name} {bpp:g}bpp")
                rows.append(self._one(m, stem, original, bpp))
                if bar is not None:
                    bar.update(1)

    def run(self, images: list[Path], executor=None, worker=None) -> RunResult:
        """In this process, or with `executor` (sedic.batch) running `worker` (a stage worker factory
        that rebuilds this evaluation, see spec.py) on each image; rows come back in the same order."""
        from ..batch.progress import progress_bar  # tqdm on a terminal, whole lines in a pipe

        per_image = len(self.methods) * len(self.bpps)
        bar = progress_bar(total=len(images) * per_image, desc="evaluate", unit="item", file=sys.stderr,
                           disable=not self.progress)
        try:
            if executor is None:
                for path in images:  # deterministic: sorted images, then the methods and rates as given
                    # resolved, as a worker gets it, so that an error naming the file reads the same
                    rows = self.image_rows(path.resolve(), bar)
                    _report_failures(rows, bar)
                    self.result.rows.extend(rows)
            else:
                self.result.rows.extend(self._run_on(executor, worker, images, bar))
        finally:
            bar.close()
        if self.suite.patch_features is not None:
            originals = {p.stem: (np.load(self._features("original", None, p.stem))
                                  if self._features("original", None, p.stem).is_file() else np.zeros((0, 1)))
                         for p in images}  # absent: the image failed before its features (no FID/KID share)
            self._set_metrics(images, originals)
        return self.result

    def _run_on(self, executor, worker, images: list[Path], bar) -> list[dict]:
        """Every image as one work item on the executor (sedic.batch's, the one `sedic batch` uses):
        their rows in the order of `images`; this run's work counts added up."""
        from ..batch.executor import Stage, WorkItem

        by_image: dict[str, list[dict]] = {}
        items = [WorkItem(p.name, {"src": str(p.resolve())}) for p in images]
        for item in executor.run([Stage("evaluate", worker, uses_models=True)], items):
            by_image[item.key] = self._collected(item)
            _report_failures(by_image[item.key], bar)
            bar.set_description(item.key)
            bar.update(len(self.methods) * len(self.bpps))
        return [row for p in images for row in by_image[p.name]]

    def _collected(self, item) -> list[dict]:
        """A finished work item's rows, its work counted; an image that failed in its worker as a
        whole gives a failed row per method and rate (nothing cached)."""
        if item.status != "ok":
            return self._failed_rows(Path(item.key).stem, item.error)
        for k, v in item.payload["work"].items():
            self.result.work[k] = self.result.work.get(k, 0) + v
        return item.payload["rows"]

    def _set_metrics(self, images, originals_feats) -> None:
        """FID/KID of every method at every rate over the patch features of the images it succeeded
        on (recomputed each run from the cached features)."""
        ok = {(r["method"], r["target_bpp"], r["image"]) for r in self.result.rows if r.get("status") == "ok"}
        for m in self.methods:
            for bpp in self.bpps:
                stems = [p.stem for p in images if (m.name, bpp, p.stem) in ok]
                self.result.set_metrics[(m.name, bpp)] = self._set_entry(m, bpp, stems, len(images), originals_feats)

    def _set_entry(self, m: Method, bpp: float, stems: list[str], n_images: int, originals_feats) -> dict:
        """The set metrics of one method at one rate over the images `stems` (of `n_images`)."""
        entry: dict = {"images": len(stems)}
        if len(stems) < n_images:
            entry["note"] = f"{n_images - len(stems)} image(s) failed; FID/KID over the rest"
        with_patches = [s for s in stems if originals_feats[s].size]
        ref = _stack([originals_feats[s] for s in with_patches])
        dec = _stack([np.load(self._features(m.name, bpp, s)) for s in with_patches])
        entry["patches"] = int(len(ref))
        for name in self.suite.set_names:
            try:
                if name == "fid":
                    entry["fid"] = frechet_distance(ref, dec)
                else:
                    entry["kid"], entry["kid_std"] = kernel_distance(ref, dec, self.suite.kid_subsets)
            except MetricSkipped as exc:
                assert self.suite.patch_features is not None  # set metrics come with it
                entry.setdefault("skipped", {})[name] = (
                    f"{exc} (images smaller than {self.suite.patch_features.patch} px give no patch)")
        return entry


def is_failure(row: dict) -> bool:
    """Whether a row (or a summary's failure entry) is a failure that makes `sedic evaluate` exit 2:
    anything but success, except a rate the method cannot meet on the image (a measured outcome:
    the table counts it in ok/images)."""
    return row.get("status", "failed") != "ok" and not _unmet_rate({**row, "status": "failed"})


def _report_failures(rows: list[dict], bar) -> None:
    """One line on stderr per failure among one image's rows (above the progress bar): one for the
    image when it failed as a whole, else one per method and rate."""
    failed = [r for r in rows if is_failure(r)]
    if failed and len(failed) == len(rows) and len({r["error"] for r in failed}) == 1:
        lines = [_named(failed[0]["image"], failed[0]["error"])]
    else:
        lines = [_named(f"{r['image']} {r['method']} at {r['target_bpp']:g} bpp", r["error"]) for r in failed]
    for line in lines:
        bar.write(f"sedic: error: {line}", file=sys.stderr)


def _named(where: str, error: str | None) -> str:
    """The error naming `where` once (an input error already starts with the image's path)."""
    error = error or "failed"
    return error if where in error else f"{where}: {error}"


def _unmet_rate(row: dict) -> bool:
    """Whether a cached row records a rate that cannot be met ("RateUnmet": rows written before the
    baselines raised RateError)."""
    return row.get("status") == "failed" and str(row.get("error", "")).startswith(("RateUnmet", "RateError"))


def _stream_rates(bits: dict | None, pixels: int) -> dict:
    """bpp_<stream> of each of sedic's streams (None for a method whose files have no streams)."""
    return {f"bpp_{s}": (bits[s] / pixels) if bits else None for s in STREAMS}


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    """Patch features of several images as one array (an empty (0, 1) one for none)."""
    return np.concatenate(parts) if parts else np.zeros((0, 1))


def machine_description(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    parts = [f"{platform.system()} {platform.machine()}", f"{os.cpu_count()} CPU cores ({cpu})",
             f"torch {torch.__version__}", f"device {device}"]
    if device.startswith("cuda") and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return ", ".join(parts)


def finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
