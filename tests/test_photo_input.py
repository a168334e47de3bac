"""Input as a photo viewer shows it: EXIF orientation, embedded colour profiles, HEIC/AVIF, the
declared size checked before decoding, sRGB-tagged outputs. Fixtures are made in-test."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from sedic.errors import InputError, SedicWarning
from sedic.imageio import load_image, save_image
from sedic.server.uploads import decode_image


def _asymmetric(h=48, w=32) -> np.ndarray:
    """Smooth (JPEG-friendly) and different in every corner, so any rotation or flip shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 60)], -1).astype(np.uint8)


def _jpeg(stored: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=98, subsampling=0, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- orientation


def _oriented_jpeg(upright: np.ndarray) -> bytes:
    """A JPEG as a phone writes it held upright: pixels stored on their side, orientation 6
    ("rotate 90 degrees clockwise to display")."""
    stored = np.rot90(upright, 1)  # counter-clockwise; the viewer turns it back clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(np.ascontiguousarray(stored), exif=exif.tobytes())


def test_exif_orientation_6_is_applied(tmp_path):
    upright = _asymmetric()
    path = tmp_path / "phone.jpg"
    path.write_bytes(_oriented_jpeg(upright))
    with Image.open(path) as im:
        assert im.size == (48, 32)  # stored sideways
    got = load_image(path)
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright).mean() < 3


def test_server_upload_is_upright_too():
    upright = _asymmetric()
    got = decode_image(_oriented_jpeg(upright), "phone.jpg", 1 << 26)
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright).mean() < 3


def test_compress_codes_the_upright_image(tmp_path):
    import sedic

    upright = _asymmetric(96, 64)
    path = tmp_path / "phone.jpg"
    path.write_bytes(_oriented_jpeg(upright))
    preview = sedic.decompress(sedic.compress(path, analyze=False, bpp=None, reference_bpp=1.0), stages=0)
    assert preview.shape == upright.shape


# ---------------------------------------------------------------- colour profiles

# Display P3: DCI-P3 primaries, D65 white, the sRGB transfer curve.
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
D65 = (0.3127, 0.3290)
D50_XYZ = np.array([0.9642, 1.0, 0.8249])


def _rgb_to_xyz(primaries, white) -> np.ndarray:
    """The RGB -> XYZ matrix of a colour space (columns: the primaries scaled to the white)."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    scale = np.linalg.solve(xyz, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))
    return xyz * scale


def _bradford(src_white_xyz, dst_white_xyz) -> np.ndarray:
    m = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    return np.linalg.inv(m) @ np.diag((m @ dst_white_xyz) / (m @ src_white_xyz)) @ m


def _srgb_decode(v):
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _srgb_encode(v):
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.clip(v, 0, None) ** (1 / 2.4) - 0.055)


def _display_p3_icc() -> bytes:
    """An ICC v2 matrix/TRC display profile for Display P3, written from the ICC spec (colorants
    Bradford-adapted to the D50 PCS, the sRGB curve as a 1024-entry table)."""
    d65 = _rgb_to_xyz(P3_PRIMARIES, D65) @ np.ones(3)
    colorants = _bradford(d65, D50_XYZ) @ _rgb_to_xyz(P3_PRIMARIES, D65)

    def s15(v):
        return struct.pack(">i", int(round(v * 65536)))

    def xyz_tag(v):
        return b"XYZ " + bytes(4) + b"".join(s15(c) for c in v)

    curve = np.round(_srgb_decode(np.linspace(0, 1, 1024)) * 65535).astype(">u2").tobytes()
    trc = b"curv" + bytes(4) + struct.pack(">I", 1024) + curve
    text = b"Display P3 (test)\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [(b"desc", desc), (b"wtpt", xyz_tag(D50_XYZ)), (b"rXYZ", xyz_tag(colorants[:, 0])),
            (b"gXYZ", xyz_tag(colorants[:, 1])), (b"bXYZ", xyz_tag(colorants[:, 2])),
            (b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc), (b"cprt", b"text" + bytes(4) + b"none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ "
              + bytes(12) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4) + b"".join(s15(c) for c in D50_XYZ)
              + bytes(4 + 16 + 28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def _p3_to_srgb_reference(p3: np.ndarray) -> np.ndarray:
    """Display P3 -> sRGB written from the definitions (both spaces share D65 and the curve)."""
    m = np.linalg.inv(_rgb_to_xyz(SRGB_PRIMARIES, D65)) @ _rgb_to_xyz(P3_PRIMARIES, D65)
    lin = _srgb_decode(p3.astype(np.float64) / 255) @ m.T
    return np.clip(np.round(_srgb_encode(np.clip(lin, 0, 1)) * 255), 0, 255)


def _p3_photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    colours = np.array([[200, 100, 50], [40, 90, 200], [90, 180, 60], [128, 128, 128], [230, 220, 40]])
    return np.repeat(np.repeat(colours[rng.integers(0, len(colours), (4, 4))], 8, 0), 8, 1).astype(np.uint8)


def test_the_hand_written_profile_is_the_display_p3_of_littlecms():
    # the fixture itself, checked against the plain formula through littleCMS
    p3 = _p3_photo()
    profile = ImageCms.ImageCmsProfile(io.BytesIO(_display_p3_icc()))
    via_lcms = np.asarray(ImageCms.profileToProfile(Image.fromarray(p3), profile, ImageCms.createProfile("sRGB"),
                                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC))
    assert np.abs(via_lcms - _p3_to_srgb_reference(p3)).max() <= 2


def test_display_p3_jpeg_is_converted_to_srgb(tmp_path):
    p3 = _p3_photo()
    path = tmp_path / "p3.jpg"
    path.write_bytes(_jpeg(p3, icc_profile=_display_p3_icc()))
    with pytest.warns(SedicWarning, match="converted from its colour profile .*Display P3.* to sRGB"):
        got = load_image(path)
    expected = _p3_to_srgb_reference(p3)
    assert np.abs(got - expected).mean() < 1.5  # JPEG at quality 98 on top of the conversion
    assert np.abs(got.astype(int) - p3).mean() > 5  # the profile really moves these colours
    # the server's upload path converts the same way
    with pytest.warns(SedicWarning, match="converted"):
        served = decode_image(path.read_bytes(), "p3.jpg", 1 << 26)
    assert np.array_equal(served, got)


def test_an_srgb_profile_changes_nothing_and_says_nothing(tmp_path):
    image = _p3_photo()
    path = tmp_path / "srgb.png"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(image).save(path, icc_profile=srgb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(load_image(path), image)


def test_outputs_are_tagged_srgb(tmp_path):
    image = _p3_photo()
    save_image(tmp_path / "out.png", image)
    with Image.open(tmp_path / "out.png") as im:
        assert im.info.get("srgb") == 0  # the PNG sRGB chunk, perceptual intent
        assert np.array_equal(np.asarray(im.convert("RGB")), image)
    save_image(tmp_path / "out.jpg", image)
    with Image.open(tmp_path / "out.jpg") as im:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)


# ---------------------------------------------------------------- HEIC / AVIF


def test_heic_input_is_read(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs the [eval]/[all] extra pillow-heif")
    image = _asymmetric(64, 48)
    path = tmp_path / "phone.heic"
    pillow_heif.from_bytes(mode="RGB", size=(48, 64), data=image.tobytes()).save(path, quality=90)
    got = load_image(path)
    # the real peer: pillow-heif's own decoder
    assert np.array_equal(got, np.asarray(pillow_heif.open_heif(path, convert_hdr_to_8bit=True)))
    assert np.abs(got.astype(int) - image).mean() < 4


def test_avif_input_is_read(tmp_path):
    image = _asymmetric(64, 48)
    path = tmp_path / "photo.avif"
    Image.fromarray(image).save(path, "AVIF", quality=90)
    got = load_image(path)
    with Image.open(path) as im:
        assert np.array_equal(got, np.asarray(im.convert("RGB")))


# ---------------------------------------------------------------- declared size


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB; the data holds one row (a decoder that
    trusted the header would allocate width * height * 3 bytes first)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * width)))
            + chunk(b"IEND", b""))


def test_declared_size_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_declaring(12000, 12000))
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    with pytest.raises(InputError, match=r"12000x12000 above the limit of 67108864 pixels \(refused before decoding"):
        load_image(path)
    assert loads == []  # not a pixel decoded


# ---------------------------------------------------------------- PNG text and ICC chunk bombs


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_chunks(before: bytes = b"", after: bytes = b"") -> bytes:
    """An 8x8 PNG with extra chunks before its pixel data and after it (Pillow reads the latter only
    when the pixels are loaded)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "PNG")
    raw = buf.getvalue()
    idat, iend = raw.index(b"IDAT") - 4, raw.index(b"IEND") - 4
    return raw[:idat] + before + raw[idat:iend] + after + raw[iend:]


