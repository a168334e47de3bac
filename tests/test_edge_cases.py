"""Edge cases a new user hits on the command line and API (pipes, devices, values a file cannot carry...)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import sedic
from sedic.errors import BitstreamError


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


@pytest.mark.parametrize("option, value", [("--object-cfg", "0.04"), ("--final-cfg", "3.25")])
def test_guidance_the_file_cannot_carry_is_refused(tmp_path, capsys, option, value):
    """Guidance travels in tenths: 0.04 used to become 0 (no guidance) and 3.25 become 3.2, silently."""
    from PIL import Image

    from sedic.cli import main

    src, out = tmp_path / "in.png", tmp_path / "out.sedic"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    code = main(["compress", str(src), "-o", str(out), "--no-semantics", "--bpp", "1", "--profile", "test",
                 option, value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "multiple of 0.1" in err, err
    assert not out.exists()


def test_schedule_values_the_file_cannot_carry_in_the_api():
    from sedic.codec import settings_section
    from sedic.errors import InputError

    with pytest.raises(InputError, match="whole number"):
        settings_section("test", overrides={"object_steps": 4.5})
    with pytest.raises(InputError, match="multiple of 0.1"):
        settings_section("test", overrides={"final_cfg": 7.05})
    # representable values, including ones with binary rounding error, still pass
    assert settings_section("test", overrides={"final_cfg": 5.5, "object_cfg": 0.3, "object_steps": 4.0})


def test_zero_steps_are_refused_at_compress(tmp_path, capsys):
    """A stage needs a step: 0 used to be written into the file and crash the decoder with a traceback."""
    from PIL import Image

    from sedic.cli import main

    src, out = tmp_path / "in.png", tmp_path / "out.sedic"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    for option in ("--object-steps", "--final-steps"):
        code = main(["compress", str(src), "-o", str(out), "--no-semantics", "--bpp", "1", "--profile", "test",
                     option, "0"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "out of range" in err, err
        assert not out.exists()


def test_a_file_with_zero_steps_is_a_bitstream_error(sedic_file):
    from sedic import bitstream as bs
    from sedic.errors import BitstreamError

    container = bs.unpack(sedic_file.read_bytes())
    for key in (1, 2):  # object_steps, final_steps = 0
        container.sections[bs.SETTINGS] = bytes([1, 0, key, 0])  # profile test, seed 0
        with pytest.raises(BitstreamError, match="steps"):
            sedic.decompress(bs.pack(container))


@pytest.mark.parametrize("decoder", [{"final_steps": 0}, {"object_steps": -1},
                                     {"pipeline": {"object_start_strength": 0}},
                                     {"pipeline": {"final_start_strength": 1.5}},
                                     {"pipeline": {"dtype": "banana"}}, {"pipeline": {"pad_mode": "banana"}},
                                     '{"final_cfg": NaN}', '{"control_scale": Infinity}',
                                     '{"orag": {"strength": -Infinity}}'])
def test_profile_files_with_settings_the_decoder_cannot_run_are_refused(tmp_path, decoder):
    """These used to pass the profile check and end in a traceback in the decoder (steps, start
    strength, dtype, pad_mode at sizes that need padding) or decode to NaN pixels (non-finite
    numbers, which Python's json accepts)."""
    import json

    decoder = json.loads(decoder) if isinstance(decoder, str) else decoder

    from sedic.config import get_profile
    from sedic.errors import InputError

    path = tmp_path / "p.json"
    path.write_text(json.dumps({"base": "test", "decoder": decoder}))
    with pytest.raises(InputError, match="p.json"):
        get_profile(str(path))


def test_api_takes_a_file_path_and_refuses_other_objects_in_one_line(sedic_file):
    """sedic.inspect("f.sedic") used to say "not a .sedic file (bad magic)" about the path's own
    characters, and inspect(None) raised a TypeError."""
    from sedic.errors import InputError

    assert sedic.inspect(str(sedic_file)) == sedic.inspect(sedic_file) == sedic.inspect(sedic_file.read_bytes())
    preview = sedic.decompress(sedic_file, stages=0)
    assert (preview == sedic.decompress(sedic_file.read_bytes(), stages=0)).all()
    for bad in (None, 123, [1, 2]):
        with pytest.raises(InputError, match="bytes of a .sedic file or its path"):
            sedic.inspect(bad)
    with pytest.raises(InputError, match="no such file"):
        sedic.decompress(str(sedic_file) + ".missing")


def test_compress_never_replaces_a_mask_the_semantics_names(tmp_path, capsys):
    """The masks are inputs too: `-o sem/m0.png --force` used to overwrite the mask with the .sedic file."""
    import json

    from PIL import Image

    from sedic.cli import main

    src = tmp_path / "in.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(src)
    (tmp_path / "sem").mkdir()
    mask = np.zeros((64, 64), bool)
    mask[8:40, 8:40] = True
    Image.fromarray(mask).save(tmp_path / "sem" / "m0.png")
    before = (tmp_path / "sem" / "m0.png").read_bytes()
    (tmp_path / "sem" / "s.json").write_text(json.dumps(
        {"overall": "a grey square", "objects": [{"name": "square", "description": "grey", "mask": "m0.png"}]}))
    code = main(["compress", str(src), "-o", str(tmp_path / "sem" / "m0.png"), "--force", "--bpp", "1",
                 "--profile", "test", "--semantics", str(tmp_path / "sem" / "s.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is an input of this command" in err, err
    assert (tmp_path / "sem" / "m0.png").read_bytes() == before


def test_inspect_shows_the_schedule_the_file_carries(tmp_path, capsys):
    """Only --json showed it: a fused or re-stepped file looked like a default one."""
    from sedic.cli import main

    path = tmp_path / "s.sedic"
    image = np.full((64, 64, 3), 120, np.uint8)
    path.write_bytes(sedic.compress(image, bpp=1.0, analyze=False, profile="test",
                                    schedule={"final_steps": 3, "final_cfg": 5.5}))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "schedule: final_steps 3, final_cfg 5.5" in out, out


def test_the_example_file_in_docs_bitstream_md():
    """The doc's container example is what the writer produces; the container reads it, and inspect
    refuses it as decompress does (its 1-byte reference is no AVIF payload)."""
    import re
    from pathlib import Path

    from sedic import bitstream as bs

    doc = (Path(__file__).resolve().parents[1] / "docs" / "bitstream.md").read_text()
    example = bytes.fromhex(re.search(r"the 12-byte file `([0-9a-f ]+)`", doc).group(1).replace(" ", ""))
    settings = bs.DecoderParams(profile_id=1, seed=0).to_bytes()
    assert bs.pack(bs.Container(8, 8, {bs.SETTINGS: settings, bs.REFERENCE: b"\x20"})) == example
    assert bs.unpack(example).sections == {bs.SETTINGS: settings, bs.REFERENCE: b"\x20"}
    for read in (sedic.inspect, lambda d: sedic.decompress(d, stages=0)):
        with pytest.raises(BitstreamError, match="not an AVIF reference payload"):
            read(example)


def test_live_progress_lines_fit_the_terminal(monkeypatch):
    """A rewritten line longer than the terminal wraps, and each rewrite then adds a row."""
    import io
    import re

    from sedic.restoration.progress import DecodeProgress

    monkeypatch.setenv("COLUMNS", "40")
    stream = io.StringIO()
    printer = DecodeProgress(stream, tty=True, clock=iter(range(100)).__next__)
    printer.stage(1, 3, "object 1/2: blue-and-yellow macaw with a very long name")
    for step in (1, 2):
        printer.step(1, 3, step, 10)
    live = re.sub(r"\x1b\[K", "", stream.getvalue()).split("\r")[1:]
    assert live and all(len(line) <= 39 for line in live), live
    assert live[-1].endswith("2/10 steps, 1.00 s/step, ETA 8 s")
    printer.finish()  # the stage's summary line, ending in a newline, may be longer
    assert stream.getvalue().endswith("in 3 s (1.50 s/step)\x1b[K\n")


def test_a_terminal_that_reports_no_width_gets_80_columns(monkeypatch):
    """`script` and some CI pseudo-terminals report 0 columns: the line must not shrink to nothing."""
    import io
    import os as os_module

    from sedic.restoration import progress

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os_module.terminal_size((0, 0)))
    stream = io.StringIO()
    stream.fileno = lambda: 2
    printer = progress.DecodeProgress(stream, tty=True, clock=iter(range(100)).__next__)
    printer.stage(1, 1, "overall")
    printer.step(1, 1, 1, 20)
    assert stream.getvalue().split("\r")[-1].startswith("stage 1/1: overall  1/20 steps")


def test_unknown_profile_id_says_how_to_decode_anyway(sedic_file):
    from sedic import bitstream as bs
    from sedic.errors import BitstreamError

    container = bs.unpack(sedic_file.read_bytes())
    container.sections[bs.SETTINGS] = bs.DecoderParams(9, 0).to_bytes()
    data = bs.pack(container)
    assert sedic.inspect(data)["profile"] == 9
    with pytest.raises(BitstreamError, match=r"profile id 9, .*--profile NAME"):
        sedic.decompress(data, stages=0)
    assert sedic.decompress(data, stages=0, profile="test").shape == (64, 96, 3)


def _fifo_with(path, data: bytes):
    """A named pipe at `path` whose writer sends `data` then closes (a thread)."""
    import threading

    os.mkfifo(path)

    def write():
        with open(path, "wb") as fh:
            fh.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_reading_a_pipe_or_device_stops_at_the_size_limit(tmp_path, monkeypatch):
    """A pipe or device reports size 0: `sedic decompress /dev/zero` used to read until killed."""
    from sedic import bitstream as bs
    from sedic.errors import BitstreamError

    monkeypatch.setattr(bs, "MAX_FILE_BYTES", 1000)
    thread = _fifo_with(tmp_path / "pipe", b"\0" * 5000)
    with pytest.raises(BitstreamError, match="above the limit of 1000 bytes"):
        bs.read_file(tmp_path / "pipe")
    thread.join(timeout=0)  # the writer may still block on the pipe: it is a daemon
    thread = _fifo_with(tmp_path / "small", b"SD")
    assert bs.read_file(tmp_path / "small") == b"SD"  # `sedic inspect /dev/stdin` keeps working
    thread.join(timeout=10)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_an_output_that_is_not_a_regular_file_is_refused_even_with_force(tmp_path, capsys):
    """The atomic rename replaced the node itself: as root, `-o /dev/full --force` replaced the device."""
    import stat

    from PIL import Image

    from sedic.cli import main

    src, fifo = tmp_path / "in.png", tmp_path / "out.sedic"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    os.mkfifo(fifo)
    code = main(["compress", str(src), "-o", str(fifo), "--force", "--no-semantics", "--bpp", "1",
                 "--profile", "test"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a regular file" in err, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
@pytest.mark.parametrize("option", ["--semantics", "--profile"])
def test_json_inputs_from_a_pipe_stop_at_the_size_limit(tmp_path, capsys, monkeypatch, option):
    """`--semantics /dev/zero` read until memory ran out (a MemoryError traceback or the OOM killer)."""
    from PIL import Image

    from sedic import imageio
    from sedic.cli import main

    monkeypatch.setattr(imageio, "MAX_TEXT_BYTES", 1000)
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    _fifo_with(tmp_path / "big.json", b" " * 5000)
    args = ["compress", str(src), "-o", str(tmp_path / "o.sedic"), "--bpp", "1", option, str(tmp_path / "big.json")]
    code = main(args + (["--profile", "test"] if option == "--semantics" else ["--no-semantics"]))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "larger than 1000 bytes" in err, err
    assert not (tmp_path / "o.sedic").exists()
