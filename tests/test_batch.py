"""`sedic batch`: local and Ray give the same bytes; faults are retried; reruns redo nothing finished.

Images: 6 Kodak photos downscaled to 192x128. Measured on the 2-core development VM: a full
decode with profile `test` and its default schedule takes about 75 s for a full-size Kodak image
and 40 s at 192x128, so these tests store a 1+1-step schedule in the files (`--object-steps 1
--final-steps 1`, about 0.3 s a decode) and still run every stage of the decoder.
A local Ray with 2 CPUs is started once for the module and shut down after it.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from sedic.batch import LocalExecutor, compress_dir, decompress_dir
from sedic.batch.executor import FAULT_ENV
from sedic.cli import main

ray = pytest.importorskip("ray")
# Ray installed but Ray Data broken (e.g. a pyarrow that needs another numpy) must fail, not skip.
importlib.import_module("ray.data")

NAMES = ["kodim01", "kodim02", "kodim03", "kodim05", "kodim07", "kodim23"]
SMALL = dict(bpp=0.3, profile="test", schedule={"object_steps": 1, "final_steps": 1})


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _files(out: Path, suffix: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob(f"*{suffix}"))}


@pytest.fixture(scope="module")
def images(kodak_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kodak6")
    for name in NAMES:
        Image.open(kodak_dir / f"{name}.png").convert("RGB").resize((192, 128), Image.LANCZOS).save(d / f"{name}.png")
    return d


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local():
    """Two local worker processes kept for the module (models load once per process)."""
    with LocalExecutor(2) as ex:
        yield ex


@pytest.fixture(scope="module")
def reference(images, local, tmp_path_factory) -> Path:
    """Local, fault-free outputs without semantics: what the fault tests must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "plain"
    assert compress_dir(images, out, executor=local, progress=False, **SMALL).exit_code == 0
    return out


def test_local_and_ray_give_identical_files_and_pngs(images, local, ray_local, tmp_path, capsys):
    """--ray and local: byte-identical .sedic files and decoded PNGs (analysis, coding, all stages)."""
    assert compress_dir(images, tmp_path / "local", analyze=True, executor=local, progress=False,
                        **SMALL).exit_code == 0
    common = ["--bpp", "0.3", "--profile", "test", "--analyze", "--object-steps", "1", "--final-steps", "1"]
    assert main(["batch", "compress", str(images), "-o", str(tmp_path / "ray"), *common, "--ray",
                 "--no-progress"]) == 0
    on_local, on_ray = _files(tmp_path / "local", ".sedic"), _files(tmp_path / "ray", ".sedic")
    assert sorted(on_local) == [f"{n}.sedic" for n in NAMES]
    assert on_local == on_ray
    from sedic import inspect

    assert all(len(inspect(data)["semantics"]["objects"]) > 0 for data in on_local.values())  # analysis ran

    assert decompress_dir(tmp_path / "local", tmp_path / "dl", executor=local, progress=False).exit_code == 0
    assert main(["batch", "decompress", str(tmp_path / "ray"), "-o", str(tmp_path / "dr"), "--ray",
                 "--no-progress"]) == 0
    pngs = _files(tmp_path / "dl", ".png")
    assert sorted(pngs) == [f"{n}.png" for n in NAMES] and pngs == _files(tmp_path / "dr", ".png")
    for out in ("local", "ray", "dl", "dr"):
        records = _manifest(tmp_path / out)
        assert sorted(r["image"] for r in records) == sorted(f"{n}{'.png' if out in ('local', 'ray') else '.sedic'}"
                                                             for n in NAMES)
        assert all(r["status"] == "ok" and r["bytes"] > 0 and 0 < r["bpp"] <= 0.3 and r["seconds"] > 0
                   for r in records)
    assert "6 done, 0 failed" in capsys.readouterr().err  # the CLI's summary line


