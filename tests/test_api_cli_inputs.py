"""CLI and Python API input checks found by a first-time user and an attacker (issue 16, items 15-19)."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
from PIL import Image

import sedic
from sedic import bitstream as bs
from sedic.cli import main as cli_main
from sedic.errors import BitstreamError, InputError
from sedic.semantics import Semantics
from sedic.streams import text as text_stream

ESCAPES = "sky \x1b]0;pwned\x07 \x1b[31mred\x1b[0m \x9b2j \u202egnp.exe"


def tiny_file(**options) -> bytes:
    return sedic.compress(np.full((64, 64, 3), 100, np.uint8), bpp=None, reference_bpp=0.5, analyze=False,
                          profile="test", **options)


def crafted_file() -> bytes:
    """A file whose overall text holds terminal escapes, with a valid CRC (the encoder itself only
    writes canonical text; the decoder reads whatever the range coder holds)."""
    container = bs.unpack(tiny_file(semantics=Semantics("sky", [])))
    container.sections[bs.TEXT] = text_stream.text_model.encode_list([ESCAPES])
    return bs.pack(container)


def test_inspect_escapes_control_characters(tmp_path, capsys):
    path = tmp_path / "evil.sedic"
    path.write_bytes(crafted_file())
    assert sedic.inspect(path)["semantics"]["overall"] == ESCAPES  # the API gives the text as it is
    for args in ([], ["--json"]):
        assert cli_main(["inspect", str(path), *args]) == 0
        out = capsys.readouterr().out
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in out, (args, out)
    assert cli_main(["inspect", str(path)]) == 0
    assert "\\x1b]0;pwned\\x07" in capsys.readouterr().out


def test_force_keeps_the_mode_of_a_private_output(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(image)
    out = tmp_path / "a.sedic"
    out.write_bytes(b"old")
    os.chmod(out, 0o600)
    assert cli_main(["compress", str(image), "-o", str(out), "--profile", "test", "--no-semantics",
                     "--bpp", "0.5", "--force"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_bytes()[:2] == bs.MAGIC


def test_a_flipped_magic_or_version_bit_says_corrupt():
    data = tiny_file()
    for position, bit in ((0, 0), (1, 3), (2, 0), (2, 4)):
        damaged = bytearray(data)
        damaged[position] ^= 1 << bit
        with pytest.raises(BitstreamError, match="corrupt file"):
            bs.unpack(bytes(damaged))
    with pytest.raises(BitstreamError, match="not a .sedic file"):
        bs.unpack(b"\x89PNG\r\n\x1a\n" + bytes(40))
    # a genuine newer version (its CRC matches) is still named as such
    newer = bytearray(data[:-2])
    newer[2] += 1
    newer += bs.crc16(bytes(newer)).to_bytes(2, "big")
    with pytest.raises(BitstreamError, match="unsupported .sedic version"):
        bs.unpack(bytes(newer))


def test_compress_output_named_like_an_image_is_refused(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(image)
    assert cli_main(["compress", str(image), "-o", str(tmp_path / "out.png"), "--profile", "test",
                     "--no-semantics"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "*.sedic" in err and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("settings, words", [
    ('{"base": "test", "reference": {"compressai_checkpoint": 123}}', "compressai_checkpoint must be a string"),
    ('{"base": "test", "analysis": {"num_objects": -1}}',
     "analysis: number of objects must be between 0 and 32, got -1"),
])
def test_profile_file_types_are_checked_when_read(tmp_path, settings, words):
    path = tmp_path / "p.json"
    path.write_text(settings)
    with pytest.raises(InputError, match=words):
        sedic.compress(np.full((64, 64, 3), 100, np.uint8), profile=str(path), analyze=False, bpp=0.5)


IMAGE = np.full((64, 64, 3), 100, np.uint8)


@pytest.mark.parametrize("call, words", [
    (lambda: sedic.compress(IMAGE, semantics={"overall": "x", "objects": []}, analyze=False),
     "semantics must be a Semantics, the path of its JSON file, or None; got dict"),
    (lambda: sedic.compress(IMAGE, profile=5, analyze=False), "profile must be a profile name"),
    (lambda: sedic.decompress(tiny_file(), stages="0"), "stages must be an integer"),
    (lambda: Semantics.load(None), "takes the path of a semantics JSON file, got NoneType"),
    (lambda: sedic.compress(IMAGE, seed=True, analyze=False, profile="test"), "seed must be an integer"),
    (lambda: sedic.compress(IMAGE, best_effort="no", analyze=False, profile="test"),
     "best_effort must be True or False"),
    (lambda: sedic.compress(IMAGE, analyze="yes", profile="test"), "analyze must be True or False"),
    (lambda: sedic.compress(None, analyze=False, profile="test"), "image must be a path, the bytes"),
    (lambda: sedic.compress(b"not an image", analyze=False, profile="test"), "not a readable PNG"),
    (lambda: sedic.compress(IMAGE, schedule=[1], analyze=False, profile="test"), "schedule must be a dict"),
])
def test_bad_types_are_input_errors_naming_what_was_given(call, words):
    with pytest.raises(InputError, match=words):
        call()


def test_png_bytes_and_pil_images_are_read_like_files(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    expected = sedic.compress(path, bpp=0.5, analyze=False, profile="test")
    assert sedic.compress(path.read_bytes(), bpp=0.5, analyze=False, profile="test") == expected
    rgba = Image.fromarray(np.dstack([rgb, np.full((64, 64), 255, np.uint8)]))
    with pytest.warns(UserWarning, match="alpha channel dropped"):
        assert sedic.compress(rgba, bpp=0.5, analyze=False, profile="test") == expected
    gray = Image.fromarray(rgb[..., 0])
    buf = io.BytesIO()
    gray.save(buf, "PNG")
    (tmp_path / "g.png").write_bytes(buf.getvalue())
    assert sedic.compress(gray, bpp=0.5, analyze=False, profile="test") == \
        sedic.compress(tmp_path / "g.png", bpp=0.5, analyze=False, profile="test")


def test_image_bytes_and_pil_images_are_turned_upright_like_files(tmp_path):
    """The API's bytes and PIL inputs take the files' loading path (EXIF orientation applied)."""
    rng = np.random.default_rng(2)
    stored = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)  # 80 wide as stored, 48 wide upright
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    from sedic.imageio import load_image

    upright = load_image(path)
    assert upright.shape == (80, 48, 3)
    expected = sedic.compress(path, bpp=0.5, analyze=False, profile="test")
    assert sedic.compress(path.read_bytes(), bpp=0.5, analyze=False, profile="test") == expected
    with Image.open(path) as opened:
        assert sedic.compress(opened, bpp=0.5, analyze=False, profile="test") == expected
