"""ORAG: Object Restoration with Attention Guidance (our design; see docs/orag.md).

Two training-free mechanisms act inside an object stage k:

1. Masked cross-attention modulation. In every selected cross-attention layer of the UNet and the
   ControlNet, the logits of the object's text tokens get an additive bias
       B[q, j] = w_i * R[q] * s_k(q) * 1[j in T_k]
   where s_k(q) is the coverage sign of mask k at query q: a_k(q) > 0, the fraction of the layer's
   cell that the mask covers, wherever the mask touches the cell, and -1 where it does not (so no
   cell of the object pushes its own tokens away, however thin the object; `coverage_sign`),
   R[q] = max_j L[q, j] - min_j L[q, j] is the range of the logits L = Q K^T * scale per query
   and head, T_k the object's token positions and w_i = strength * (1 - i/n)^decay the step
   weight. The bias goes into
   `scaled_dot_product_attention` as an additive float mask, so no probability tensor is built;
   the only extra work is Q K^T against the 77 text keys (queries x 77 per head) for R.
   Only the conditional rows of the classifier-free-guidance batch are guided.
2. Latent blending (in `sampler.py`): outside the mask the latent is replaced after every step by
   the stage input re-noised to the next timestep with the stage's noise.

The fused schedule (pipeline.py) is regional prompting in one pass: the context is the overall
prompt (77 states) followed by each object's own tokens T_k, and object k's keys are visible only
to queries whose cell mask k touches (elsewhere, and in the unconditional row, their logit is
-inf), where they are raised by w_i * R[q] * a_k(q) (`OragState.set_regions`). Outside every mask,
and in the unconditional row, the attention is exactly the overall (negative) prompt's.

With the guidance inactive, the processors call the layer's original processor, so an unguided
run is bit-identical to a run without them (and runs the stock SDPA call without a mask, so the
flash kernel stays available on CUDA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..streams.text import join_object_prompt
from .settings import OragSettings

_BLOCK_PREFIX = {"down": "down_blocks.", "mid": "mid_block.", "up": "up_blocks."}


def object_token_mask(tokenizer, name: str, description: str, settings: OragSettings,
                      length: int = 77, name_in_prompt: bool = True) -> torch.Tensor:
    """Bool (length,) marking the object's tokens in the prompt join_object_prompt(name, description)
    (or in `description` alone when name_in_prompt is False).

    BOS is never included: it is the attention sink that most queries attend to, and pushing it
    around rescales the whole layer instead of locating the object. Padding is never included.
    """
    prompt = join_object_prompt(name, description) if name_in_prompt else description
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
    eos_id = tokenizer.eos_token_id
    # The first EOS after BOS ends the text (SD 2's tokenizer pads with "!", SD 1's with EOS).
    try:
        eos = ids.index(eos_id, 1)
    except ValueError:
        eos = length  # truncated without EOS: everything after BOS is text
    start = 1
    if settings.tokens == "description" and name_in_prompt:
        # CLIP pre-tokenises on spaces and punctuation, so "name," is a prefix of the prompt's tokens
        start += len(tokenizer(f"{name},", add_special_tokens=False).input_ids)
    mask = torch.zeros(length, dtype=torch.bool)
    mask[start:min(eos, length)] = True
    if settings.include_eos and eos < length:
        mask[eos] = True
    return mask


def level_coverage(mask: torch.Tensor, level: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """a(q): the fraction of each cell of UNet level `level` that `mask` (B, C, h, w) in [0, 1] on
    the latent grid covers. A level-l cell holds the 2^l x 2^l latent cells under it, as the UNet's
    stride-2 down-samplings place them (cell i starts at latent row i * 2^l; the grid halves with
    ceil); a cell cut by the grid's edge is averaged over the latent cells it has."""
    f = 2 ** level
    if f == 1:
        return mask.to(dtype)
    h, w = mask.shape[-2:]
    m = F.pad(mask.to(dtype), (0, -w % f, 0, -h % f))
    ones = F.pad(torch.ones_like(mask[:, :1], dtype=dtype), (0, -w % f, 0, -h % f))
    return F.avg_pool2d(m, f) / F.avg_pool2d(ones, f)


def _work_dtype(dtype) -> torch.dtype:
    # coverage fractions like 23/40 are exact to the model's precision (float64 in the tests)
    return torch.float64 if dtype == torch.float64 else torch.float32


def coverage_sign(a: torch.Tensor) -> torch.Tensor:
    """s(q) from the coverage a(q): a where the mask touches the cell (the object's tokens are raised
    in proportion to how much of the cell is the object), -1 where it does not. Never negative in a
    cell the mask touches: a 1-cell pole still pulls its own text at SD's 8x coarser mid block."""
    return torch.where(a > 0, a, torch.full_like(a, -1.0))


