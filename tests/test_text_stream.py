"""Tests of the text stream: canonical form, CLIP-window fitting, coder round trip, robustness, rate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sedic.errors import BitstreamError, InputError
from sedic.streams import text as T, text_model as TM

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTIONS = ROOT / "benchmarks" / "data" / "descriptions.json"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def eval_lists() -> list[tuple[str, list[str]]]:
    data = json.loads(DESCRIPTIONS.read_text(encoding="utf-8"))
    out = []
    for im in data["images"]:
        strings = [T.canonicalize(im["overall"])]
        for name, desc in im["objects"]:
            strings += [T.canonicalize(name), T.canonicalize(desc)]
        out.append((im["id"], strings))
    return out


LONG = ("A tall cylindrical lighthouse tower with smooth white painted walls showing slight weathering "
        "and faint vertical streaks. At the top sits a black metal gallery with a thin railing, a glass "
        "lantern room with dark window frames, and a conical red roof topped by a small vent. Sunlight "
        "creates a soft gradient of shade along the curved side. ") * 2

# Text that exercises the tokenizer and the coder: letters, digits, punctuation, non-ASCII, spaces.
texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("abcdefghijklmnopqrstuvwxyz ABC,.;:-'!?()0123456789&\t\n")),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=120,
)


# -- canonical form ---------------------------------------------------------------------------

def test_canonicalize_examples():
    assert T.canonicalize("  A  Red\tLighthouse\n") == "a red lighthouse"
    assert T.canonicalize("Fish &amp; Chips") == "fish & chips"
    assert T.canonicalize("&amp;lt;b&amp;gt;") == "<b>"  # double unescape, as open_clip does
    assert T.canonicalize("“Quoted” ﬁne ＡＢＣ") == '"quoted" fine abc'
    assert T.canonicalize("café\u200b naïve") == "café naïve"
    assert T.canonicalize("") == ""
    with pytest.raises(InputError):
        T.canonicalize(None)  # type: ignore[arg-type]


@FAST
@given(texts)
def test_canonicalize_idempotent(s):
    c = T.canonicalize(s)
    assert T.canonicalize(c) == c
    assert c == c.strip() and "  " not in c


# -- CLIP tokenizer and window ----------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """transformers' CLIPTokenizer built from the same vocabulary file, the decoders' tokenizer."""
    transformers = pytest.importorskip("transformers")
    bpe = T._bpe()
    d = tmp_path_factory.mktemp("clip")
    (d / "vocab.json").write_text(json.dumps(bpe.encoder), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in bpe.merges) + "\n",
                                  encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(d), local_files_only=True)


def test_tokenizer_matches_transformers_on_descriptions(hf_tokenizer):
    for _, strings in eval_lists():
        for s in strings:
            ids = hf_tokenizer(s)["input_ids"]
            assert ids[0] == 49406 and ids[-1] == 49407
            assert T.clip_tokens(s) == ids[1:-1], s


@settings(max_examples=40, deadline=None)
@given(texts)
def test_tokenizer_matches_transformers_random(hf_tokenizer, s):
    c = T.canonicalize(s)
    assert T.clip_tokens(c) == hf_tokenizer(c)["input_ids"][1:-1]


def check_fit(text, window):
    fit = T.fit_prompt(text, window)
    full = T.clip_tokens(T.canonicalize(text))
    got = T.clip_tokens(fit)
    assert len(got) + 2 <= window
    assert got == full[:len(got)]            # the kept text tokenizes to a prefix of the full tokens
    assert T.fit_prompt(fit, window) == fit  # idempotent
    assert T.canonicalize(fit) == fit
    return fit, full, got


def test_fit_prompt_long_and_short():
    fit, full, got = check_fit(LONG, T.WINDOW)
    assert len(full) > 75 and 70 <= len(got) <= 75
    assert T.canonicalize(LONG).startswith(fit)
    short = "A red Lighthouse"
    assert T.fit_prompt(short) == "a red lighthouse"
    assert T.fit_prompt("lighthouse, lighthouse", window=3) == "lighthouse"
    assert T.fit_prompt("lighthouse", window=2) == ""


@FAST
@given(texts, st.integers(min_value=2, max_value=30))
def test_fit_prompt_property(s, window):
    check_fit(s * 3, window)


# -- object prompts ---------------------------------------------------------------------------

def test_object_prompt():
    name, desc = T.object_prompt("Red  Parrot", LONG)
    assert name == "red parrot"
    joined = T.join_object_prompt(name, desc)
    assert joined.startswith("red parrot, ")
    assert len(T.clip_tokens(joined)) + 2 <= T.WINDOW
    assert T.canonicalize(LONG).startswith(desc) and len(desc) > 100
    assert T.object_prompt("cat", "A tabby cat.") == ("cat", "a tabby cat.")
    assert T.join_object_prompt("cat", "") == "cat"
    assert T.object_prompt("cat", "") == ("cat", "")
    # The name alone fills the window: the description is dropped.
    long_name = " ".join(["red"] * 74)
    assert T.object_prompt(long_name, "a bird") == (long_name, "")
    with pytest.raises(InputError):
        T.object_prompt(" ".join(["red"] * 76), "a bird")
    with pytest.raises(InputError):
        T.object_prompt("  ", "a bird")


@FAST
@given(texts.filter(lambda s: T.canonicalize(s) != ""), texts, st.integers(min_value=20, max_value=77))
def test_object_prompt_property(name, desc, window):
    try:
        n, d = T.object_prompt(name, desc * 4, window)
    except InputError:
        assert len(T.clip_tokens(T.canonicalize(name))) + 2 > window
        return
    assert n == T.canonicalize(name)
    assert T.canonicalize(d) == d
    assert len(T.clip_tokens(T.join_object_prompt(n, d))) + 2 <= window


# -- coder ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoded():
    return [(image_id, strings, T.encode_strings(strings)) for image_id, strings in eval_lists()]


def test_round_trip_descriptions(encoded):
    for _, strings, data in encoded:
        assert T.decode_strings(data) == strings


@pytest.mark.parametrize("strings", [
    [], [""], ["", "", ""], ["a"], ["."], ["123"], ["x1"], ["it's 3:45 p.m. - café, naïve; 日本語!"],
    ["a", "b"] * 32, ["the red barn", "barn", "the red barn"], ["zzqxj vlorpt", "zzqxj"],
    ["a" * 4096], ["-" * 200], ["\U0002a6d6 é ü 😀"],
])
def test_round_trip_edge_cases(strings):
    assert T.decode_strings(T.encode_strings(strings)) == strings


@FAST
@given(st.lists(texts, max_size=7))
def test_round_trip_random(raw):
    strings = [T.canonicalize(s) for s in raw]
    data = T.encode_strings(strings)
    assert not data.endswith(b"\x00")
    assert T.decode_strings(data) == strings


def test_encoder_rejects_bad_input():
    with pytest.raises(InputError):
        T.encode_strings(["Not Canonical"])
    with pytest.raises(InputError):
        T.encode_strings(["a  b"])
    with pytest.raises(InputError):
        T.encode_strings(["a"] * 66)  # 65 = an overall description and 32 objects is the maximum
    with pytest.raises(InputError):
        T.encode_strings(["a" * 4097])
    with pytest.raises(InputError):
        T.encode_strings("abc")  # type: ignore[arg-type]


def test_deterministic_bytes():
    # Pinned output: any change to the tables, the model or the coder changes the bitstream.
    data = T.encode_strings(["a red lighthouse on a grassy hill", "lighthouse", "a tall white tower"])
    assert T.encode_strings(["a red lighthouse on a grassy hill", "lighthouse", "a tall white tower"]) == data
    # (bitstream version 2: the string count is coded with Uniform(66), it was Uniform(65))
    assert data.hex() == "0c25fb60abfa3a2a3c853e48897768af26faddac"


# -- robustness -------------------------------------------------------------------------------

def decode_only_bitstream_error(data: bytes):
    try:
        out = T.decode_strings(data)
    except BitstreamError:
        return None
    assert isinstance(out, list) and all(isinstance(s, str) for s in out)
    assert TM.encode_list(out) == data  # anything accepted is exactly an encoder output
    return out


@pytest.fixture(scope="module")
def sample_stream(encoded):
    return encoded[0][2]


def test_truncated_and_extended(sample_stream):
    for n in list(range(0, len(sample_stream), 17)) + [len(sample_stream) - k for k in (1, 2, 3, 4, 5)]:
        decode_only_bitstream_error(sample_stream[:n])
    for extra in [b"\x01", b"\x00", b"\xff\xff", b"\x12\x34\x56\x78", bytes(range(1, 40))]:
        with pytest.raises(BitstreamError):
            T.decode_strings(sample_stream + extra)
    with pytest.raises(BitstreamError):
        T.decode_strings("text")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_bytes(sample_stream, data):
    b = bytearray(sample_stream)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "delete", "insert"]))
        i = data.draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "delete" and len(b) > 1:
            del b[i]
        else:
            b.insert(i, data.draw(st.integers(0, 255)))
    decode_only_bitstream_error(bytes(b))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes(data):
    decode_only_bitstream_error(data)


# -- rate -------------------------------------------------------------------------------------

def test_rate_on_evaluation_descriptions(encoded):
    """The shipped model must code typical LMM image descriptions at <= 2.2 bits per character."""
    total_bits = total_chars = 0
    for image_id, strings, data in encoded:
        bits = 8 * len(data)
        chars = sum(len(s) for s in strings)
        assert bits / chars <= 2.3, (image_id, bits / chars)
        total_bits += bits
        total_chars += chars
    assert total_bits / total_chars <= 2.2


def test_leading_separators_count_towards_the_character_budget():
    # 65 strings that are each one 4,000-comma separator: spelled once, then a cheap dictionary
    # hit, so 260,000 characters come from about 2,600 bytes (budget 64 * len + 4096). Every one
    # is a leading separator; the decoder must count those too (docs/text-stream.md, "Limits").
    import constriction

    strings = [","*4000] * 65
    enc = constriction.stream.queue.RangeEncoder()
    coder = TM._Coder(enc=enc)
    coder.code(constriction.stream.model.Uniform(TM.MAX_STRINGS + 1), len(strings))
    for i, s in enumerate(strings):
        coder.string(TM._string_type(i), s)
    data = enc.get_compressed().astype(">u4").tobytes().rstrip(b"\x00")
    assert sum(map(len, strings)) > 64 * len(data) + 4096
    with pytest.raises(BitstreamError, match="more text than the stream length allows"):
        TM.decode_list(data)
