"""The AVIF reference's encoder effort (profile `reference.effort`, `sedic.compress(effort=)`,
`sedic compress --effort`): 0 the rate search alone, 1 the speed-2 refinement, 2 (default) also
neighbouring sizes and pre-filtered downscales. Encoder only: every file decodes the same way."""

import json

import pytest
from PIL import Image

import sedic
from sedic.cli import main
from sedic.config import ReferenceSettings, get_profile
from sedic.errors import InputError
from sedic.streams import reference as R, reference_refine as F

from reference_helpers import SearchOnly, kodim23 as _image


def test_each_effort_runs_its_own_steps():
    image = _image()
    budget = 800
    search, setting = R.encode_reference(image, budget, SearchOnly())
    assert R.encode_reference(image, budget, R.AvifCodec(effort=0))[0] == search
    window = F.refine_reference(image, budget, R.AvifCodec(), search, setting, R.psnr, neighbours=(), sigmas=())[0]
    assert R.encode_reference(image, budget, R.AvifCodec(effort=1))[0] == window
    full = R.encode_reference(image, budget, R.AvifCodec())[0]
    assert full == R.encode_reference(image, budget, R.AvifCodec(effort=2))[0]
    h, w = image.shape[:2]
    scores = [R.psnr(image, R.decode_reference(p, w, h)) for p in (search, window, full)]
    assert scores[0] < scores[1] < scores[2], scores  # on this budget each level adds


def test_profile_api_and_cli_take_the_effort_and_refuse_others(tmp_path, capsys):
    assert get_profile("sedic").reference.effort == 2
    assert R.AvifCodec.from_settings(ReferenceSettings(effort=0)).effort == 0
    for bad in (3, -1, True, "2", 1.0):
        with pytest.raises(InputError, match="effort must be 0, 1 or 2"):
            ReferenceSettings(effort=bad)
        with pytest.raises(InputError, match="effort must be 0, 1 or 2"):
            R.AvifCodec(effort=bad)
    image = _image()
    fast = sedic.compress(image, bpp=0.2, analyze=False, effort=0)
    assert fast != sedic.compress(image, bpp=0.2, analyze=False)  # the default refines
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"base": "sedic", "reference": {"effort": 0}}))
    assert sedic.compress(image, bpp=0.2, analyze=False, profile=str(profile)) == fast
    # the file names the profile, not the effort: it decodes as any other
    assert sedic.inspect(fast)["profile"] == sedic.inspect(sedic.compress(image, bpp=0.2, analyze=False))["profile"]
    with pytest.raises(InputError, match="effort must be 0, 1 or 2"):
        sedic.compress(image, bpp=0.2, analyze=False, effort=5)
    src = tmp_path / "in.png"
    Image.fromarray(image).save(src)
    out = tmp_path / "a.sedic"
    assert main(["compress", str(src), "-o", str(out), "--no-semantics", "--bpp", "0.2", "--effort", "0"]) == 0
    assert out.read_bytes() == fast
    capsys.readouterr()
    assert main(["compress", str(src), "-o", str(tmp_path / "b.sedic"), "--no-semantics", "--effort", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "sedic: error: effort must be 0, 1 or 2 (the AVIF reference's encoder effort), got 3"
    assert not (tmp_path / "b.sedic").exists()
