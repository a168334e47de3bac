"""Tiny random-weight models built in-process (profile `test` and the tests).

They have the real architectures (Qwen2.5-VL, Grounding DINO, SAM) at toy sizes, with tokenizers
and processors built without any download, so every code path of the analysis runs offline in
seconds. Their outputs are meaningless; weights are seeded, so they are reproducible.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from functools import lru_cache

import torch

_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>"]

# A minimal chat template in the Qwen style (the real models ship their own).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@contextmanager
def _seeded(seed: int):
    """Seed model initialisation without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def byte_tokenizer():
    """A byte-level BPE tokenizer with no merges (256 byte tokens + Qwen's special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # Qwen's own tokenizer class around our byte-level model: transformers 4.x processors check
    # the class (a plain PreTrainedTokenizerFast is refused), 5.x accept either.
    from transformers import Qwen2TokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    return Qwen2TokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              additional_special_tokens=_SPECIALS)


def vlm_processor(tokenizer=None, max_pixels: int = 28 * 28 * 16):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = tokenizer or byte_tokenizer()
    ip = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=max_pixels)
    return Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tokenizer,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)


def qwen25vl_config(tokenizer, *, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64,
                    vocab_size=None, vision_depth=2, vision_hidden=32, vision_heads=2,
                    vision_intermediate=64, fullatt=(1,), mrope_section=(1, 1, 2)):
    import transformers
    from transformers import Qwen2_5_VLConfig

    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in _SPECIALS}
    if int(transformers.__version__.split(".")[0]) >= 5:
        rope = dict(rope_parameters={"rope_type": "default", "mrope_section": list(mrope_section),
                                     "rope_theta": 1000000.0})
    else:  # transformers 4.x names
        rope = dict(rope_scaling={"type": "mrope", "mrope_section": list(mrope_section)}, rope_theta=1000000.0)
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
            max_position_embeddings=32768, **rope,
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_intermediate,
                           num_heads=vision_heads, out_hidden_size=hidden, fullatt_block_indexes=list(fullatt),
                           window_size=112),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


@lru_cache(maxsize=1)
def tiny_vlm():
    """(model, processor) of a ~0.1 M-parameter Qwen2.5-VL."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor = vlm_processor()
    with _seeded(0):
        model = Qwen2_5_VLForConditionalGeneration(qwen25vl_config(processor.tokenizer)).eval()
    return model, processor


def bert_tokenizer():
    """A WordPiece tokenizer over letters (every English word splits into known pieces)."""
    from transformers import BertTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-", "'"]
    vocab += list(letters) + ["##" + c for c in letters]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "vocab.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(vocab) + "\n")
        return BertTokenizerFast(vocab_file=path, do_lower_case=True)


def grounding_config(*, swin=None, bert=None, d_model=32, layers=1, dec_layers=2, ffn=32, heads=2,
                     queries=20, points=2, max_text_len=64):
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    swin = swin or SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                              num_heads=[1, 1, 1, 1], window_size=4,
                              out_features=["stage2", "stage3", "stage4"])
    bert = bert or BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=max_text_len)
    return GroundingDinoConfig(backbone_config=swin, text_config=bert, num_queries=queries,
                               encoder_layers=layers, decoder_layers=dec_layers, encoder_ffn_dim=ffn,
                               decoder_ffn_dim=ffn, d_model=d_model, encoder_attention_heads=heads,
                               decoder_attention_heads=heads, encoder_n_points=points,
                               decoder_n_points=points, max_text_len=max_text_len)


@lru_cache(maxsize=1)
def tiny_grounding():
    """(model, processor) of a toy Grounding DINO (Swin + BERT) on 96x144 inputs."""
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

    with _seeded(1):
        model = GroundingDinoForObjectDetection(grounding_config()).eval()
    # At least 96 px: at 64 px a square input made the extra feature level 1x1, which GroupNorm
    # refuses for a batch of one query (every square photo failed under profile `test`).
    ip = GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 144})
    return model, GroundingDinoProcessor(image_processor=ip, tokenizer=bert_tokenizer())


def sam_config(*, hidden=32, layers=2, heads=2, mlp=64, out_channels=32, image_size=64, patch=8,
               window=4, global_attn=(1,), dec_hidden=32, dec_layers=2):
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vc = SamVisionConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         mlp_dim=mlp, output_channels=out_channels, image_size=image_size,
                         patch_size=patch, window_size=window, global_attn_indexes=list(global_attn),
                         num_pos_feats=out_channels // 2)
    pc = SamPromptEncoderConfig(hidden_size=out_channels, image_size=image_size, patch_size=patch)
    mc = SamMaskDecoderConfig(hidden_size=dec_hidden, num_hidden_layers=dec_layers, num_attention_heads=2,
                              mlp_dim=2 * dec_hidden, iou_head_hidden_dim=dec_hidden)
    return SamConfig(vision_config=vc, prompt_encoder_config=pc, mask_decoder_config=mc)


@lru_cache(maxsize=1)
def tiny_sam():
    """(model, processor) of a toy SAM on 64x64 inputs."""
    from transformers import SamImageProcessor, SamModel, SamProcessor

    with _seeded(2):
        model = SamModel(sam_config()).eval()
    ip = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                           mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    return model, SamProcessor(image_processor=ip)


@lru_cache(maxsize=1)
def tiny_sam2():
    """(model, processor) of a toy SAM 2 (Hiera backbone) on 128x128 inputs."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model, Sam2Processor

    try:
        from transformers import Sam2ImageProcessor
    except ImportError:  # transformers 4.x has only the fast one
        from transformers import Sam2ImageProcessorFast as Sam2ImageProcessor

    # A global-attention block must not open a stage (stage openers pool their queries by the
    # window size, which global blocks set to 0).
    hiera = Sam2HieraDetConfig(hidden_size=8, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                               num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                               global_attention_blocks=[3], image_size=[128, 128])
    cfg = Sam2Config(
        vision_config=dict(backbone_config=hiera, backbone_channel_list=[64, 32, 16, 8],
                           backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32),
        prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32))
    with _seeded(3):
        model = Sam2Model(cfg).eval()
    return model, Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": 128, "width": 128}))
