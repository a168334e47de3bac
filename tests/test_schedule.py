"""One record for the schedule overrides (issue 18 item 3).

Every place that lists the overrides a file carries lists exactly the fields of
sedic.schedule.ScheduleOverrides, as seen from outside: the real argparse parsers of `sedic
compress` and `sedic batch compress`, the live app's OpenAPI form, the normative key table of
docs/bitstream.md and the bytes the container writes. A field added to the record but missing in
one of them (or a schedule option listed by hand beside the record) fails here; so does a value
given on a command line or in a form that does not arrive in the file.
"""

from __future__ import annotations

import re
import typing
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import sedic
from sedic import bitstream as bs
from sedic.cli import build_parser, main
from sedic.errors import BitstreamError, InputError
from sedic.restoration.settings import DecoderSettings
from sedic.schedule import ScheduleOverrides
from sedic.server import ServerSettings, create_app

ROOT = Path(__file__).resolve().parents[1]
RECORD = [f.name for f in fields(ScheduleOverrides)]
TYPES = typing.get_type_hints(ScheduleOverrides)
# The decoder settings a command or a form could expose; those exposed must be the record's.
DECODER = {f.name for f in fields(DecoderSettings)}
# One value per field, none of them profile test's own, as a user gives it; and its stored code.
VALUES = {"object_steps": 3, "object_cfg": 2.5, "final_steps": 4, "final_cfg": 5.0, "schedule": "fused"}
CODES = {"object_steps": 3, "object_cfg": 25, "final_steps": 4, "final_cfg": 50, "schedule": 1}


def _base(name: str) -> type:
    """int | None -> int; Literal[...] | None -> the Literal."""
    return next(t for t in typing.get_args(TYPES[name]) if t is not type(None))


def test_every_field_has_a_test_value_and_is_a_decoder_setting():
    assert sorted(VALUES) == sorted(CODES) == sorted(RECORD)
    assert set(RECORD) <= DECODER  # each value replaces the decoder setting of its name
    assert typing.get_args(_base("schedule")) == ("sequential", "fused")  # a named choice is typed, not a float


def _subparser(parser, *path):
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("command", [("compress",), ("batch", "compress")])
def test_the_cli_flags_are_exactly_the_record(command):
    parser = _subparser(build_parser(), *command)
    actions = {a.dest: a for a in parser._actions}
    assert set(actions) & DECODER == set(RECORD)
    for name in RECORD:
        action = actions[name]
        assert action.option_strings == ["--" + name.replace("_", "-")] and action.default is None
        base = _base(name)
        if typing.get_origin(base) is typing.Literal:
            assert tuple(action.choices) == typing.get_args(base)
        else:
            assert action.type is base and action.choices is None
        assert action.help and "stored in" in action.help
    args = parser.parse_args([*(["x"] if command == ("compress",) else ["d"]), "-o", "o",
                              *[a for n, v in VALUES.items() for a in ("--" + n.replace("_", "-"), str(v))]])
    assert {n: getattr(args, n) for n in RECORD} == VALUES


