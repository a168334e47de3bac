"""CompressAI: one coder for every use (the reference codec here, the evaluation's CompressAI
baseline in sedic/evaluation/baselines.py), and the reference codec's payload around it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from sedic.bitstream import read_varint, write_varint
from sedic.errors import BitstreamError, InputError, ModelUnavailableError

from .base import FACTORS, ReferenceCodec, ReferenceSetting, _check_target, _read_size, _size_header

if TYPE_CHECKING:
    from sedic.config import ReferenceSettings
    from sedic.models import ModelRef

CODEC_COMPRESSAI = 2

# CompressAI models a payload can name (3-bit index); never reorder, only append.
COMPRESSAI_MODELS = ("cheng2020-attn", "cheng2020-anchor", "mbt2018", "mbt2018-mean",
                     "bmshj2018-hyperprior", "bmshj2018-factorized")
PAD = 64  # inputs are padded to a multiple of 64 (replicated edges), the outputs cropped


class CompressAICoder:
    """One CompressAI architecture's entropy coder, quality by quality.

    The model of a quality is injected (`nets`, for tests and embedding), read from a state dict
    (`checkpoint`: a path, "{quality}" in it replaced, or a dict quality -> path), or the zoo's
    weights (sedic.models.load_compressai: torch.hub's cache first, hash-checked downloads). Its
    entropy-coder tables are the ones its weights store (`update()` without force): a file codes
    and decodes with the same CDFs on every machine instead of tables recomputed in float; a
    state dict without tables gets them computed once. `model` is any architecture of CompressAI's
    zoo (the reference codec allows fewer: those its payload can name)."""

    def __init__(self, model: str, metric: str = "mse", checkpoint=None, nets=None, device: str = "cpu"):
        self.model, self.metric, self.checkpoint, self.device = model, metric, checkpoint, device
        self._nets = dict(nets or {})

    def net(self, quality: int):
        """The model for this quality: injected, from a checkpoint, or from CompressAI's zoo."""
        if quality in self._nets:
            return self._nets[quality]
        try:
            import torch
            from compressai.zoo import image as zoo
            from compressai.zoo.pretrained import load_pretrained
        except Exception as exc:
            raise ModelUnavailableError(f"CompressAI model {self.model!r} needs torch and compressai: {exc}") from exc
        hint = (f"pass checkpoint=<path to a state dict of {self.model}> "
                f"('{{quality}}' in the path is replaced, or a dict quality -> path)")
        path = self.checkpoint.get(quality) if isinstance(self.checkpoint, dict) else self.checkpoint
        if path is None:  # the zoo's weights: torch.hub's cache first, then the network
            from sedic.models import load_compressai

            net = load_compressai(self.model, self.metric, quality)
        else:
            try:
                path = os.fspath(path).replace("{quality}", str(quality))
                state = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(state, dict) and "state_dict" in state:  # training checkpoints
                    state = state["state_dict"]
                state = load_pretrained({k.removeprefix("module."): v for k, v in state.items()})
                net = zoo.model_architectures[self.model].from_state_dict(state)
            except Exception as exc:
                raise ModelUnavailableError(
                    f"CompressAI model {self.model!r} quality {quality} cannot be loaded from checkpoint "
                    f"{path!r}: {type(exc).__name__}: {exc}; {hint}") from exc
        net.eval()
        # force=False keeps the entropy-coder tables stored in the checkpoint, so every
        # machine codes with the same CDFs instead of recomputing them in float.
        net.update()
        net = net.to(self.device)
        self._nets[quality] = net
        return net

    def compress(self, image: np.ndarray, quality: int) -> tuple[list[list[bytes]], tuple[int, ...]]:
        """uint8 (h, w, 3) -> (the model's string groups, one string each here; latent shape)."""
        import torch
        import torch.nn.functional as F

        h, w = image.shape[:2]
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
        # Replicate padding costs fewer bits than zeros; it is cropped after decoding.
        x = F.pad(x, (0, (-w) % PAD, 0, (-h) % PAD), mode="replicate").to(self.device)
        with torch.no_grad():
            out = self.net(quality).compress(x)
        return out["strings"], tuple(out["shape"])

    def decompress(self, strings: list[list[bytes]], shape, quality: int, width: int, height: int) -> np.ndarray:
        """The string groups and latent shape `compress` gave -> uint8 (height, width, 3)."""
        import torch

        with torch.no_grad():
            x = self.net(quality).decompress(strings, tuple(shape))["x_hat"]
        x = torch.nan_to_num(x[0, :, :height, :width]).clamp(0, 1).mul(255).round().to(torch.uint8)
        return x.permute(1, 2, 0).contiguous().cpu().numpy()


class CompressAICodec(ReferenceCodec):
    """A CompressAI model's real entropy-coded strings (CompressAICoder).

    Payload: byte 0 = codec id (3 bits) | model index (3 bits) | 00;
             byte 1 = factor index (4 bits) | quality - 1 (4 bits);
             [varint width-1, varint height-1, when the factor index is 15];
             for every string but the last: varint length + bytes; the last string is the rest.
    The latent shape is not stored: it follows from the reduced size padded to 64.

    Options: model (name), metric ("mse"/"ms-ssim", zoo weights only), checkpoint (state-dict
    path, "{quality}" in it is replaced, or a dict quality -> path), nets (dict quality -> a
    ready model, for tests and embedding), qualities (the search's subset).
    """

    codec_id = CODEC_COMPRESSAI
    name = "compressai"
    OPTIONS = ("model", "metric", "checkpoint", "nets", "qualities")

    def __init__(self, model: str = "cheng2020-attn", metric: str = "mse", checkpoint=None, nets=None,
                 qualities=None, **unknown):
        if unknown:
            raise InputError(f"unknown CompressAI reference options: {sorted(unknown)}")
        if model not in COMPRESSAI_MODELS:
            raise InputError(f"unknown CompressAI model {model!r}; known: {', '.join(COMPRESSAI_MODELS)}")
        self.model = model
        self.metric = metric
        self.checkpoint = checkpoint
        self.coder = CompressAICoder(model, metric, checkpoint, nets)
        self._qualities = list(qualities) if qualities else self._model_qualities(model)

    # -------------------------------------------------------- registry hooks
    @classmethod
    def from_settings(cls, settings: ReferenceSettings) -> CompressAICodec:
        return cls(model=settings.compressai_model, checkpoint=settings.compressai_checkpoint)

    @classmethod
    def decode_options(cls, settings: ReferenceSettings) -> dict:
        # The payload names its model; the profile only says where weights are.
        return {"checkpoint": settings.compressai_checkpoint} if settings.compressai_checkpoint else {}

    @classmethod
    def for_payload(cls, payload: bytes, **options) -> CompressAICodec:
        options = {k: v for k, v in options.items() if k in cls.OPTIONS}
        return cls(**{"model": payload_model(payload), **options})

    @classmethod
    def models(cls, settings: ReferenceSettings) -> list[ModelRef]:
        """CompressAI zoo weights, unless the profile names a local checkpoint."""
        from sedic.models import compressai_ref

        return [] if settings.compressai_checkpoint else [compressai_ref(settings.compressai_model)]

    # -------------------------------------------------------- coding
    @staticmethod
    def _model_qualities(model: str) -> list[int]:
        return [1, 2, 3, 4, 5, 6] if model.startswith("cheng2020") else list(range(1, 9))

    def qualities(self) -> list[int]:
        return list(self._qualities)

    def net(self, quality: int):
        return self.coder.net(quality)

    def _num_strings(self) -> int:
        return 1 if self.model == "bmshj2018-factorized" else 2

    def _shape(self, rw: int, rh: int) -> tuple[int, int]:
        hp, wp = -(-rh // PAD) * PAD, -(-rw // PAD) * PAD
        down = 16 if self.model == "bmshj2018-factorized" else 64  # shape of the last-coded latent
        return hp // down, wp // down

    def check_setting(self, setting: ReferenceSetting) -> None:
        if not 0 <= setting.factor_index < len(FACTORS) or not 1 <= setting.quality <= 16:
            raise InputError(f"invalid CompressAI reference setting {setting}")

    def encode_reduced(self, reduced: np.ndarray, setting: ReferenceSetting) -> bytes:
        rh, rw = reduced.shape[:2]
        groups, shape = self.coder.compress(reduced, setting.quality)
        if shape != self._shape(rw, rh) or len(groups) != self._num_strings():
            raise InputError(f"{self.model} produced an unexpected latent layout")
        strings = [s[0] for s in groups]
        body = b"".join(write_varint(len(s)) + s for s in strings[:-1]) + strings[-1]
        header = bytes([(CODEC_COMPRESSAI << 5) | (COMPRESSAI_MODELS.index(self.model) << 2),
                        (setting.factor_index << 4) | (setting.quality - 1)])
        return header + _size_header(setting.factor_index, rw, rh) + body

    def describe(self, payload: bytes, width: int, height: int) -> dict:
        quality, rw, rh, _ = self.parse(payload, width, height)
        return {"codec": self.name, "width": rw, "height": rh, "model": self.model, "quality": quality}

    def parse(self, payload: bytes, width: int, height: int):
        """Header and strings; every check happens before a model is loaded."""
        _check_target(width, height)
        if len(payload) < 2 or payload[0] >> 5 != CODEC_COMPRESSAI:
            raise BitstreamError("not a CompressAI reference payload (or truncated)")
        model_index, reserved = (payload[0] >> 2) & 7, payload[0] & 3
        if reserved or model_index >= len(COMPRESSAI_MODELS):
            raise BitstreamError("bad CompressAI reference header")
        if COMPRESSAI_MODELS[model_index] != self.model:
            raise BitstreamError(f"payload was coded with {COMPRESSAI_MODELS[model_index]}, "
                                 f"decoder configured for {self.model}")
        factor_index, quality = payload[1] >> 4, (payload[1] & 15) + 1
        if quality not in self._model_qualities(self.model):
            raise BitstreamError(f"quality {quality} invalid for {self.model}")
        rw, rh, pos = _read_size(payload, 2, factor_index, width, height)
        strings = []
        for _ in range(self._num_strings() - 1):
            n, pos = read_varint(payload, pos, "CompressAI string length", len(payload))
            if pos + n > len(payload):
                raise BitstreamError("CompressAI string runs past the end of the payload")
            strings.append(payload[pos:pos + n])
            pos += n
        strings.append(payload[pos:])
        return quality, rw, rh, strings

    def decode_reduced(self, payload: bytes, width: int, height: int) -> np.ndarray:
        quality, rw, rh, strings = self.parse(payload, width, height)
        self.net(quality)  # a model that cannot be loaded is a ModelUnavailableError, not corrupt data
        try:
            return self.coder.decompress([[s] for s in strings], self._shape(rw, rh), quality, rw, rh)
        except Exception as exc:
            raise BitstreamError(f"CompressAI reference does not decode: {exc}") from exc


def payload_model(payload: bytes) -> str:
    """The CompressAI model a payload names (BitstreamError for an index no model has)."""
    idx = (payload[0] >> 2) & 7
    if idx >= len(COMPRESSAI_MODELS):
        raise BitstreamError("bad CompressAI reference header")
    return COMPRESSAI_MODELS[idx]
