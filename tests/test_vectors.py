"""The conformance vectors (tests/vectors/, docs/bitstream.md "Conformance vectors") decode to
their manifest: strings, mask grids, the reference's header fields and the stage-0 preview's
SHA-256; every invalid vector is refused by `inspect` and by `decompress` with the same message.

The preview hashes pin the whole decode chain, the AVIF decoder library included: a Pillow or
libavif upgrade that converts YUV to RGB differently fails here instead of drifting silently.
"""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sedic
from sedic import bitstream as bs, codec
from sedic.errors import BitstreamError
from sedic.streams import avif, reference

HERE = Path(__file__).resolve().parent / "vectors"
MANIFEST = json.loads((HERE / "manifest.json").read_text())
BITSTREAM_DOC = (HERE.parents[1] / "docs" / "bitstream.md").read_text()


def _reasons_table() -> dict[str, list[re.Pattern]]:
    """docs/bitstream.md's "Messages" table: reason -> its prefixes (`<...>` = any value)."""
    section = BITSTREAM_DOC.split("### Messages", 1)[1].split("\n### ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) >= 2:
            prefixes = re.findall(r"`([^`]+)`", cells[1])
            table[cells[0].strip("`")] = [
                re.compile("".join(".+?" if p.startswith("<") else re.escape(p) for p in re.split(r"(<[^>]+>)", x)))
                for x in prefixes]
    return table


REASONS = _reasons_table()


def _sha(b) -> str:
    return hashlib.sha256(bytes(b)).hexdigest()


def _ids(entries):
    return [e["file"] for e in entries]


@pytest.mark.parametrize("entry", MANIFEST["valid"], ids=_ids(MANIFEST["valid"]))
def test_valid_vector(entry):
    data = (HERE / entry["file"]).read_bytes()
    assert _sha(data) == entry["sha256"] and len(data) == entry["bytes"]
    parsed = codec.parse(data)
    assert (parsed.width, parsed.height) == (entry["width"], entry["height"])
    assert (parsed.params.profile_id, parsed.params.seed) == (entry["profile_id"], entry["seed"])
    assert parsed.params.overrides.as_dict() == entry["settings"]
    sem = parsed.semantics
    strings = [sem.overall] + [s for o in sem.objects for s in (o.name, o.description)] \
        if bs.TEXT in parsed.container.sections else []
    assert strings == entry["strings"]
    assert len(sem.objects) == entry["objects"] == len(entry["masks"])
    for obj, png in zip(sem.objects, entry["masks"], strict=True):
        grid = np.asarray(Image.open(HERE / png)) == 255
        assert obj.mask.shape == tuple(entry["mask_grid_shape"])
        assert np.array_equal(obj.mask, grid)

    ref = entry["reference"]
    payload = parsed.container.sections[bs.REFERENCE]
    assert payload[1] >> 4 == ref["factor_index"]
    if ref["codec"] == "avif":
        level, tools, rw, rh, frame = reference.AvifCodec().parse(payload, parsed.width, parsed.height)
        assert (level, f"0b{tools:06b}", [rw, rh]) == (ref["seq_level_idx"], ref["tool_flags"], ref["reduced_size"])
        assert (not (payload[1] >> 3) & 1) == ref["tool_flags_byte"]
        rebuilt = avif.build_avif(avif.SequenceHeader(rw, rh, level, tools), payload[-len(frame):])
        assert _sha(rebuilt) == ref["avif_sha256"]
        reduced = reference.AvifCodec().decode_reduced(payload, parsed.width, parsed.height)
        assert _sha(reduced.tobytes()) == ref["reduced_rgb_sha256"], \
            "the AVIF decode (libavif's YUV to RGB) changed: check the Pillow/libavif version"
        preview = codec.decode_preview(parsed)  # the decoder's own path
        assert _sha(preview.tobytes()) == ref["preview_rgb_sha256"]
    else:
        path = str(HERE / ref["checkpoint"])
        reduced = reference.CompressAICodec(model=ref["model"], checkpoint=path).decode_reduced(
            payload, parsed.width, parsed.height)
        expected = np.asarray(Image.open(HERE / ref["reduced_png"]))
        assert reduced.shape == expected.shape and list(reduced.shape[1::-1]) == ref["reduced_size"]
        assert np.abs(reduced.astype(int) - expected).max() <= 1
        if _sha(reduced.tobytes()) == ref["reduced_rgb_sha256"]:  # same torch build: exact
            preview = reference.decode_reference(payload, parsed.width, parsed.height, checkpoint=path)
            assert _sha(preview.tobytes()) == ref["preview_rgb_sha256"]
    # the normative upsampler is Pillow's LANCZOS enlargement on every vector
    pillow = np.asarray(Image.fromarray(reduced).resize((parsed.width, parsed.height), Image.LANCZOS))
    assert np.array_equal(reference.upsample(reduced, parsed.width, parsed.height), pillow)


@pytest.mark.parametrize("entry", MANIFEST["invalid"], ids=_ids(MANIFEST["invalid"]))
def test_invalid_vector_refused_alike_by_inspect_and_decompress(entry):
    data = (HERE / entry["file"]).read_bytes()
    with pytest.raises(BitstreamError) as by_inspect:
        sedic.inspect(data)
    with pytest.raises(BitstreamError) as by_decompress:
        sedic.decompress(data, stages=0)
    # the manifest's prefix is one of the reason's normative prefixes (docs/bitstream.md,
    # "Messages"), and both messages begin with it
    assert any(p.match(entry["error"]) for p in REASONS[entry["reason"]]), (entry["reason"], entry["error"])
    assert str(by_inspect.value).startswith(entry["error"])
    assert str(by_inspect.value) == str(by_decompress.value)


def test_messages_table_is_read():
    assert len(REASONS) >= 35 and all(REASONS.values())
    assert REASONS["varint-above-limit"][0].match("final_steps is 1001, above the limit 1000")
    assert not REASONS["varint-above-limit"][0].match("final_steps is longer than 2 bytes")


def test_manifest_lists_every_vector_file():
    listed = {e["file"] for e in MANIFEST["valid"] + MANIFEST["invalid"]}
    assert listed == {p.name for p in HERE.glob("*.sedic")}