def test_the_server_form_is_exactly_the_record():
    with TestClient(create_app(ServerSettings(profile="test", warm=False)), base_url="http://localhost") as c:
        spec = c.get("/openapi.json").json()
    ref = spec["paths"]["/v1/compress"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
    assert set(form) & DECODER == set(RECORD)
    for name in RECORD:
        kinds = [k for k in form[name]["anyOf"] if k != {"type": "null"}]  # optional: absent = the profile's
        base = _base(name)
        if typing.get_origin(base) is typing.Literal:
            assert kinds == [{"type": "string", "enum": list(typing.get_args(base))}]
        else:
            assert kinds == [{"type": {int: "integer", float: "number"}[base]}]
        assert form[name].get("description")


def _doc_rows() -> dict[str, tuple[int, str]]:
    text = (ROOT / "docs" / "bitstream.md").read_text()
    section = text[text.index("## Settings section"):text.index("## Streams and how they relate")]
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (.*) \|$", section, re.M)  # | key | name | value |
    return {name: (int(key), value) for key, name, value in rows}


def test_the_file_format_is_exactly_the_record_and_its_documented_table():
    rows = _doc_rows()
    assert sorted(rows) == sorted(RECORD) == sorted(bs.OVERRIDE_KEYS.values())
    for name in RECORD:
        key, documented = rows[name]
        assert bs.OVERRIDE_KEYS[key] == name
        raw = bs.DecoderParams(1, 0, ScheduleOverrides(**{name: VALUES[name]})).to_bytes()
        assert raw == bytes([1, 0, key, CODES[name]])  # profile test, seed 0, then the pair
        assert bs.DecoderParams.from_bytes(raw).overrides.as_dict() == {name: VALUES[name]}
        # the documented range of the stored code: its ends read, one past them is refused
        base = _base(name)
        if typing.get_origin(base) is typing.Literal:  # "0 = sequential, 1 = fused"
            named = re.findall(r"(\d+) = (\w+)", documented)
            assert named == [(str(k), c) for k, c in enumerate(typing.get_args(base))]
            low, high = 0, len(named) - 1
        else:  # "..., 1..1000"
            low, high = (int(n) for n in re.findall(r"(\d+)\.\.(\d+)", documented)[0])
        for code in (low, high):
            bs.DecoderParams.from_bytes(bytes([1, 0, key]) + bs.write_varint(code))
        for code in ([low - 1] if low else []) + [high + 1]:
            with pytest.raises(BitstreamError, match=name if code > high else "below the minimum"):
                bs.DecoderParams.from_bytes(bytes([1, 0, key]) + bs.write_varint(code))
    every = bs.DecoderParams(1, 0, ScheduleOverrides(**VALUES)).to_bytes()
    assert every == bytes([1, 0, *[b for k, n in sorted((rows[n][0], n) for n in RECORD) for b in (k, CODES[n])]])


def test_the_record_holds_what_the_file_carries():
    r = ScheduleOverrides(object_steps=np.int64(4), final_steps=4.0, final_cfg=np.float32(5.5))
    assert r.as_dict() == {"object_steps": 4, "final_steps": 4, "final_cfg": 5.5}
    assert type(r.object_steps) is int and type(r.final_steps) is int and type(r.final_cfg) is float
    for bad, message in (({"object_steps": 4.5}, "whole number"), ({"final_cfg": 3.25}, "multiple of 0.1"),
                         ({"object_cfg": "7"}, "must be a number"), ({"final_steps": True}, "must be a number"),
                         ({"schedule": "parallel"}, "must be one of sequential, fused"),
                         ({"final_steps": 0}, "out of range")):
        with pytest.raises(InputError, match=message):
            ScheduleOverrides(**bad)
    with pytest.raises(InputError, match=r"unknown schedule settings \['steps'\] \(known: object_steps, "
                                         r"final_steps, object_cfg, final_cfg, schedule\)"):
        ScheduleOverrides.from_dict({"steps": 3})
    # the API takes the record as it takes a dict
    image = np.zeros((16, 16, 3), np.uint8)
    data = sedic.compress(image, bpp=None, reference_bpp=1, analyze=False, profile="test", schedule=r)
    assert sedic.inspect(data)["schedule"] == r.as_dict()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("one")
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(d / "grey.png")
    return d


def _flags() -> list[str]:
    return [a for n, v in VALUES.items() for a in ("--" + n.replace("_", "-"), str(v))]


def test_every_cli_flag_reaches_the_file(image_dir, tmp_path):
    out = tmp_path / "one.sedic"
    assert main(["compress", str(image_dir / "grey.png"), "-o", str(out), "--no-semantics", "--bpp", "1",
                 "--profile", "test", *_flags()]) == 0
    assert sedic.inspect(out.read_bytes())["schedule"] == VALUES
    assert main(["batch", "compress", str(image_dir), "-o", str(tmp_path / "batch"), "--bpp", "1", "--profile",
                 "test", "--workers", "1", "--no-progress", *_flags()]) == 0
    assert sedic.inspect((tmp_path / "batch" / "grey.sedic").read_bytes())["schedule"] == VALUES


def test_every_form_field_reaches_the_file(image_dir):
    png = (image_dir / "grey.png").read_bytes()
    with TestClient(create_app(ServerSettings(profile="test", warm=False)), base_url="http://localhost") as c:
        r = c.post("/v1/compress", files={"image": ("grey.png", png)},
                   data={"analyze": "false", "bpp": "1", **{n: str(v) for n, v in VALUES.items()}})
        assert r.status_code == 200, r.text
        assert sedic.inspect(r.content)["schedule"] == VALUES
        bad = c.post("/v1/compress", files={"image": ("grey.png", png)}, data={"analyze": "false",
                                                                                 "schedule": "parallel"})
        assert bad.status_code == 422, bad.text  # not a schedule the file can name