class OragState:
    """What the processors of one model read; set by the sampler before each network call.

    Kept compile-friendly: the per-step weight is a tensor (a Python float would be baked into a
    compiled graph and force a recompile every step) and the per-level mask signs are computed
    when the mask is set, outside the networks.

    levels: the UNet's resolution levels, from the backbone's description (`Backbone.levels`,
    `BackboneSpec.unet_levels`); one mask coverage map is kept per level.
    """

    def __init__(self, levels: int):
        self.levels = levels
        self.guiding = False         # w_i != 0 this step (a bool: at most two compiled variants)
        self.weight = torch.zeros(())  # w_i as a 0-dim tensor
        self.tokens: torch.Tensor | None = None   # (S,) float 0/1
        self.rows: torch.Tensor | None = None     # (B,) float: 1 = guided (conditional) row
        self.range_mode = "query"
        self.fixed_range = 8.0
        self.probe = None            # test hook: probe(name, query, key, bias, scale)
        self.level_signs: dict[int, torch.Tensor] | None = None  # queries -> (1|B, 1, N, 1)
        self.level_gates: dict[int, torch.Tensor] | None = None  # fused: queries -> (1|B, 1, N, S) a_k(q)
        self.base_keys = 77          # fused: the overall prompt's keys (always visible; R is their range)
        self.object_keys: torch.Tensor | None = None  # fused: (S,) bool, the object tokens' columns

    @property
    def fused(self) -> bool:
        return self.level_gates is not None

    @property
    def active(self) -> bool:
        if self.rows is None:
            return False
        if self.fused:
            return True  # the routing is structural: every step, guided or not
        routed = self.tokens is not None and self.level_signs is not None
        return routed and (self.guiding or self.probe is not None)

    def set_weight(self, w: float, device=None) -> None:
        self.guiding = w != 0.0
        self.weight = torch.tensor(float(w), device=device)

    def set_mask(self, mask: torch.Tensor | None, dtype: torch.dtype | None = None) -> None:
        """mask: (1|B, 1, h, w) float in [0, 1] at the latent grid, or None; signs kept in `dtype`."""
        if mask is None:
            self.level_signs = None
            return
        signs: dict[int, torch.Tensor] = {}
        for level in range(self.levels):
            a = level_coverage(mask, level, _work_dtype(dtype))
            sign = coverage_sign(a).flatten(2).transpose(1, 2).unsqueeze(1)
            signs.setdefault(a.shape[-2] * a.shape[-1], sign if dtype is None else sign.to(dtype))
        self.level_signs = signs

    def set_regions(self, masks: torch.Tensor | None, tokens: torch.Tensor | None,
                    dtype: torch.dtype | None = None) -> None:
        """Fused schedule: masks (1|B, K, h, w) in [0, 1] at the latent grid, tokens (K, S) 0/1 with
        disjoint rows (object k's columns in the context, after the overall prompt's), or None.

        Keeps per level the gain G = a @ tokens, (1|B, 1, N, S): G[q, j] = a_k(q), the coverage of
        mask k at query q, for j in T_k, 0 elsewhere. A column j in T_k is visible to query q where
        G[q, j] > 0 (mask k touches the cell); the overall prompt's columns are always visible.
        The rows being disjoint, each entry is one coverage plus zeros, exact in any dtype.
        """
        if masks is None or tokens is None:
            self.level_gates = None
            self.object_keys = None
            return
        # which columns are the objects', counted where `tokens` is (the CPU in the pipeline): no
        # device sync for base_keys, and it works when the masks are on the meta device (FLOP counts)
        object_keys = tokens.sum(0) > 0
        base_keys = int(tokens.shape[1] - object_keys.sum())
        tokens = tokens.to(masks.device, _work_dtype(dtype))
        gates: dict[int, torch.Tensor] = {}
        for level in range(self.levels):
            a = level_coverage(masks, level, _work_dtype(dtype))         # (B, K, lh, lw)
            lh, lw = a.shape[-2:]
            gate = (a.flatten(2).transpose(1, 2) @ tokens).unsqueeze(1)  # (B, 1, N, S)
            gates.setdefault(lh * lw, gate if dtype is None else gate.to(dtype))
        self.level_gates = gates
        self.object_keys = object_keys.to(masks.device)
        self.base_keys = base_keys

    def clear(self) -> None:
        self.set_weight(0.0)
        self.tokens, self.rows = None, None
        self.set_mask(None)
        self.set_regions(None, None)

    def gates(self, n_queries: int, device, dtype) -> torch.Tensor:
        """G at the layer with n_queries positions, (1|B, 1, N, S)."""
        if self.level_gates is None:
            raise RuntimeError("ORAG: no regions are set (set_regions)")
        try:
            return self.level_gates[n_queries].to(device, dtype)
        except KeyError:
            raise RuntimeError(f"ORAG: no mask level has {n_queries} positions") from None

    def signs(self, n_queries: int, device, dtype) -> torch.Tensor:
        """s(q) (coverage_sign) at the layer with n_queries positions, (1|B, 1, N, 1)."""
        if self.level_signs is None:
            raise RuntimeError("ORAG: no mask is set (set_mask)")
        try:
            return self.level_signs[n_queries].to(device, dtype)
        except KeyError:
            raise RuntimeError(f"ORAG: no mask level has {n_queries} positions") from None


