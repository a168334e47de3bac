"""No absolute path of a development machine in code or docs (issue 11, item 19): CI clones the
repository elsewhere, with the shared data at ../shared beside it."""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import KODAK, REPO, require_data

# Spelled in pieces so that this file does not match itself.
MACHINE_PATH = re.compile("(?<![\\w.~])/(" + "|".join(["wo" + "rk", "ro" + "ot", "ho" + "me", "Us" + "ers"])
                          + ")/|/tmp/" + "scratch")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".json", ".yml", ".yaml", ".cfg", ".ini", ".sh", ".js",
                 ".html", ".css", ""}


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not any(part.startswith(".") or part.endswith("egg-info")
                                            for part in p.relative_to(REPO).parts)]
    return [REPO / n for n in names]


def test_no_machine_paths_in_code_or_docs():
    offenders = []
    for path in _tracked_files():
        if path.suffix not in TEXT_SUFFIXES or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()[:100]}")
    assert not offenders, "absolute machine paths:\n" + "\n".join(offenders)


def test_kodak_is_found_beside_the_repository():
    assert KODAK == REPO.parent / "shared" / "datasets" / "kodak"
    assert not KODAK.is_absolute() or KODAK.is_relative_to(REPO.parent)


def test_missing_data_fails_when_ci_requires_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SEDIC_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="SEDIC_REQUIRE_DATA"):
        require_data(tmp_path / "nowhere")
    monkeypatch.delenv("SEDIC_REQUIRE_DATA")
    with pytest.raises(pytest.skip.Exception):
        require_data(tmp_path / "nowhere")
    assert require_data(tmp_path) == tmp_path
