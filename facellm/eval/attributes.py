"""Scoring free-text answers against record labels, per attribute, via the schema normaliser."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from facellm.eval.calibration import calibration, label_confidence
from facellm.client import ask_all
from facellm.errors import FacellmError
from facellm.eval.fairness import GROUP_ATTRIBUTES, per_group
from facellm.images import load_image, to_data_url
from facellm.eval.stats import wilson
from facellm.records import text_of
from facellm.schema import ATTRIBUTES, age_bins_apart, age_in_years, label_words, read_label


def question_records(records: list[dict]) -> list[dict]:
    """Records that ask about one schema attribute (descriptions and the like are not scored)."""
    return [r for r in records if r["category"] in ATTRIBUTES and r["category"] in (r.get("labels") or {})]


def prompt_messages(record: dict) -> list[dict]:
    """The record's chat without its final assistant answer: what the model is asked."""
    messages = record["messages"]
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def score(records: list[dict], answers: list[str],
          logprobs: list[list[tuple[str, float, list]] | None] | None = None) -> dict:
    """Accuracy per attribute; unparseable answers are counted, never dropped.

    Chance is uniform guessing among the classes present in the evaluated records. With ``logprobs``
    (each answer's (token, log-probability, alternatives), None where the server gave none), also the calibration
    of the model's confidence in the label it states (``facellm.eval.calibration``).
    """
    per = defaultdict(lambda: {"n": 0, "correct": 0, "unparseable": 0})
    classes = defaultdict(set)
    samples = []
    words = {a: label_words(a) for a in {r["category"] for r in records}} if logprobs else {}  # once per attribute
    for record, answer, tokens in zip(records, answers, logprobs or [None] * len(records), strict=True):
        attr = record["category"]
        truth = record["labels"][attr]
        reading = read_label(attr, answer)
        predicted = reading[0] if reading else None
        per[attr]["n"] += 1
        per[attr]["correct"] += predicted == truth
        per[attr]["unparseable"] += predicted is None
        classes[attr].add(truth)
        samples.append({"id": record["id"], "attribute": attr, "truth": truth, "predicted": predicted,
                        "answer": answer, "expected_answer": text_of(record["messages"][-1]),
                        "groups": {g: record["labels"][g] for g in GROUP_ATTRIBUTES if g in record["labels"]},
                        **({"age_years": (record.get("face") or {}).get("age_years")} if attr == "age" else {}),
                        **({"confidence": label_confidence(tokens, answer, reading, words[attr])}
                           if tokens else {})})
    attributes = {
        a: {**c, "accuracy": c["correct"] / c["n"], "chance": 1 / len(classes[a])} for a, c in sorted(per.items())
    }
    for a, v in attributes.items():
        v["ci95"] = list(wilson(v["correct"], v["n"]))
        v["confusion"] = defaultdict(lambda: defaultdict(int))
    for sample in samples:  # truth -> predicted counts, unreadable answers as "unparseable"
        attributes[sample["attribute"]]["confusion"][sample["truth"]][sample["predicted"] or "unparseable"] += 1
    for v in attributes.values():
        v["confusion"] = {truth: dict(row) for truth, row in sorted(v["confusion"].items())}
    if "age" in attributes:
        attributes["age"].update(age_errors([s for s in samples if s["attribute"] == "age"]))
    mean = sum(v["accuracy"] for v in attributes.values()) / len(attributes) if attributes else 0.0
    result = {"attributes": attributes, "mean_accuracy": mean, "fairness": per_group(samples), "samples": samples}
    if scored := [s for s in samples if "confidence" in s]:
        result["calibration"] = calibration([s["confidence"] for s in scored],
                                            [s["predicted"] == s["truth"] for s in scored])
    return result


def age_errors(samples: list[dict]) -> dict:
    """Age beyond bin accuracy: the share within one FairFace bin of the truth and, where the source
    records exact ages (UTKFace), the mean absolute error in years of the age the answer states.
    Unparseable answers count as wrong within one bin and are left out of the MAE (``mae_n`` says how many
    answers it covers)."""
    within = [s["predicted"] is not None and age_bins_apart(s["predicted"], s["truth"]) <= 1 for s in samples]
    errors = [abs(said - s["age_years"]) for s in samples
              if s.get("age_years") is not None and (said := age_in_years(s["answer"])) is not None]
    return {"within_one_bin": sum(within) / len(within),
            **({"mae_years": sum(errors) / len(errors), "mae_n": len(errors)} if errors else {})}


def age_markdown(results: dict[str, dict]) -> str:
    lines = ["| run | age bin accuracy | within one bin | MAE, years (answers with an exact age) |",
             "|---|---:|---:|---:|"]
    for run, r in results.items():
        age = r["attributes"]["age"]
        mae = f"{age['mae_years']:.1f} ({age['mae_n']})" if "mae_years" in age else "— (no exact ages)"
        lines.append(f"| {run} | {age['accuracy']:.1%} | {age['within_one_bin']:.1%} | {mae} |")
    return "\n".join(lines)


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
                 concurrency: int = 16, max_tokens: int = 32, desc: str = "eval", logprobs: bool = False) -> list:
    """Each record's question, asked greedily through an OpenAI-compatible API, answers in order
    (with ``logprobs``: (text, token logprobs) pairs, see ``facellm.client.ask_all``)."""
    def build(record: dict) -> tuple[list[dict], dict]:
        return to_openai_messages(prompt_messages(record), record["images"], image_root), {}

    return ask_all(endpoint, model, records, build, api_key, concurrency, max_tokens, desc, logprobs)


