"""The OpenAI client every HTTP consumer of a facellm (or vLLM, or any OpenAI-compatible) server uses, and
the structured-record request the captioner and the chat UI send."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import closing

from tqdm import tqdm

from facellm.errors import FacellmError
from facellm.inflight import bounded_map

ATTRIBUTE_PROMPT = "Describe this person's face. Answer with the JSON attribute record."


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

    answers: list = [None] * len(items)
    try:
        with closing(bounded_map(lambda job: ask(job[1]), enumerate(items), concurrency, name="ask")) as replies:
            for (i, _), answer in tqdm(replies, total=len(items), desc=desc, unit="q"):
                if isinstance(answer, Exception):
                    raise answer  # the first failure ends the run; the questions not yet sent are dropped
                answers[i] = answer
    except openai.APIConnectionError:
        raise FacellmError(f"{endpoint}: cannot reach the API; is `facellm serve` running there?") from None
    except openai.APIStatusError as e:
        raise FacellmError(f"{endpoint}: the API answered {e.status_code}: {e.message}") from None
    return answers


class AnswerError(FacellmError):
    """A reply that is not the JSON record asked for; ``cut_short``: the server stopped it at max_tokens."""

    def __init__(self, message: str, cut_short: bool = False):
        super().__init__(message)
        self.cut_short = cut_short


class RecordRequest:
    """Ask for one JSON record about an image, decoded under ``schema`` (None: free text), and read it.

    The attribute record of the captioner and of the chat UI's Attributes button: one user turn (the
    image, then ``prompt``), greedy, ``response_format`` = the schema, and the answer validated again
    here, since not every server enforces the schema.
    """

    def __init__(self, schema: dict | None, prompt: str = ATTRIBUTE_PROMPT, max_tokens: int = 256):
        import jsonschema

        self.schema, self.prompt, self.max_tokens = schema, prompt, max_tokens
        self.validator = jsonschema.validators.validator_for(schema)(schema) if schema else None

    def arguments(self, image_url: str) -> dict:
        """``chat.completions.create`` arguments (all but ``model``) for the image at ``image_url`` (a data
        URL)."""
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                                 {"type": "text", "text": self.prompt}]}]
        extra = {"response_format": json_schema_format(self.schema, "face")} if self.schema else {}
        return {"messages": messages, "temperature": 0, "max_tokens": self.max_tokens, **extra}

    def read(self, reply) -> dict:
        """The record in a chat completion; AnswerError saying why when it is not JSON or, with a schema,
        does not match it."""
        choice = reply.choices[0]
        return self.read_text(choice.message.content or "", choice.finish_reason == "length")

    def read_text(self, text: str, cut_short: bool = False) -> dict:
        """The record in an answer's text (``cut_short``: max_tokens ended it), as :meth:`read`."""
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            raise AnswerError(f"answer is not JSON{' (max_tokens reached: raise --max-tokens)' if cut_short else ''}: "
                              f"{text[:200]!r}", cut_short) from None
        if self.validator is not None and (problems := [e.message for e in self.validator.iter_errors(record)]):
            raise AnswerError(f"answer does not match the schema: {'; '.join(problems)}")
        return record
