"""Defects found by trying the command line as a new user (helper "review")."""

import os
import subprocess
import sys

import numpy as np
import pytest

import sedic


@pytest.fixture(scope="module")
def sedic_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("review") / "f.sedic"
    path.write_bytes(sedic.compress(image, bpp=1.0, semantics=None, analyze=False, profile="test"))
    return path


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_output_into_a_closed_pipe_is_quiet(sedic_file, unbuffered):
    """`sedic inspect f.sedic | head -1`: the reader leaves early; no traceback, exit as SIGPIPE would."""
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-m", "sedic", "inspect", str(sedic_file), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    child.stdout.close()  # before the child (still importing) writes anything
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141, err
    assert err == "", err
