"""One of each small thing (issue 18, item 5): the device and dtype checks, the one-line error
text, the object prompt, the error hierarchy, the public API's argument types."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sedic.config import get_profile
from sedic.errors import InputError, one_line

# ---------------------------------------------------------------------------------- dtypes

def test_one_dtype_vocabulary_for_analysis_and_decoder():
    from sedic.devices import resolve_dtype
    from sedic.restoration.settings import PipelineSettings

    assert resolve_dtype("auto", "cuda") is torch.bfloat16 and resolve_dtype("auto", "cuda:1") is torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("float16", "cpu") is torch.float16 and resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    # the analysis accepted "bf16" and the decoder refused it (with a ValueError, outside the hierarchy)
    for name in ("bf16", "fp32", "half", ""):
        with pytest.raises(InputError, match="auto, float32, bfloat16, float16"):
            resolve_dtype(name, "cpu")
        with pytest.raises(InputError, match="dtype"):
            replace(get_profile("test").analysis, dtype=name)
        with pytest.raises(InputError, match="dtype"):
            PipelineSettings(dtype=name)


# ---------------------------------------------------------------------------------- one line

def test_one_line_error_text():
    assert one_line(OSError("no\n  such\tfile")) == "OSError: no such file"
    assert one_line(InputError("bad\nimage")) == "bad image"  # sedic's own messages carry no type
    assert one_line(KeyError()) == "KeyError"
    assert one_line("a\n b", limit=None) == "a b"
    cut = one_line(ValueError("x" * 500), limit=40)
    assert len(cut) == 40 and cut.endswith("…") and cut.startswith("ValueError: xxx")


# ---------------------------------------------------------------------------------- object prompt

def test_empty_description_prompts_the_name_alone(bb):
    """The encoder fits "name" (no dangling comma) into the window for an empty description
    (streams.text.join_object_prompt); the decoder prompted "name, " and guided the comma."""
    from sedic.restoration import restore
    from sedic.restoration.orag import object_token_mask
    from sedic.restoration.settings import DecoderSettings, OragSettings
    from sedic.semantics import SemanticObject, Semantics

    from tiny_decoder import FAST, gradient_image

    tok = bb.tokenizer
    mask = object_token_mask(tok, "lighthouse", "", OragSettings())
    assert int(mask.sum()) == len(tok("lighthouse", add_special_tokens=False).input_ids)

    seen = []
    real = type(bb).encode_prompt

    def spy(self, prompts):
        seen.extend(prompts)
        return real(self, prompts)

    grid = np.zeros((4, 6), bool)
    grid[1:3, 1:4] = True
    sem = Semantics("a coast", [SemanticObject("lighthouse", "", grid)])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(bb), "encode_prompt", spy)
        restore(gradient_image(32, 48), sem, DecoderSettings(**FAST), seed=0, stages=1, backbone=bb)
    assert "lighthouse" in seen and not any(p.startswith("lighthouse,") for p in seen)


# ---------------------------------------------------------------------------------- semantics

def test_semantics_from_dict_reads_masks_from_bytes_as_load_reads_files(tmp_path):
    """Semantics.from_dict: an upload's JSON and mask bytes, no temporary folder (what the server
    did to reuse Semantics.load); the same semantics and the same messages as the file loader."""
    import io
    import json

    from PIL import Image

    from sedic.semantics import Semantics, mask_from_png

    mask = np.zeros((20, 30), bool)
    mask[4:12, 5:25] = True
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, "PNG")
    raw = {"overall": "a field", "objects": [{"name": "cow", "description": "a brown cow", "mask": "m.png"}]}
    (tmp_path / "m.png").write_bytes(buf.getvalue())
    (tmp_path / "s.json").write_text(json.dumps(raw))
    uploads = {"m.png": buf.getvalue()}
    got = Semantics.from_dict(raw, lambda name, where: mask_from_png(uploads[name], name, where), "upload")
    loaded = Semantics.load(tmp_path / "s.json")
    assert got.overall == loaded.overall == "a field"
    assert [(o.name, o.description) for o in got.objects] == [("cow", "a brown cow")]
    assert np.array_equal(got.objects[0].mask, mask) and np.array_equal(loaded.objects[0].mask, mask)
    with pytest.raises(InputError, match=r"^upload: objects\[0\]: missing or non-string field 'mask'$"):
        Semantics.from_dict({"overall": "x", "objects": [{"name": "a", "description": "b"}]}, None, "upload")
    with pytest.raises(InputError, match=r"^upload: objects\[0\]: cannot read mask m.png"):
        Semantics.from_dict(raw, lambda name, where: mask_from_png(b"not a png", name, where), "upload")


# ---------------------------------------------------------------------------------- public API

def test_public_api_takes_a_profile_object_and_exports_the_warning(small_image):
    """`profile: str | Profile`: a Profile crashed with AttributeError as soon as the analysis ran."""
    import sedic

    test = get_profile("test")
    crop = np.ascontiguousarray(small_image[:64, :96])
    by_object = sedic.compress(crop, bpp=0.5, profile=test)  # the analysis runs (profile test: offline)
    assert by_object == sedic.compress(crop, bpp=0.5, profile="test")
    assert sedic.analyze(crop, profile=test).to_dict() == sedic.analyze(crop, profile="test").to_dict()
    assert sedic.decompress(by_object, profile=test, stages=0).shape == crop.shape
    assert issubclass(sedic.SedicWarning, UserWarning) and "SedicWarning" in sedic.__all__
    assert sedic.Profile is type(test)
