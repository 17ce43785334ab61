"""The OpenAI client every HTTP consumer of a facellm (or vLLM, or any OpenAI-compatible) server uses."""

from __future__ import annotations


def api_base(endpoint: str) -> str:
    """OpenAI clients want the URL that ends in /v1; accept the server's root URL too."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1") else f"{endpoint}/v1"


def openai_client(endpoint: str, api_key: str | None = None, max_retries: int = 3, timeout: float = 120):
    import openai

    return openai.OpenAI(base_url=api_base(endpoint), api_key=api_key or "no-key", max_retries=max_retries,
                         timeout=timeout)
