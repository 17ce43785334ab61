"""`facellm eval` (a served model on attribute questions or FaceXBench) and `facellm eval-compare`."""

from __future__ import annotations

from pathlib import Path

from facellm.cli.args import add_api_key_arg, existing_dir, output_dir
from facellm.errors import FacellmError


def add_parser(sub) -> None:
    _add_eval_parser(sub)
    p = sub.add_parser("eval-compare", help="two or more `facellm eval` reports side by side (also: eval compare)",
                       description="Merge attribute reports written by `facellm eval --data ... --out DIR` into one "
                                   "report (tables, fairness, counterfactual and identity sections, plots).")
    p.add_argument("runs", nargs="+", type=existing_dir, metavar="RUN_DIR", help="report folders")
    p.add_argument("--out", required=True, type=output_dir, help="folder of the combined report")
    p.set_defaults(func=cmd_eval_compare)


def _add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model behind an OpenAI-compatible API: attributes, fairness, FaceXBench",
                       description="Attribute questions of a facellm dataset split (--data: accuracy per attribute, "
                                   "per race/gender/age/skin-tone group with bootstrap CIs, gaps, age within one "
                                   "bin and MAE, calibration) or a FaceXBench-format multiple-choice benchmark "
                                   "(--facexbench: accuracy per category, sub-category and image count next to "
                                   "chance and published figures), asked through the API; writes report.json, "
                                   "report.md, report.html and PNGs.")
    p.epilog = "Side by side: facellm eval compare RUN_DIR RUN_DIR... --out DIR"
    p.add_argument("--endpoint", required=True, help="API base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="served model name (base or adapter name)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=existing_dir, help="facellm dataset directory")
    source.add_argument("--facexbench", help="a FaceXBench task JSON, or its benchmark/ folder (all tasks)")
    p.add_argument("--counterfactual", type=int, nargs="?", const=20, metavar="FACES",
                   help="add the counterfactual probe: FACES synthetic faces (default 20), each re-rendered with one "
                        "attribute changed at a time; reports how often answers about the other attributes flip")
    p.add_argument("--identity-probe", action="store_true",
                   help="add the identity probe: held-out 'who is this?' questions must be declined while the same "
                        "conversation still answers an attribute question (first 200 questions)")
    p.add_argument("--no-logprobs", action="store_true",
                   help="do not ask for token logprobs (for servers that refuse them); the report then has no "
                        "calibration section (confidence vs accuracy, ECE, Brier, reliability diagram)")
    p.add_argument("--prepend-text", action="store_true", help="FaceXBench: include each task's prepend_text")
    p.add_argument("--constrained", action="store_true",
                   help="FaceXBench: decode answers under a one-letter JSON schema (every answer a letter)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, type=output_dir, help="report directory (report.json, report.md)")
    p.add_argument("--limit", type=int, help="ask only the first N questions")
    p.add_argument("--concurrency", type=int, default=16, help="questions in flight at once")
    add_api_key_arg(p, "bearer key the API expects")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> None:
    report = _facexbench(args) if args.facexbench else _attributes(args)
    print(report.read_text())
    print(f"report: {report} (also report.html, report.json and the PNGs beside it)")


def _facexbench(args) -> Path:
    from facellm.eval import facexbench

    questions = facexbench.load_benchmark(args.facexbench, prepend=args.prepend_text)[: args.limit]
    answers = facexbench.ask_mcq(args.endpoint, args.model, questions, args.api_key, args.concurrency,
                                 constrained=args.constrained)
    return facexbench.write_facexbench_report(Path(args.out), args.model, args.facexbench,
                                              facexbench.score_mcq(questions, answers))


def _attributes(args) -> Path:
    from facellm.eval.attributes import evaluate_attributes, question_records, write_attribute_report
    from facellm.records import load_split

    records = question_records(load_split(args.data, args.split))[: args.limit]
    if not records:
        raise FacellmError(f"{args.data}: no attribute questions in split {args.split!r}")
    result = evaluate_attributes(args.endpoint, args.model, records, Path(args.data), args.api_key,
                                 args.concurrency, logprobs=not args.no_logprobs)
    if args.counterfactual:
        from data_pipeline.counterfactual_faces import build_counterfactuals
        from facellm.eval.attributes import counterfactual_probe

        probe = build_counterfactuals(Path(args.out) / "counterfactual", faces=args.counterfactual)
        result["counterfactual"] = counterfactual_probe(args.endpoint, args.model, probe, args.api_key,
                                                        args.concurrency)
    if args.identity_probe:
        from facellm.eval.attributes import identity_section

        result["identity"] = identity_section(args.endpoint, args.model, records, Path(args.data), result,
                                              args.api_key)
    return write_attribute_report({args.model: result}, Path(args.out),
                                  f"facellm eval: {args.model} on {args.data} ({args.split})")


def cmd_eval_compare(args) -> None:
    from facellm.eval.attributes import compare_reports

    report = compare_reports([Path(d) for d in args.runs], Path(args.out))
    print(report.read_text())
    print(f"report: {report}")
