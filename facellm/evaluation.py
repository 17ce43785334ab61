"""Scoring free-text answers against record labels, per attribute, via the schema normaliser."""

from __future__ import annotations

import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from facellm.errors import FacellmError
from facellm.images import load_image, to_data_url
from facellm.records import text_of
from facellm.schema import ATTRIBUTES, normalize


def question_records(records: list[dict]) -> list[dict]:
    """Records that ask about one schema attribute (descriptions and the like are not scored)."""
    return [r for r in records if r["category"] in ATTRIBUTES and r["category"] in (r.get("labels") or {})]


def prompt_messages(record: dict) -> list[dict]:
    """The record's chat without its final assistant answer: what the model is asked."""
    messages = record["messages"]
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def score(records: list[dict], answers: list[str]) -> dict:
    """Accuracy per attribute; unparseable answers are counted, never dropped.

    Chance is uniform guessing among the classes present in the evaluated records.
    """
    per = defaultdict(lambda: {"n": 0, "correct": 0, "unparseable": 0})
    classes = defaultdict(set)
    samples = []
    for record, answer in zip(records, answers, strict=True):
        attr = record["category"]
        truth = record["labels"][attr]
        predicted = normalize(attr, answer)
        per[attr]["n"] += 1
        per[attr]["correct"] += predicted == truth
        per[attr]["unparseable"] += predicted is None
        classes[attr].add(truth)
        samples.append({"id": record["id"], "attribute": attr, "truth": truth, "predicted": predicted,
                        "answer": answer, "expected_answer": text_of(record["messages"][-1])})
    attributes = {
        a: {**c, "accuracy": c["correct"] / c["n"], "chance": 1 / len(classes[a])} for a, c in sorted(per.items())
    }
    mean = sum(v["accuracy"] for v in attributes.values()) / len(attributes) if attributes else 0.0
    return {"attributes": attributes, "mean_accuracy": mean, "samples": samples}


# ------------------------------------------------------------ via the HTTP API

def to_openai_messages(messages: list[dict], images: list[str], image_root: Path) -> list[dict]:
    """Record-format messages -> OpenAI chat messages, images inlined as data URLs."""
    pending = iter(images)
    out = []
    for m in messages:
        parts = []
        for p in m["content"]:
            if p["type"] == "image":
                url = to_data_url(load_image(next(pending), image_root))
                parts.append({"type": "image_url", "image_url": {"url": url}})
            else:
                parts.append({"type": "text", "text": p["text"]})
        out.append({"role": m["role"], "content": parts})
    return out


def ask_endpoint(endpoint: str, model: str, records: list[dict], image_root: Path, api_key: str | None = None,
                 concurrency: int = 16, max_tokens: int = 32, desc: str = "eval") -> list[str]:
    """Each record's question, asked greedily through an OpenAI-compatible API, answers in order."""
    import openai

    from facellm.client import openai_client

    client = openai_client(endpoint, api_key)

    def ask(record: dict) -> str:
        messages = to_openai_messages(prompt_messages(record), record["images"], image_root)
        reply = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=max_tokens)
        return reply.choices[0].message.content or ""

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(tqdm(pool.map(ask, records), total=len(records), desc=desc, unit="q"))
    except openai.APIConnectionError:
        raise FacellmError(f"{endpoint}: cannot reach the API; is `facellm serve` running there?") from None
    except openai.APIStatusError as e:
        raise FacellmError(f"{endpoint}: the API answered {e.status_code}: {e.message}") from None


def markdown_table(results: dict[str, dict]) -> str:
    """One column per run (e.g. base, tuned): accuracy per attribute next to chance."""
    runs = list(results)
    attrs = sorted({a for r in results.values() for a in r["attributes"]})
    lines = ["| attribute | n | chance | " + " | ".join(runs) + " |", "|---|---:|---:|" + "---:|" * len(runs)]
    for a in attrs:
        first = next(r["attributes"][a] for r in results.values() if a in r["attributes"])
        cells = []
        for run in runs:
            v = results[run]["attributes"].get(a)
            cells.append("—" if v is None else f"{v['accuracy']:.1%}" + (f" ({v['unparseable']} unparseable)" if v["unparseable"] else ""))
        lines.append(f"| {a} | {first['n']} | {first['chance']:.1%} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | | | " + " | ".join(f"**{results[r]['mean_accuracy']:.1%}**" for r in runs) + " |")
    return "\n".join(lines)


def write_report(results: dict[str, dict], out_dir: Path, title: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(results, indent=2))
    md = out_dir / "report.md"
    md.write_text(f"# {title}\n\nAccuracy per attribute on held-out questions (answers mapped to labels by "
                  f"facellm.schema.normalize; unparseable answers count as wrong).\n\n{markdown_table(results)}\n")
    return md
