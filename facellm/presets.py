"""Model presets: randomly initialised VLMs with the shapes of published checkpoints, written offline.

A model's cost (memory, FLOPs, tokens/s) depends on its shapes, not its weights: a randomly initialised
model with the real configuration costs what the real one costs. A real preset is its family's tiny model
(:mod:`facellm.tiny_models`: BPE tokenizer, chat template, processors) given the published shapes: the
config's layer counts, widths, heads, vision tower and vocabulary size, and the processor's image geometry
(tile size, image tokens per image). No hub is reachable here, so the tokenizer stays the tiny one, learnt
on a small corpus: the embedding and LM head have the published vocabulary's rows (the cost), the rows past
the tokenizer's ~1,000 tokens are never used (Qwen's own checkpoints carry a few hundred unused rows too).
Image token counts are the published ones; text tokenises into somewhat more, shorter tokens than with the
real tokenizer. The tiny models are presets too (``tiny-<family>``).

Every number below is from the published checkpoint's ``config.json`` / ``preprocessor_config.json`` on the
Hugging Face Hub (the file is named beside each preset); parameter counts are those the hub's model page
shows (its safetensors count, rounded as shown there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from facellm.errors import FacellmError
from facellm.families import FAMILIES, family


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # transformers model_type of the facellm family it is built as
    hub_id: str | None = None  # the published checkpoint whose shapes it copies (None: a tiny model)
    published_parameters: int | None = None
    # published shapes, each merged over the family's tiny model: the config's text / vision parts and its
    # top level, the image processor's attributes and the processor's own (image tokens per image or tile)
    text: dict = field(default_factory=dict)
    vision: dict = field(default_factory=dict)
    top: dict = field(default_factory=dict)
    image_processor: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)
    dtype: str = "float32"  # the dtype it is written in (real presets: as published)

    @property
    def tiny(self) -> bool:
        return self.hub_id is None


# HuggingFaceTB/SmolVLM-256M-Instruct, config.json (model_type idefics3; written as the smolvlm family, the
# same architecture in transformers, whose tokenizer and chat template "<|im_start|>User:..." it uses) and
# preprocessor_config.json. 256M parameters (hub page).
SMOLVLM_256M = Preset(
    "smolvlm-256m", "smolvlm", "HuggingFaceTB/SmolVLM-256M-Instruct", 256_000_000,
    text=dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
              num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49280,
              max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
    vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                image_size=512, patch_size=16),
    # pixel shuffle 4: (512/16)^2 = 1024 patches -> 64 image tokens per 512x512 tile
    top=dict(scale_factor=4, tie_word_embeddings=False),
    # images are resized to a longest edge of 2048 and split into 512 tiles (4x4 + the whole image: 1,088
    # image tokens for a square image)
    image_processor=dict(do_image_splitting=True, size={"longest_edge": 2048},
                         max_image_size={"longest_edge": 512}),
    processor=dict(image_seq_len=64), dtype="bfloat16",
)

# OpenGVLab/InternVL3-1B-hf, config.json and preprocessor_config.json: InternViT-300M-448px-V2.5 + Qwen2.5-0.5B
# (embeddings not tied in the -hf checkpoint). 938M parameters (hub page; "1B" in the name).
INTERNVL3_1B = Preset(
    "internvl3-1b", "internvl", "OpenGVLab/InternVL3-1B-hf", 938_000_000,
    text=dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
              num_attention_heads=14, num_key_value_heads=2, vocab_size=151674, max_position_embeddings=32768,
              rms_norm_eps=1e-6, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}),
    vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=[448, 448], patch_size=[14, 14], attention_bias=True, norm_type="layer_norm",
                use_qk_norm=False, layer_scale_init_value=0.1),
    # (448/14)^2 = 1024 patches, pixel-shuffled by 0.5 -> 256 image tokens per 448x448 tile
    top=dict(downsample_ratio=0.5, image_seq_length=256, tie_word_embeddings=False),
    # up to 12 tiles (+ a thumbnail when there are several); a square face crop is one tile
    image_processor=dict(size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1, max_patches=12),
    processor=dict(image_seq_length=256), dtype="bfloat16",
)

# Qwen/Qwen2-VL-2B-Instruct, config.json and preprocessor_config.json: 675M vision tower (32 blocks of 1280)
# + Qwen2-1.5B (embeddings tied). 2.21B parameters (hub page).
QWEN2_VL_PIXELS = dict(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}, min_pixels=56 * 56,
                       max_pixels=28 * 28 * 16384)  # 4 to 16,384 image tokens (28x28 pixels each)
QWEN2_VL_2B = Preset(
    "qwen2-vl-2b", "qwen2_vl", "Qwen/Qwen2-VL-2B-Instruct", 2_210_000_000,
    text=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
              num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
              tie_word_embeddings=True,
              rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]}),
    vision=dict(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2),
    top=dict(tie_word_embeddings=True),
    image_processor=QWEN2_VL_PIXELS, dtype="bfloat16",
)

# Qwen/Qwen2.5-VL-3B-Instruct, config.json: windowed-attention tower (32 blocks of 1280, full attention in
# blocks 7/15/23/31) + Qwen2.5-3B (embeddings tied). 3.75B parameters (hub page).
QWEN2_5_VL_3B = Preset(
    "qwen2.5-vl-3b", "qwen2_5_vl", "Qwen/Qwen2.5-VL-3B-Instruct", 3_750_000_000,
    text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
              num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6,
              tie_word_embeddings=True,
              rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]}),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                hidden_act="silu", patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
    top=dict(tie_word_embeddings=True),
    image_processor=QWEN2_VL_PIXELS, dtype="bfloat16",
)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    [Preset(f"tiny-{model_type}", model_type) for model_type in FAMILIES]
    + [SMOLVLM_256M, INTERNVL3_1B, QWEN2_VL_2B, QWEN2_5_VL_3B])}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise FacellmError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def preset_for_model(model: str) -> Preset | None:
    """The real preset copying the shapes of hub id ``model``, if any."""
    return next((p for p in PRESETS.values() if p.hub_id == model), None)


def preset_config(p: Preset, base: dict | None = None):
    """The transformers config of a preset: its published shapes over ``base`` (a tiny model's config as a
    dict: its special token ids; None: the family's defaults, enough to count parameters)."""
    from transformers import AutoConfig

    base = {k: v for k, v in (base or {}).items() if k not in ("model_type", "architectures", "transformers_version")}
    # per-layer lists follow the layer count: the config derives them again for the published one
    text = {k: v for k, v in base.pop("text_config", {}).items() if k != "layer_types"} | p.text
    vision = {k: v for k, v in base.pop("vision_config", {}).items() if k != "layer_types"} | p.vision
    return AutoConfig.for_model(p.family, **{**base, **p.top, "text_config": text, "vision_config": vision})


def meta_model(config):
    """The model of ``config`` on the meta device: shapes and parameter counts, no memory."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def parameter_count(model) -> int:
    """Parameters as the hub counts them: a tied LM head is the embedding, counted once."""
    return sum(p.numel() for p in model.parameters())


def build_preset(p: Preset, out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0,
                 dtype: str | None = None, weights: bool = True) -> Path:
    """Write preset ``p`` into ``out_dir`` in the hub layout (weights, tokenizer, chat template, processors,
    generation config): the family's tiny model, then, for a real preset, the published shapes in place of
    the tiny ones (config and random weights, the processor's image geometry). ``weights=False``: config and
    processors only (what a pre-flight needs), no weights file."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = Path(out_dir)
    family(p.family).build_tiny(out, corpus, seed)
    if p.tiny:
        return out
    config = preset_config(p, json.loads((out / "config.json").read_text()))
    dtype = dtype or p.dtype
    config.dtype = dtype
    (out / "model.safetensors").unlink()  # the tiny weights
    parameters = parameter_count(meta_model(config))
    if weights:
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, dtype))
        model.save_pretrained(out, safe_serialization=True)
        del model
    else:
        config.save_pretrained(out)

    processor = AutoProcessor.from_pretrained(str(out))
    for key, value in p.image_processor.items():
        setattr(processor.image_processor, key, value)
    for key, value in p.processor.items():
        setattr(processor, key, value)
    processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)  # each component's own file too, as save_tiny writes them
    if getattr(processor, "video_processor", None) is not None:
        processor.video_processor.save_pretrained(out)
    tiny = json.loads((out / "facellm_tiny.json").read_text())
    (out / "facellm_tiny.json").unlink()
    (out / "facellm_preset.json").write_text(json.dumps(
        {"preset": p.name, "family": p.family, "copies": p.hub_id, "seed": seed, "parameters": parameters,
         "published_parameters": p.published_parameters, "tokenizer_size": tiny["vocab_size"],
         "vocab_size": config.text_config.vocab_size, "dtype": dtype}, indent=2))
    return out


def memory_needed(p: Preset, dtype: str | None = None) -> int:
    """Bytes of RAM writing preset ``p`` takes at its peak: its weights in ``dtype``, twice (safetensors
    serialises the whole state dict into one buffer before writing it)."""
    import torch

    return 2 * parameter_count(meta_model(preset_config(p))) * torch.finfo(getattr(torch, dtype or p.dtype)).bits // 8


def available_ram() -> int:
    """Bytes of RAM this machine can still give (MemAvailable)."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