INFLATES_TO_50_MB = zlib.compress(b"a" * (50 << 20), 9)  # 49 KB
CHUNK_BOMBS = {  # name: (file, what the message names)
    "zTXt before the pixels": (png_with_chunks(_chunk(b"zTXt", b"Comment\x00\x00" + INFLATES_TO_50_MB)),
                               "PNG zTXt text chunk inflates past 1 MiB"),
    "zTXt after the pixels": (png_with_chunks(after=_chunk(b"zTXt", b"Comment\x00\x00" + INFLATES_TO_50_MB)),
                              "PNG zTXt text chunk inflates past 1 MiB"),
    "iTXt": (png_with_chunks(_chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + INFLATES_TO_50_MB)),
             "PNG iTXt text chunk inflates past 1 MiB"),
    "iCCP": (png_with_chunks(_chunk(b"iCCP", b"icc\x00\x00" + INFLATES_TO_50_MB)),
             "PNG iCCP colour-profile chunk inflates past 1 MiB"),
    # 80 chunks of 0.9 MiB each (1 KB compressed): each under the per-chunk limit, 72 MiB in all
    "many zTXt": (png_with_chunks(b"".join(_chunk(b"zTXt", b"k%d\x00\x00" % i + zlib.compress(b"b" * (900 << 10), 9))
                                           for i in range(80))),
                  "PNG text chunks hold more than 64 MiB of text"),
}


@pytest.mark.parametrize("name", CHUNK_BOMBS)
def test_png_chunk_bombs_get_their_own_message_in_the_cli_and_api(name, tmp_path, capsys):
    """A zTXt bomb was 'not a PNG, JPEG or WebP image' (server) or Pillow's words about
    PngImagePlugin.MAX_TEXT_CHUNK (CLI, API): one loader, one message."""
    import sedic
    from sedic.cli import main as cli_main

    data, words = CHUNK_BOMBS[name]
    with pytest.raises(InputError) as api:
        sedic.compress(data, semantics=None, profile="test")
    assert str(api.value) == f"image: {words} (a decompression bomb); refused"
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    assert cli_main(["compress", str(path), "-o", str(tmp_path / "o.sedic"), "--profile", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sedic: error: {path}: {words} (a decompression bomb); refused"], err
    with pytest.raises(InputError, match=r"^up\.png: " + words):
        decode_image(data, "up.png", 1 << 24)
