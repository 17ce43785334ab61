"""Is the model as sure as it is right? Confidence from the answer's token log-probabilities, against hits.

An answer's confidence is the probability the model gave the label it stated (``label_confidence``,
from the server's ``logprobs`` and ``top_logprobs``), not the probability of the whole sentence: a
model that phrases one fact in several equally good ways is unsure of its wording, not of the fact.
Reported: expected calibration error (ECE, equal-width bins, weighted by count), the Brier score, mean
confidence next to accuracy, and the reliability bins a diagram draws.
"""

from __future__ import annotations

import math


def label_confidence(tokens: list[tuple[str, float, list[tuple[str, float]]]], answer: str,
                     reading: tuple[str, tuple[int, int]] | None, words: dict[str, tuple[str, ...]]) -> float:
    """The model's probability for the label it stated. ``tokens``: (token, logprob, top alternatives) per
    answer token; ``reading``: the label and the characters of ``answer`` it was read from
    (``facellm.schema.read_label``); ``words``: label -> the words it is stated with
    (``facellm.schema.label_words``).

    The first token of the span is weighed against the alternatives that would have started another
    label ("Left" against "Right"); alternatives that start the same label ("Smiling" for "Happy") add to
    it, and other phrasings ("The head is ...") do not count, since they lead to the same fact. The span's
    later tokens count with their own probability. Without a reading, or where the tokens do not spell
    the answer (split multi-byte characters), the whole answer's probability."""
    spelled = "".join(token for token, _, _ in tokens)
    offset = spelled.find(answer) if answer else -1
    if reading is None or offset < 0:
        return math.exp(sum(logprob for _, logprob, _ in tokens))
    label, (start, end) = reading
    start, end, position, confidence, first = start + offset, end + offset, 0, 1.0, True
    for token, logprob, alternatives in tokens:
        if position < end and position + len(token) > start:
            chosen = math.exp(logprob)
            if first:
                same = other = 0.0
                for alternative, alternative_logprob in alternatives:
                    if alternative == token:
                        continue
                    started = _labels_started(alternative, words)
                    if label in started:
                        same += math.exp(alternative_logprob)
                    elif started:
                        other += math.exp(alternative_logprob)
                chosen = (chosen + same) / (chosen + same + other)
                first = False
            confidence *= chosen
        position += len(token)
    return confidence


def _labels_started(token: str, words: dict[str, tuple[str, ...]]) -> set[str]:
    """The labels whose words ``token`` begins (or holds whole)."""
    piece = token.strip().lower()
    if len(piece) < 2 and not piece.isdigit():  # "A", "I": too short to tell a label from a phrasing
        return set()
    return {label for label, ws in words.items() if any(w.startswith(piece) or piece.startswith(w) for w in ws)}


def calibration(confidences: list[float], hits: list[bool], bins: int = 10) -> dict:
    """``confidences[i]`` in [0, 1] for the answer whose correctness is ``hits[i]``."""
    if len(confidences) != len(hits) or not hits:
        raise ValueError(f"{len(confidences)} confidences for {len(hits)} answers")
    table = [{"low": b / bins, "high": (b + 1) / bins, "n": 0, "confidence": 0.0, "accuracy": 0.0}
             for b in range(bins)]
    for confidence, hit in zip(confidences, hits):
        row = table[min(int(confidence * bins), bins - 1)]
        row["n"] += 1
        row["confidence"] += confidence
        row["accuracy"] += hit
    for row in table:
        if row["n"]:
            row["confidence"] /= row["n"]
            row["accuracy"] /= row["n"]
    n = len(hits)
    return {"n": n, "ece": sum(row["n"] / n * abs(row["accuracy"] - row["confidence"]) for row in table),
            "brier": sum((c - h) ** 2 for c, h in zip(confidences, hits)) / n,
            "mean_confidence": sum(confidences) / n, "accuracy": sum(hits) / n, "bins": table}


def markdown(results: dict[str, dict]) -> str:
    lines = ["Confidence: the probability the model gave the label it stated, against the other labels it "
             "could have stated at that point (from the server's token logprobs). "
             "ECE: expected calibration error over 10 equal-width bins (0 is perfect); Brier: mean squared "
             "error of confidence against being right.", "",
             "| run | answers | accuracy | mean confidence | ECE | Brier |", "|---|---:|---:|---:|---:|---:|"]
    for run, c in results.items():
        lines.append(f"| {run} | {c['n']} | {c['accuracy']:.1%} | {c['mean_confidence']:.1%} | {c['ece']:.3f} | "
                     f"{c['brier']:.3f} |")
    return "\n".join(lines)
