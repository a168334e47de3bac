"""Inputs and outputs (issue 11, items 8 and 10-13): one line on stderr, exit code 2, nothing
written, checked before any work; written files follow the umask; warnings for what is lost."""

import math
import os
import stat
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

import sedic
from sedic.cli import main
from sedic.errors import InputError, SedicWarning


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sedic: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _photo(w=64, h=48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256], -1).astype(np.uint8)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(_photo()).save(path)
    return path


@pytest.fixture
def sedic_file(tmp_path, photo):
    path = tmp_path / "photo.sedic"
    path.write_bytes(sedic.compress(photo, bpp=2, analyze=False, profile="test"))
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Any model or codec work fails the test: the error must come before it."""
    def boom(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    import sedic.analysis
    import sedic.codec

    monkeypatch.setattr(sedic.codec, "encode", boom)
    monkeypatch.setattr(sedic.codec, "decode", boom)
    monkeypatch.setattr(sedic.analysis, "analyze", boom)
    monkeypatch.setattr(sedic, "analyze", boom)
    return boom


# -- item 8: tiny images ----------------------------------------------------------------------

@pytest.mark.parametrize("side", [1, 2, 16])
def test_tiny_images_are_refused_the_same_way_by_analyze_and_compress(tmp_path, capsys, side):
    src = tmp_path / "tiny.png"
    Image.fromarray(np.full((side, side, 3), 90, np.uint8)).save(src)
    code, _, err_analyze = run_cli(capsys, "analyze", src, "-o", tmp_path / "t.json", "--profile", "test")
    assert_one_line_error(code, err_analyze, f"{side}x{side}", "at least 32")
    code, _, err_compress = run_cli(capsys, "compress", src, "-o", tmp_path / "t.sedic", "--profile", "test")
    assert_one_line_error(code, err_compress, f"{side}x{side}", "at least 32")
    assert err_analyze == err_compress
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "t.sedic").exists()
    with pytest.raises(InputError, match="at least 32"):
        sedic.analyze(np.zeros((side, side, 3), np.uint8), profile="test")


def test_tiny_images_compress_without_analysis(tmp_path, capsys):
    src = tmp_path / "one.png"
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(src)
    out = tmp_path / "one.sedic"
    code, _, err = run_cli(capsys, "compress", src, "-o", out, "--no-semantics", "--profile", "test", "--bpp", "500")
    assert code == 0, err
    assert sedic.decompress(out.read_bytes(), stages=0).shape == (1, 1, 3)


# -- item 10: non-finite numbers, devices, unwritable outputs -------------------------------------

@pytest.mark.parametrize("option, value", [("--bpp", "inf"), ("--bpp", "nan"), ("--bpp", "-inf"),
                                           ("--reference-bpp", "inf"), ("--final-cfg", "inf"),
                                           ("--object-cfg", "nan"), ("--final-cfg", "-inf")])
def test_non_finite_numbers_are_one_line_errors(tmp_path, photo, capsys, option, value):
    out = tmp_path / "x.sedic"
    code, _, err = run_cli(capsys, "compress", photo, "-o", out, "--no-semantics", "--profile", "test",
                           option, value)
    assert_one_line_error(code, err)
    name = option.lstrip("-")
    assert name in err or name.replace("-", "_") in err or name.replace("-", " ") in err, err
    assert not out.exists()


@pytest.mark.parametrize("kwargs", [{"bpp": math.inf}, {"bpp": math.nan}, {"reference_bpp": math.inf},
                                    {"schedule": {"final_cfg": math.inf}}, {"schedule": {"object_cfg": math.nan}},
                                    {"schedule": {"final_steps": math.inf}}])
def test_non_finite_numbers_in_the_api(kwargs):
    with pytest.raises(InputError, match="finite"):
        sedic.compress(_photo(), analyze=False, profile="test", **kwargs)


def test_usage_errors_are_one_line(capsys):
    code, _, err = run_cli(capsys, "compress", "x.png", "-o", "y.sedic", "--bpp", "-inf")
    assert_one_line_error(code, err, "sedic compress", "--bpp")
    code, _, err = run_cli(capsys, "compress", "x.png", "-o", "y.sedic", "--seed", "many")
    assert_one_line_error(code, err, "--seed", "invalid int value")
    code, _, err = run_cli(capsys)  # no command: the program is named once
    assert_one_line_error(code, err, "required")
    assert "sedic: error: sedic:" not in err


def test_resolve_device():
    from sedic.devices import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) in ("cpu", "cuda")
    with pytest.raises(InputError, match="unknown device 'banana'"):
        resolve_device("banana")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda:1")


@pytest.mark.parametrize("device", ["banana", "cuda", "cuda:7", "cpu:x"])
def test_bad_devices_fail_before_any_work(tmp_path, photo, sedic_file, capsys, no_work, device):
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda") and int(device.partition(":")[2] or 0) < gpus:
        pytest.skip(f"{device} exists on this machine ({gpus} GPU(s))")
    code, _, err = run_cli(capsys, "decompress", sedic_file, "-o", tmp_path / "y.png", "--device", device)
    assert_one_line_error(code, err, repr(device))
    code, _, err = run_cli(capsys, "compress", photo, "-o", tmp_path / "y.sedic", "--profile", "test",
                           "--device", device)
    assert_one_line_error(code, err, repr(device))
    code, _, err = run_cli(capsys, "analyze", photo, "-o", tmp_path / "y.json", "--profile", "test",
                           "--device", device)
    assert_one_line_error(code, err, repr(device))
    with pytest.raises(InputError):
        sedic.decompress(sedic_file.read_bytes(), device=device)
    assert not list(tmp_path.glob("y.*"))


def _unwritable_dirs(tmp_path):
    dirs = []
    if os.path.isdir("/sys"):
        dirs.append("/sys")  # a read-only file system (sysfs), unwritable even by root
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    dirs.append(ro)
    return dirs


def test_unwritable_outputs_fail_before_any_work(tmp_path, photo, sedic_file, capsys, no_work):
    for where in _unwritable_dirs(tmp_path):
        probe = os.path.join(where, ".sedic-probe")
        try:
            with open(probe, "wb"):
                pass
            os.unlink(probe)
            continue  # writable here after all (root ignores mode bits)
        except OSError:
            pass
        for argv in (("decompress", sedic_file, "-o", f"{where}/x.png"),
                     ("compress", photo, "-o", f"{where}/x.sedic", "--profile", "test"),
                     ("compress", photo, "-o", tmp_path / "ok.sedic", "--profile", "test",
                      "--save-semantics", f"{where}/x.json"),
                     ("analyze", photo, "-o", f"{where}/x.json", "--profile", "test")):
            code, _, err = run_cli(capsys, *argv)
            assert_one_line_error(code, err, str(where))
    (tmp_path / "ro").chmod(0o755)


def test_output_in_a_missing_directory(tmp_path, sedic_file, capsys, no_work):
    code, _, err = run_cli(capsys, "decompress", sedic_file, "-o", tmp_path / "nope" / "x.png")
    assert_one_line_error(code, err, "no such directory")


# -- item 11: the umask ------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, photo, capsys, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "u.sedic"
        code, _, err = run_cli(capsys, "compress", photo, "-o", out, "--no-semantics", "--profile", "test",
                               "--bpp", "2")
        assert code == 0, err
        png = tmp_path / "u.png"
        code, _, err = run_cli(capsys, "decompress", out, "-o", png, "--stages", "0")
        assert code == 0, err
        js = tmp_path / "u.json"
        code, _, err = run_cli(capsys, "analyze", photo, "-o", js, "--profile", "test")
        assert code == 0, err
        written = [out, png, js] + sorted(tmp_path.glob("u.mask*.png"))
        assert len(written) > 3
        for path in written:
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    finally:
        os.umask(old)


# -- item 12: never overwrite without --force, never overwrite the input ---------------------------

def test_analyze_keeps_existing_masks_without_force(tmp_path, photo, capsys):
    mask = tmp_path / "sem.mask0.png"
    mask.write_bytes(b"someone else's file")
    code, _, err = run_cli(capsys, "analyze", photo, "-o", tmp_path / "sem.json", "--profile", "test")
    assert_one_line_error(code, err, "sem.mask0.png", "--force")
    assert mask.read_bytes() == b"someone else's file"
    assert not (tmp_path / "sem.json").exists()
    code, _, err = run_cli(capsys, "analyze", photo, "-o", tmp_path / "sem.json", "--profile", "test", "--force")
    assert code == 0, err
    assert mask.read_bytes() != b"someone else's file"


def test_compress_save_semantics_keeps_existing_masks_without_force(tmp_path, photo, capsys):
    mask = tmp_path / "sem.mask1.png"
    mask.write_bytes(b"keep")
    code, _, err = run_cli(capsys, "compress", photo, "-o", tmp_path / "c.sedic", "--profile", "test",
                           "--save-semantics", tmp_path / "sem.json")
    assert_one_line_error(code, err, "sem.mask1.png")
    assert mask.read_bytes() == b"keep" and not (tmp_path / "c.sedic").exists()


def test_outputs_never_replace_the_input(tmp_path, photo, sedic_file, capsys, no_work):
    before = photo.read_bytes()
    cases = [("compress", photo, "-o", photo, "--profile", "test", "--force"),
             ("compress", photo, "-o", tmp_path / "a.sedic", "--profile", "test", "--force",
              "--save-semantics", photo),
             ("analyze", photo, "-o", photo, "--profile", "test", "--force"),
             ("analyze", photo, "-o", tmp_path / "." / "photo.png", "--profile", "test", "--force")]
    for argv in cases:
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, "input")
    # a decompress output named like its input (a link to it, here)
    link = tmp_path / "same.png"
    link.symlink_to(sedic_file)
    code, _, err = run_cli(capsys, "decompress", sedic_file, "-o", link, "--force")
    assert_one_line_error(code, err, "input")
    assert photo.read_bytes() == before


def test_analyze_mask_would_replace_the_input(tmp_path, capsys, no_work):
    src = tmp_path / "sem.mask0.png"
    Image.fromarray(_photo()).save(src)
    before = src.read_bytes()
    code, _, err = run_cli(capsys, "analyze", src, "-o", tmp_path / "sem.json", "--profile", "test", "--force")
    assert_one_line_error(code, err, "input")
    assert src.read_bytes() == before


# -- item 13: warnings for what is lost ------------------------------------------------------------

def _png_rgb16(path, w=6, h=4):
    arr = (np.arange(h * w * 3).reshape(h, w, 3) * 700).astype(">u2")
    raw = b"".join(b"\x00" + arr[i].tobytes() for i in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return arr


def test_16_bit_rgb_png_warns(tmp_path):
    from sedic.imageio import load_image

    path = tmp_path / "deep.png"
    arr = _png_rgb16(path)
    with pytest.warns(SedicWarning, match="16-bit image reduced to 8 bits"):
        out = load_image(path)
    assert np.array_equal(out, (arr >> 8).astype(np.uint8))  # Pillow keeps the high byte


def test_8_bit_png_does_not_warn(tmp_path):
    from sedic.imageio import load_image

    path = tmp_path / "plain.png"
    Image.fromarray(_photo()).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(path)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_animated_images_warn_about_the_first_frame(tmp_path, fmt):
    from sedic.imageio import load_image

    path = tmp_path / f"anim.{fmt}"
    frames = [Image.fromarray(np.full((8, 8, 3), c, np.uint8)) for c in (10, 128, 250)]
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    with pytest.warns(SedicWarning, match="3 frames"):
        out = load_image(path)
    assert abs(int(out.mean()) - 10) <= 2


def test_text_cut_at_the_clip_window_warns_with_how_much(capsys):
    from sedic import codec
    from sedic.semantics import SemanticObject, Semantics

    image = _photo()
    mask = np.zeros(image.shape[:2], bool)
    mask[:20, :20] = True
    long_text = " ".join(["a very long and winding description of the scene"] * 12)
    semantics = Semantics(long_text, [SemanticObject("box", long_text, mask)])
    with pytest.warns(SedicWarning) as record:
        data = codec.encode(image, semantics, "test", bpp=None)
    messages = [str(w.message) for w in record if issubclass(w.category, SedicWarning)]
    overall = [m for m in messages if m.startswith("overall description")]
    obj = [m for m in messages if m.startswith("object 'box'")]
    assert overall and obj, messages
    assert "77-token" in overall[0] and "tokens dropped" in overall[0]
    kept = codec.parse(data).semantics
    from sedic.streams.text import canonicalize, token_count

    total = token_count(canonicalize(long_text))
    assert f"{total - token_count(kept.overall)} of {total} tokens dropped" in overall[0]
    short = Semantics("a short description", [SemanticObject("box", "a small box", mask)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SedicWarning)
        codec.encode(image, short, "test", bpp=None)


@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_analysis_time_out_must_be_positive_and_finite(tmp_path, photo, capsys, value):
    code, _, err = run_cli(capsys, "analyze", photo, "-o", tmp_path / "t.json", "--profile", "test",
                           "--timeout", value)
    assert_one_line_error(code, err, "time-out")
    assert not (tmp_path / "t.json").exists()


def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path, photo, capsys, monkeypatch):
    """A bug (here a library error injected into the reference encoder) is one line on stderr and
    exit code 1, not a traceback; SEDIC_TRACEBACK=1 lets it through for a developer."""
    import sedic.streams.reference as reference

    def broken(*args, **kwargs):
        raise ValueError("Expected more than 1 value per channel\nwhen training")

    monkeypatch.setattr(reference, "encode_reference", broken)
    out = tmp_path / "x.sedic"
    argv = ["compress", str(photo), "-o", str(out), "--no-semantics", "--bpp", "2", "--profile", "test"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sedic: internal error: ValueError: Expected more than 1 value per channel when "
                              "training (a bug")
    assert not any("Traceback" in line for line in err) and not out.exists()
    monkeypatch.setenv("SEDIC_TRACEBACK", "1")
    with pytest.raises(ValueError):
        main(argv)