class OragAttnProcessor:
    """SDPA attention with the ORAG bias on cross-attention; the layer's original processor otherwise."""

    def __init__(self, state: OragState, base, name: str = "", guided: bool = True):
        self.state = state
        self.base = base
        self.name = name
        self.guided = guided  # False: fused routing only (no raise); sequential: the stock processor

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        st = self.state
        if encoder_hidden_states is None or not st.active or not (self.guided or st.fused):
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, n_queries, _ = hidden_states.shape
        n_keys = encoder_hidden_states.shape[1]

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        dtype, device = query.dtype, query.device
        rows = st.rows.to(device, dtype).view(-1, 1, 1, 1)
        weight = st.weight.to(device, dtype) * rows
        if st.fused:
            # a_k(q) on object k's columns: the raise where visible, -inf where mask k does not touch
            # the cell and in the unguided (unconditional) rows
            gain = st.gates(n_queries, device, dtype)[..., :n_keys]
            visible = (gain > 0) & (rows > 0) | ~st.object_keys.to(device)[:n_keys]
            gate = weight * gain if self.guided else torch.zeros_like(gain)
            range_keys = key[:, :, :st.base_keys]  # R: the overall prompt's logits, whatever K is
        else:
            # gate (B, 1, N, S): +/- per query, only the object's tokens, only the guided rows
            tokens = st.tokens.to(device, dtype)[:n_keys]
            gate = weight * st.signs(n_queries, device, dtype) * tokens.view(1, 1, 1, -1)
            visible, range_keys = None, key
        if st.range_mode == "query":
            # Q K^T against the few text keys only: (B, heads, N, S), no softmax; in float32 where
            # the layer asks for it (upcast_attention: SD 2.1-768's logits overflow float16)
            q, k = (query.float(), range_keys.float()) if attn.upcast_attention else (query, range_keys)
            logits = torch.matmul(q, k.transpose(-1, -2)) * attn.scale
            rng = (logits.amax(-1, keepdim=True) - logits.amin(-1, keepdim=True)).to(dtype)
            bias = (gate * rng).expand(batch, attn.heads, n_queries, n_keys)
        else:
            bias = (gate * st.fixed_range).expand(batch, attn.heads, n_queries, n_keys)
        if visible is not None:
            bias = bias.masked_fill(~visible, float("-inf"))
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, n_keys, batch)
            bias = bias + attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if st.probe is not None:
            st.probe(self.name, query, key, bias, attn.scale)

        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=0.0,
                                                       is_causal=False, scale=attn.scale)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def install(model, state: OragState, blocks: tuple[str, ...] | None = None, label: str = "",
            route_all: bool = False) -> dict:
    """Wrap the attention processors of `model` (all blocks, or those named) with ORAG processors.

    route_all (fused schedule): wrap every block, the unnamed ones unguided (routing, no raise), so
    no layer sees an object's text outside its mask.

    Returns the original processors, for `uninstall`. Self-attention layers are wrapped too but
    always take the original path (the processor checks for encoder states at run time), which is
    simpler than parsing layer names and robust to only-cross-attention blocks.
    """
    originals = dict(model.attn_processors)
    prefixes = None if blocks is None else tuple(_BLOCK_PREFIX[b] for b in blocks)
    new = {}
    for name, proc in originals.items():
        base = proc.base if isinstance(proc, OragAttnProcessor) else proc
        guided = prefixes is None or name.startswith(prefixes)
        if guided or route_all:
            new[name] = OragAttnProcessor(state, base, f"{label}:{name}" if label else name, guided=guided)
        else:
            new[name] = base
    model.set_attn_processor(new)
    return originals


def uninstall(model, originals: dict) -> None:
    model.set_attn_processor(dict(originals))