def evaluate_attributes(endpoint: str, model: str, records: list[dict], image_root: Path, api_key: str | None = None,
                        concurrency: int = 16, logprobs: bool = True) -> dict:
    """score() of the model's answers to ``records``, with calibration unless ``logprobs`` is off
    (for servers that do not return them)."""
    replies = ask_endpoint(endpoint, model, records, image_root, api_key, concurrency, desc=f"eval {model}",
                           logprobs=logprobs)
    if not logprobs:
        return score(records, replies)
    return score(records, [text for text, _ in replies], [tokens for _, tokens in replies])


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


def write_attribute_report(results: dict[str, dict], out_dir: Path, title: str) -> Path:
    """The attribute report of one or more runs (e.g. base and tuned): tables, per-group fairness, plots."""
    from facellm.eval import counterfactual, fairness, identity
    from facellm.eval.calibration import markdown as calibration_markdown
    from facellm.eval.report import bar_plot, confusion_plot, reliability_plot, write_report_files

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [bar_plot(out_dir / "accuracy_per_attribute.png",
                      {run: {a: (v["accuracy"], tuple(v["ci95"])) for a, v in r["attributes"].items()}
                       for run, r in results.items()},
                      "Accuracy per attribute (95 % Wilson CI)",
                      chance={a: v["chance"] for r in results.values() for a, v in r["attributes"].items()})]
    sections = [("Accuracy per attribute", "Held-out questions; answers mapped to labels by "
                 "facellm.schema.normalize; unparseable answers count as wrong.\n\n" + markdown_table(results))]
    if aged := {run: r for run, r in results.items() if "age" in r["attributes"]}:
        sections.append(("Age", "Bins are FairFace's; an answer's age in years is its number, its range's middle "
                         "or its bin's middle.\n\n" + age_markdown(aged)))
    plots += [confusion_plot(out_dir / f"confusion_{run}.png", {a: v["confusion"] for a, v in r["attributes"].items()},
                             f"{run}: confusion per attribute (rows: truth)") for run, r in results.items()]
    if calibrated := {run: r["calibration"] for run, r in results.items() if "calibration" in r}:
        sections.append(("Calibration", calibration_markdown(calibrated)))
        plots.append(reliability_plot(out_dir / "calibration.png", calibrated, "Reliability: accuracy against confidence"))
    probed = {run: r["counterfactual"] for run, r in results.items() if "counterfactual" in r}
    if probed:
        sections.append(("Counterfactual probe", counterfactual.markdown(probed)))
        plots.append(bar_plot(out_dir / "counterfactual_flips.png",
                              {run: {a: (v["flip_rate"], None) for a, v in c.items()} for run, c in probed.items()},
                              "Answers about other attributes that flip when one attribute changes",
                              ylabel="answers flipped (%)"))
    asked = {run: r["identity"] for run, r in results.items() if "identity" in r}
    if asked:
        sections.append(("Identity probe", identity.markdown(
            asked, {run: r["plain_attribute_accuracy"] for run, r in asked.items()})))
    for run, r in results.items():
        sections.append((f"Fairness: {run}", fairness.markdown(r["fairness"])))
        for attribute, f in r["fairness"].items():
            plots.append(bar_plot(out_dir / f"groups_{run}_{attribute}.png",
                                  {run: {g: (v["accuracy"], tuple(v["ci95"])) for g, v in f["groups"].items()}},
                                  f"{run}: accuracy per {attribute} group (bootstrap 95 % CI)"))
    return write_report_files(out_dir, title, sections, results, plots)


def counterfactual_probe(endpoint: str, model: str, records_file: Path, api_key: str | None = None,
                         concurrency: int = 16) -> dict:
    """The counterfactual records (``data_pipeline.counterfactual_faces``) asked through the API and analysed."""
    import json

    from facellm.eval.counterfactual import analyze

    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    answers = ask_endpoint(endpoint, model, records, records_file.parent, api_key, concurrency,
                           desc=f"counterfactual {model}")
    return analyze(records, answers)


def identity_section(endpoint: str, model: str, records: list[dict], image_root: Path, result: dict,
                     api_key: str | None = None, limit: int = 200) -> dict:
    """The identity probe on the first ``limit`` attribute questions, with the plain accuracy on the same ones
    (from ``result``, the score() of those records) beside it."""
    from facellm.eval.identity import identity_probe

    probe = identity_probe(endpoint, model, records[:limit], image_root, api_key)
    plain = [s["predicted"] == s["truth"] for s in result["samples"][:limit]]
    return {**probe, "plain_attribute_accuracy": sum(plain) / len(plain)}


def compare_reports(run_dirs: list[Path], out_dir: Path) -> Path:
    """Two or more attribute reports (``facellm eval --data`` outputs) side by side in one report."""
    import json

    merged = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "report.json"
        if not path.is_file():
            raise FacellmError(f"{run_dir}: no report.json (pass folders written by `facellm eval --out`)")
        for name, result in json.loads(path.read_text()).items():
            if "attributes" not in result:
                raise FacellmError(f"{path}: {name} is not an attribute report (FaceXBench reports compare by eye)")
            merged[f"{Path(run_dir).name}: {name}" if len(run_dirs) > 1 else name] = result
    return write_attribute_report(merged, out_dir, "facellm eval compare: " + " vs ".join(str(d) for d in run_dirs))
