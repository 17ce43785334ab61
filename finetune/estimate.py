"""Predicted peak memory of a training run, before it starts (``facellm train RECIPE --estimate``).

peak = the process + the step's inputs + weights + gradients and AdamW states of what trains + activations of
the longest batch (+ its logits).

- the process: what a training run holds beyond its model (libraries it loads, processor, batches, allocator
  pools): 0.45 GiB, the peak RSS growth of training the tiny preset on CPU (benchmarks/sizes.py), where the
  model itself is ~25 MiB; on a GPU the CUDA context takes about as much;
- the inputs: the micro-batch training and those the loader has collated ahead (PyTorch's 2 per
  ``dataloader_workers``), each as large as the largest chat collated once times the chats it holds
  (SmolVLM: 53 MB of pixels a face); ``grad_accum`` does not add to them: one micro-batch is held at a time;

- weights: every parameter in fp32 (``load_model`` loads fp32; bf16/fp16 autocast keeps fp32 weights), the
  language model's linear layers in 4 bits under QLoRA (NF4 + double-quantised scales: ~0.53 bytes each);
- gradients 4 bytes and AdamW's two moments 8 bytes per trained parameter, counted on the model built on the
  meta device with the recipe's method applied (the same ``apply_method`` the run calls: no memory);
- activations, per token of the longest micro-batch (its chats padded to the longest, from the pre-flight)
  and per decoder layer: 10 h + 4 i elements (h hidden width, i MLP width) saved for backward, plus each
  LoRA-adapted projection's dropped-out input when LoRA dropout is on (6 h + i with all seven projections).
  Counted with saved-tensor hooks on transformers 5.19's Llama/Qwen2 layers at the 256M, 1B and 2B shapes
  (within 1 % of each); 4 bytes each in fp32, 2 under bf16/fp16 autocast. With gradient checkpointing a
  layer keeps only its input (h) and one layer's activations live again during its backward. A vision tower
  that trains adds the same per patch with its own widths; a frozen one keeps nothing for backward;
- the attention mask: with padded chats, SDPA turns the boolean mask into a float one in every layer and keeps
  it for backward: chats x longest^2 elements a layer (one layer's with checkpointing);
- logits: three tokens x vocabulary fp32 tensors at once (logits, log-softmax, their gradient), whatever the
  precision (the loss upcasts).

That is the peak of live tensors, which is what a GPU's allocator holds and, on CPU, what the process holds
once ``facellm train`` has glibc hand freed blocks back (facellm/host_memory.py; without that the process
kept 5 GB of freed pages at 256M). benchmarks/sizes.py measures how close this comes at each size
(benchmarks/RESULTS.md). Not counted: a frozen vision tower's forward, transient and on the way to the
language model's larger peak in every run measured.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from facellm.errors import FacellmError
from facellm.families import Family
from finetune.config import TrainConfig

GiB = 2 ** 30
ACTIVATION_BYTES = {"no": 4, "bf16": 2, "fp16": 2}
QLORA_BYTES = 0.53  # NF4 weight (0.5) + double-quantised block scales
LOGIT_COPIES = 3
PROCESS_BYTES = 0.45 * GiB  # see the module docstring
LOADER_PREFETCH = 2  # torch DataLoader's prefetch_factor: batches each worker collates ahead


@dataclass
class Estimate:
    parameters: int
    trainable: int
    weights: float  # bytes
    gradients: float
    optimizer: float
    tokens: int  # tokens in the longest micro-batch (padded)
    activations: dict  # {(precision, gradient checkpointing): bytes}, logits included
    logits: dict  # {precision: bytes}
    inputs: float = 0.0  # collated micro-batches in memory at once (held_micro_batches)

    def peak(self, precision: str, checkpointing: bool) -> float:
        return (PROCESS_BYTES + self.inputs + self.weights + self.gradients + self.optimizer
                + self.activations[precision, checkpointing])


def model_config(model: str):
    """The transformers config of a local model directory, or of the preset copying hub id ``model``."""
    from transformers import AutoConfig

    from facellm.presets import preset_config, preset_for_model

    if Path(model).is_dir():
        return AutoConfig.from_pretrained(model, trust_remote_code=False)
    copy = preset_for_model(model)
    if copy is None:
        raise FacellmError(f"{model}: not a local model directory, and no preset copies its shapes "
                           "(facellm init-model --list); download it or pass --model DIR")
    return preset_config(copy)


def parameter_counts(config, cfg: TrainConfig, fam: Family) -> tuple[int, int, int]:
    """(all parameters, trained parameters, parameters QLoRA stores in 4 bits), on the meta device."""
    from facellm.presets import meta_model, parameter_count
    from finetune.method import apply_method

    model = meta_model(config)
    total = parameter_count(model)
    quantized = 0
    if cfg.method == "qlora":  # bitsandbytes quantises the language model's linear layers
        import torch

        quantized = sum(m.weight.numel() for name, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and name.startswith(fam.language_model + "."))
        cfg = TrainConfig(**{**cfg.__dict__, "method": "lora"})  # same adapter; apply_method's qlora path needs CUDA
    trained = apply_method(model, cfg, fam)
    return total, sum(p.numel() for p in trained.parameters() if p.requires_grad), quantized


def _layer_elements(hidden: int, mlp: int, lora_inputs: int) -> int:
    """Elements one decoder (or vision) layer saves for backward, per token."""
    return 10 * hidden + 4 * mlp + lora_inputs


def _lora_dropout_inputs(cfg: TrainConfig, hidden: int, mlp: int) -> int:
    if cfg.method == "full" or not cfg.lora.dropout:
        return 0
    return sum(mlp if name == "down_proj" else hidden for name in cfg.lora.projections)


def _vision_widths(vision) -> tuple[int, int, int]:
    """(width, MLP width, layers) of a vision tower config, whichever names its family uses."""
    width = getattr(vision, "embed_dim", None) or vision.hidden_size
    mlp = getattr(vision, "intermediate_size", None) or width * getattr(vision, "mlp_ratio", 4)
    layers = getattr(vision, "depth", None) or vision.num_hidden_layers
    return width, mlp, layers


def patches_per_image_token(config) -> int:
    """Vision-tower tokens behind each image token of the language model (merge, pixel shuffle)."""
    if merge := getattr(config.vision_config, "spatial_merge_size", None):
        return merge ** 2
    if ratio := getattr(config, "downsample_ratio", None):
        return round(1 / ratio ** 2)
    return getattr(config, "scale_factor", 1) ** 2


def activation_bytes(config, cfg: TrainConfig, chats: int, longest: int, image_tokens: int, precision: str,
                     checkpointing: bool) -> float:
    """Activations saved for backward over a micro-batch of ``chats`` padded to ``longest`` tokens, logits
    included."""
    tokens = chats * longest
    text = config.text_config
    per_element = ACTIVATION_BYTES[precision]
    layer = _layer_elements(text.hidden_size, text.intermediate_size,
                            _lora_dropout_inputs(cfg, text.hidden_size, text.intermediate_size))
    layers = text.num_hidden_layers
    kept = (layers * text.hidden_size + layer) if checkpointing else layers * layer
    elements = tokens * kept
    if chats > 1:  # padding: SDPA turns the mask into a float one per layer, saved for backward
        elements += (1 if checkpointing else layers) * chats * longest ** 2
    if cfg.train_vision_tower:  # trained in full under every method (LoRA: as modules_to_save)
        width, mlp, depth = _vision_widths(config.vision_config)
        patches = image_tokens * patches_per_image_token(config)
        vision_layer = _layer_elements(width, mlp, 0)
        elements += patches * ((depth * width + vision_layer) if checkpointing else depth * vision_layer)
    return elements * per_element + logit_bytes(config, tokens)


def logit_bytes(config, tokens: int) -> float:
    return LOGIT_COPIES * tokens * config.text_config.vocab_size * 4


def estimate(config, cfg: TrainConfig, fam: Family, chats: int, longest: int, image_tokens: int,
             input_bytes: float = 0.0) -> Estimate:
    """The memory of training ``config`` under recipe ``cfg`` on micro-batches of ``chats`` chats padded to
    ``longest`` tokens (``image_tokens`` of them image tokens in all; ``input_bytes`` the largest collated
    micro-batch), for every precision, with and without checkpointing."""
    total, trainable, quantized = parameter_counts(config, cfg, fam)
    weights = (total - quantized) * 4 + quantized * QLORA_BYTES
    tokens = chats * longest
    activations = {(precision, checkpointing): activation_bytes(config, cfg, chats, longest, image_tokens,
                                                                precision, checkpointing)
                   for precision in ACTIVATION_BYTES for checkpointing in (False, True)}
    logits = {precision: logit_bytes(config, tokens) for precision in ACTIVATION_BYTES}
    return Estimate(total, trainable, weights, 4 * trainable, 8 * trainable, tokens, activations, logits,
                    held_micro_batches(cfg) * input_bytes)


def held_micro_batches(cfg: TrainConfig) -> int:
    """Micro-batches in memory at once: the one training and the loader's prefetch (2 per worker process)."""
    return 1 + LOADER_PREFETCH * cfg.dataloader_workers


