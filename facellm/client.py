"""The OpenAI client every HTTP consumer of a facellm (or vLLM, or any OpenAI-compatible) server uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from facellm.errors import FacellmError


def api_base(endpoint: str) -> str:
    """OpenAI clients want the URL that ends in /v1; accept the server's root URL too."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1") else f"{endpoint}/v1"


def json_schema_format(schema: dict, name: str) -> dict:
    """OpenAI's ``response_format`` asking for JSON valid under ``schema`` (vLLM and facellm decode under it)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def openai_client(endpoint: str, api_key: str | None = None, max_retries: int = 3, timeout: float = 120):
    import openai

    return openai.OpenAI(base_url=api_base(endpoint), api_key=api_key or "no-key", max_retries=max_retries,
                         timeout=timeout)


def ask_all(endpoint: str, model: str, items: Sequence, build: Callable[[object], tuple[list[dict], dict]],
            api_key: str | None = None, concurrency: int = 16, max_tokens: int = 32, desc: str = "ask",
            logprobs: bool = False) -> list:
    """Greedy answers, in order, to one chat per item; ``build(item)`` gives its OpenAI messages and any
    extra ``create`` arguments (e.g. ``response_format``). Images are encoded in the worker threads.

    The answers are strings; with ``logprobs``, (text, [(token, logprob, [(alternative, logprob), ...
    the 10 most likely]), ...]) pairs, the list None where the server returned none."""
    import openai

    client = openai_client(endpoint, api_key)

    def ask(item):
        messages, extra = build(item)
        reply = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=max_tokens,
                                               **({"logprobs": True, "top_logprobs": 10} if logprobs else {}),
                                               **extra)
        choice = reply.choices[0]
        if not logprobs:
            return choice.message.content or ""
        tokens = choice.logprobs.content if choice.logprobs and choice.logprobs.content is not None else None
        return choice.message.content or "", None if tokens is None else [
            (t.token, t.logprob, [(a.token, a.logprob) for a in t.top_logprobs or []]) for t in tokens]

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(tqdm(pool.map(ask, items), total=len(items), desc=desc, unit="q"))
    except openai.APIConnectionError:
        raise FacellmError(f"{endpoint}: cannot reach the API; is `facellm serve` running there?") from None
    except openai.APIStatusError as e:
        raise FacellmError(f"{endpoint}: the API answered {e.status_code}: {e.message}") from None