@pytest.mark.parametrize("where,mode,stage,analyze", [
    ("local", "raise", "encode", False),   # an exception in a worker process
    ("local", "exit", "encode", False),    # a worker process dies (breaks the pool)
    ("ray", "raise", "encode", False),     # an exception in a Ray task
    ("ray", "exit", "encode", False),      # a Ray task's worker dies
    ("ray", "exit", "analyze", True),      # a Ray actor holding the models dies
])
def test_fault_mid_run_is_retried(where, mode, stage, analyze, images, reference, local, ray_local, tmp_path,
                                  monkeypatch):
    from sedic.batch import RayExecutor

    marker = tmp_path / "fault.marker"
    monkeypatch.setenv(FAULT_ENV, f"{mode}:{stage}:kodim03.png:{marker}")
    ex = local if where == "local" else RayExecutor()  # the module's Ray: not started or stopped here
    summary = compress_dir(images, tmp_path / "out", executor=ex, progress=False, analyze=analyze, **SMALL)
    assert marker.exists(), "the fault did not fire"
    assert summary.exit_code == 0 and summary.done == 6
    records = {r["image"]: r for r in _manifest(tmp_path / "out")}
    assert all(r["status"] == "ok" for r in records.values())
    if mode == "raise":  # retried by sedic's executor: the manifest counts the attempt
        assert records["kodim03.png"]["attempts"] == 2
    got = _files(tmp_path / "out", ".sedic")
    if analyze:
        assert sorted(got) == [f"{n}.sedic" for n in NAMES]
    else:
        assert got == _files(reference, ".sedic")