def memory_seen() -> list[tuple[str, float]]:
    """(device, bytes free) for each GPU, or this machine's available RAM where there is none."""
    import torch

    if torch.cuda.is_available():
        return [(f"cuda:{i} {torch.cuda.get_device_name(i)}", torch.cuda.mem_get_info(i)[0])
                for i in range(torch.cuda.device_count())]
    from facellm.presets import available_ram

    return [("CPU RAM (available)", available_ram())]


def processes() -> int:
    """Processes the batch is split over (torchrun / accelerate launch set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def micro_batch_chats(cfg: TrainConfig) -> int:
    """Chats of a micro-batch one process holds: its share of the batch."""
    return math.ceil(cfg.batch_size / processes())


def report(est: Estimate, cfg: TrainConfig, seen: list[tuple[str, float]]) -> str:
    """The estimate as a table: one row per precision x checkpointing; the recipe's own row marked, and
    whether it fits each device's free memory."""
    gib = lambda b: f"{b / GiB:.2f}"  # noqa: E731
    held = held_micro_batches(cfg)
    lines = [f"parameters {est.parameters:,} ({est.trainable:,} trained, method {cfg.method}); longest micro-batch "
             f"{est.tokens:,} tokens ({micro_batch_chats(cfg)} chats padded to the longest)",
             f"weights {gib(est.weights)} GiB, gradients {gib(est.gradients)} GiB, AdamW states "
             f"{gib(est.optimizer)} GiB, {held} collated micro-batch{'es' if held > 1 else ''} {gib(est.inputs)} GiB, "
             f"the process {gib(PROCESS_BYTES)} GiB",
             "| precision | gradient checkpointing | activations GiB (logits) | peak GiB | |",
             "|---|---|---:|---:|---|"]
    for (precision, checkpointing), act in est.activations.items():
        mine = precision == cfg.mixed_precision and checkpointing == cfg.gradient_checkpointing
        lines.append(f"| {precision} | {'yes' if checkpointing else 'no'} | {gib(act)} ({gib(est.logits[precision])}) "
                     f"| {gib(est.peak(precision, checkpointing))} | {'<- this recipe' if mine else ''} |")
    peak = est.peak(cfg.mixed_precision, cfg.gradient_checkpointing)
    for device, free in seen:
        verdict = "fits" if peak <= free else "does NOT fit"
        lines.append(f"{device}: {gib(free)} GiB free: this recipe's {gib(peak)} GiB {verdict}")
    return "\n".join(lines)


