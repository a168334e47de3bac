"""The README's quickstart runs top to bottom as written (offline, profile test)."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_quickstart_runs_verbatim(tmp_path):
    commands = quickstart_commands()
    assert any(c.startswith("sedic decompress") for c in commands)
    (tmp_path / "examples").symlink_to(REPO / "examples")  # the commands name paths from the repo root
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, command
    out = tmp_path / "out"
    for name in ("kodim23.sedic", "preview.png", "kodim23.png", "kodim23.json", "coded/kodim23.sedic",
                 "decoded/kodim23.png", "results/table.md"):
        assert (out / name).is_file(), name
    assert 8 * (out / "kodim23.sedic").stat().st_size <= 0.02 * 768 * 512
