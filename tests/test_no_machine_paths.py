"""No absolute path of a development machine in code or docs (issue 11, item 19): CI clones the
repository elsewhere, with the shared data at ../shared beside it."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

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


def test_unexpected_skips_fail_when_ci_requires_it(tmp_path):
    """conftest's hook, in a pytest run of its own: with SEDIC_REQUIRE_DATA=1 a missing data set or
    package is a failure, the allowed opt-in skip stays a skip; without it both are skips."""
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "from conftest import require_data\n"
        "def test_data(tmp_path):\n    require_data(tmp_path / 'nowhere')\n"
        "def test_plugin():\n    pytest.importorskip('surely_not_installed_anywhere')\n"
        "@pytest.mark.skipif(True, reason='slow: set SEDIC_SLOW_TESTS=1')\n"
        "def test_slow():\n    pass\n"
        "@pytest.mark.xfail(reason='known')\n"
        "def test_known():\n    assert False\n")

    def run(**env):
        full = {k: v for k, v in os.environ.items() if k != "SEDIC_REQUIRE_DATA"}
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs",
                              str(tmp_path)], cwd=tmp_path, env={**full, **env}, capture_output=True, text=True,
                             timeout=120)
        return out.stdout.strip().splitlines()[-1], out.stdout

    summary, text = run(SEDIC_REQUIRE_DATA="1")
    assert summary.startswith("2 failed, 1 skipped, 1 xfailed"), text
    assert "FAILED test_skips.py::test_data" in text and "FAILED test_skips.py::test_plugin" in text
    summary, text = run()
    assert summary.startswith("3 skipped, 1 xfailed"), text