def estimate_recipe(cfg: TrainConfig) -> Estimate:
    """The recipe's data measured by the training pre-flight (every chat in tokens, images included), its
    largest micro-batch collated once, and the model's shapes from its config (a hub id: the preset copying
    it, with that preset's processor). Nothing is loaded but the processor."""
    import random
    import tempfile

    import torch

    from facellm.modeling import load_processor, model_family
    from facellm.presets import build_preset, preset_for_model
    from finetune.batches import preflight
    from finetune.chat_data import read_chats
    from finetune.collator import ChatCollator, group_by_image

    source = read_chats(cfg.data, cfg.image_folder, cfg.data_name)
    if source.rejects:  # a training run skips these rows; an estimate that skipped them would be of other data
        first = source.rejects[0]
        raise FacellmError(f"{cfg.data}: {len(source.rejects)} of {source.rows} rows cannot train (first: "
                           f"{first['file']} row {first['index']}: {first['reason']}); fix or drop them, or train "
                           "without --estimate to skip them into OUTPUT/data_rejects.jsonl")
    chats = group_by_image(source.train, random.Random(cfg.seed)) if cfg.group_by_image else source.train
    config = model_config(cfg.model)
    per_chat = micro_batch_chats(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = cfg.model
        if not Path(model_dir).is_dir():  # model_config found the preset: its processor, without weights
            model_dir = build_preset(preset_for_model(cfg.model), tmp, weights=False)
        fam = model_family(model_dir)
        collator = ChatCollator(load_processor(model_dir, cfg.min_pixels, cfg.max_pixels), source.image_root,
                                family=fam)
        pre = preflight(chats, collator, source.image_root)
        longest_chat = chats[pre.lengths.index(pre.longest())]  # the most image tokens, as a rule
        one_chat = sum(v.nbytes for v in collator([longest_chat]).values() if isinstance(v, torch.Tensor))
    longest_images = max(len(chat["images"]) for chat in chats) * max(pre.image_tokens.values(), default=0)
    return estimate(config, cfg, fam, per_chat, pre.longest(), per_chat * longest_images, per_chat * one_chat)


def estimate_run(cfg: TrainConfig) -> str:
    """``facellm train RECIPE --estimate``: the estimate of the recipe's run as a report."""
    return report(estimate_recipe(cfg), cfg, memory_seen())