def test_interrupted_driver_rerun_recomputes_nothing_finished(images, tmp_path):
    """Ctrl-C (SIGINT to the process group) mid-run, then the same command: finished images are kept."""
    out = tmp_path / "out"
    # one worker, about 1 s an image: the interrupt after the first line lands mid-run
    argv = ["batch", "compress", str(images), "-o", str(out), "--bpp", "0.3", "--profile", "test", "--workers", "1",
            "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "sedic", *argv], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "manifest.jsonl").is_file() and len(_manifest(out)) >= 1:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    first = {r["image"] for r in _manifest(out)}
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.sedic")}
    assert len(finished) == len(first) >= 1
    assert len(finished) < len(NAMES), "the run finished before the interrupt: nothing was tested"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"

    assert main(argv) == 0
    second = [r["image"] for r in _manifest(out)][len(first):]
    assert sorted(second) == sorted(f"{n}.png" for n in NAMES if f"{n}.png" not in first)  # nothing redone
    for name, mtime in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime
    assert len(list(out.glob("*.sedic"))) == len(NAMES)


def test_bad_image_is_recorded_and_the_exit_code_is_2(images, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.png").write_bytes((images / "kodim01.png").read_bytes())
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "out"
    argv = ["batch", "compress", str(src), "-o", str(out), "--bpp", "0.3", "--profile", "test", "--no-progress",
            "--workers", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "sedic: error: " in err and "broken.png" in err and "Traceback" not in err
    records = {r["image"]: r for r in _manifest(out)}
    assert records["good.png"]["status"] == "ok" and (out / "good.sedic").is_file()
    bad = records["broken.png"]
    assert bad["status"] == "failed" and "cannot read image" in bad["error"] and "\n" not in bad["error"]
    assert bad["attempts"] == 1  # an input error is not retried
    # A rerun skips the finished image and tries the bad one again (still failing).
    assert main(argv) == 2
    assert [r["image"] for r in _manifest(out)][2:] == ["broken.png"]


def test_options_are_checked_before_any_work(images, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["batch", "compress", str(images), "-o", str(out), "--profile", "test", "--no-progress"]
    assert main([*base, "--bpp", "0"]) == 2
    assert main([*base, "--semantics-dir", str(tmp_path / "nowhere")]) == 2
    assert main(["batch", "compress", str(tmp_path / "none"), "-o", str(out)]) == 2
    assert main(["batch", "decompress", str(images), "-o", str(out)]) == 2  # no .sedic files there
    # every schedule value is checked by the codec's own rules before any work, leaving no batch.json
    assert main([*base, "--object-steps", "5000"]) == 2
    assert main([*base, "--object-cfg", "3.25"]) == 2
    assert main([*base, "--threads", "-1"]) == 2
    assert main([*base, "--attempts", "0"]) == 2
    assert not (out / "batch.json").exists()
    err = capsys.readouterr().err
    assert err.count("sedic: error:") == 8 and "Traceback" not in err
    # An output folder made with other options is refused, not mixed.
    (out).mkdir(exist_ok=True)
    (out / "batch.json").write_text(json.dumps({"command": "compress", "options": {"bpp": 0.05}}))
    assert main([*base, "--bpp", "0.3"]) == 2
    assert "holds outputs of another batch" in capsys.readouterr().err


def test_semantics_dir_missing_json_fails_that_image_only(images, local, tmp_path):
    from sedic import analyze

    sem = tmp_path / "sem"
    sem.mkdir()
    analyze(images / "kodim01.png", profile="test").save(sem / "kodim01.json")
    src = tmp_path / "in"
    src.mkdir()
    for name in ("kodim01", "kodim02"):
        (src / f"{name}.png").write_bytes((images / f"{name}.png").read_bytes())
    summary = compress_dir(src, tmp_path / "out", semantics_dir=sem, executor=local, progress=False, **SMALL)
    assert (summary.done, summary.failed) == (1, 1)
    records = {r["image"]: r for r in _manifest(tmp_path / "out")}
    assert "kodim02.json is missing" in records["kodim02.png"]["error"]


def test_evaluate_on_ray_and_local_workers_matches_the_in_process_run(images, ray_local, tmp_path):
    """`sedic evaluate --ray` and `--workers 2` run the same runner per image: the same rows and files;
    an unreadable image is the same failed rows everywhere, the others still run, exit code 2."""
    import csv

    src = tmp_path / "two"
    src.mkdir()
    for name in NAMES[:2]:
        (src / f"{name}.png").write_bytes((images / f"{name}.png").read_bytes())
    (src / "broken.png").write_bytes(b"not a PNG")
    base = ["evaluate", str(src), "--bpp", "0.3", "--profile", "test", "--metrics", "psnr,ms-ssim", "--methods",
            "sedic-preview", "--baselines", "jpeg", "--no-analyze", "--no-progress"]
    runs = {"here": [], "ray": ["--ray"], "workers": ["--workers", "2"]}
    tables = {}
    for key, extra in runs.items():
        assert main([*base, "--out", str(tmp_path / key), *extra]) == 2, key
        with open(tmp_path / key / "results.csv") as fh:
            rows = list(csv.DictReader(fh))
        timing = {"encode_s", "search_s", "decode_s"}
        tables[key] = [{k: v for k, v in r.items() if k not in timing} for r in rows]
    assert [r["status"] for r in tables["here"]] == ["failed"] * 2 + ["ok"] * 4  # broken.png sorts first
    assert all("broken.png: cannot read image" in r["error"] for r in tables["here"][:2])
    assert tables["ray"] == tables["here"] and tables["workers"] == tables["here"]
    for key in ("ray", "workers"):
        assert _files(tmp_path / key / "files" / "sedic" / "bpp0.3", ".sedic") == \
            _files(tmp_path / "here" / "files" / "sedic" / "bpp0.3", ".sedic")


def test_an_output_the_batch_did_not_make_is_neither_skipped_nor_replaced(images, local, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("kodim01", "kodim02"):
        (src / f"{name}.png").write_bytes((images / f"{name}.png").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "kodim02.sedic").write_bytes(b"someone else's file")
    summary = compress_dir(src, out, executor=local, progress=False, **SMALL)
    assert (summary.done, summary.failed, summary.skipped) == (1, 1, 0)
    assert (out / "kodim02.sedic").read_bytes() == b"someone else's file"
    records = {r["image"]: r for r in _manifest(out)}
    assert "does not record it" in records["kodim02.png"]["error"]
    # what the batch made and recorded is skipped on a rerun; the foreign file is reported again
    summary = compress_dir(src, out, executor=local, progress=False, **SMALL)
    assert (summary.done, summary.failed, summary.skipped) == (0, 1, 1)
