"""`facellm data build|inspect|export|leakage`: face QA datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_pipeline.config import FLAGS, DataBuildConfig
from data_pipeline.sources import ALIGNED_MODES, SOURCES
from facellm.cli.args import existing_dir, output_dir
from facellm.errors import FacellmError

BUILD_DESCRIPTION = (
    "Write DIR/dataset (datasets.DatasetDict, images embedded), DIR/parquet, DIR/sharegpt (+ LLaMA-Factory's "
    "DIR/dataset_info.json), "
    "DIR/llava, DIR/images, DIR/rejects.jsonl, DIR/manifest.json and the dataset card DIR/README.md. Every answer "
    "is checked against the labels and cues; contradictions and identity claims go to rejects.jsonl with the "
    "reason. Resumable: run it again after a crash.")
BUILD_EPILOG = (
    "Settings can also come from a YAML config file in sections, as every build writes its resolved settings "
    "to DIR/build_config.yaml (e.g. `source: fairface`, `root: data/fairface`, `teacher: {url: ..., model: ...}`, "
    "`synthetic: {n: 5000}`; see data_pipeline/configs/). Precedence: defaults < the YAML file < --set KEY=VALUE "
    "(dotted keys, e.g. --set synthetic.n=200) < flags given on the command line. Teacher API key: "
    "$FACELLM_TEACHER_API_KEY or $OPENAI_API_KEY.")


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="build face QA datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    _add_build_parser(data_sub)
    _add_inspect_parser(data_sub)
    _add_export_parser(data_sub)
    _add_leakage_parser(data_sub)


# ----------------------------------------------------------------------------- build

class _Given(argparse.Action):
    """Stores a setting's flag and notes it as given: a flag on the command line beats the YAML file and --set,
    even where its value equals the default (the default the help shows, which is the config's)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {**namespace.given, self.option_strings[-1][2:]: values}


def _setting(group, flag: str, **kwargs) -> None:
    """``--flag`` for the setting ``FLAGS[flag]``; its help shows the config's default, spelled as the flag takes it."""
    default = DataBuildConfig.defaults()
    for name in FLAGS[flag].split("."):
        default = default[name]
    if isinstance(default, list):
        default = ",".join(default)
    elif isinstance(default, dict):
        default = ",".join(f"{k}={v}" for k, v in default.items()) or None
    group.add_argument(f"--{flag}", action=_Given, default=default, **kwargs)


def _columns(value: str) -> dict[str, str]:
    columns = {}
    for pair in filter(None, (v.strip() for v in value.split(","))):
        role, sep, column = pair.partition("=")
        if not sep or not role.strip() or not column.strip():
            raise argparse.ArgumentTypeError(f"{pair!r}: expected ROLE=COLUMN, e.g. image=img")
        columns[role.strip()] = column.strip()
    return columns


def _add_build_parser(data_sub) -> None:
    b = data_sub.add_parser("build", help="images + labels -> validated QA records -> dataset dir",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=BUILD_DESCRIPTION,
                            epilog=BUILD_EPILOG)
    b.add_argument("config", nargs="?", help="YAML file with any of the settings below")
    _setting(b, "source", choices=list(SOURCES),
             help="synthetic faces, or a dataset in its own on-disk layout under --root")
    _setting(b, "root", help="the dataset's folder (real sources); for hf also a Parquet file")
    _setting(b, "labels", help="labels file for --source folder: CSV or JSONL with a 'file' column")
    _setting(b, "columns", type=_columns, help="hf: role=column pairs, e.g. image=img,age=age_bin,identity=person_id")
    _setting(b, "out", type=output_dir, help="output dataset directory")
    _setting(b, "val-size", type=float, help="validation: fraction, or image count (synthetic)")
    _setting(b, "test-size", type=float, help="test: fraction, or image count (synthetic)")
    _setting(b, "seed", type=int)
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a setting by its config key (repeatable), e.g. --set teacher.url=http://host:8000/v1")
    _add_qa_args(b.add_argument_group("QA"))
    _add_face_args(b.add_argument_group("real sources: faces"))
    _add_synthetic_args(b.add_argument_group("synthetic source"))
    _add_compute_args(b.add_argument_group("where the work runs (the dataset is the same either way)"))
    b.set_defaults(func=cmd_build, given={})


def _add_qa_args(q) -> None:
    _setting(q, "qa", help="template kinds to write (comma list)")
    _setting(q, "mcq-per-face", type=int, help="multiple-choice questions per face")
    _setting(q, "refusal-rate", type=float,
             help="share of faces that also get an identity question and its polite decline")
    _setting(q, "teacher-url", help="OpenAI-compatible endpoint of a teacher LLM, e.g. http://host:8000/v1")
    _setting(q, "teacher-model", help="the teacher's model name")
    _setting(q, "teacher-qa", type=int, help="teacher QA per FaceLLM category per face")
    _setting(q, "teacher-concurrency", type=int, help="teacher requests in flight")
    _setting(q, "teacher-timeout", type=float, help="seconds per teacher request")
    _setting(q, "teacher-retries", type=int,
             help="retries on 429/5xx/timeouts/bad JSON, with exponential backoff and jitter")


def _add_face_args(r) -> None:
    _setting(r, "min-face", type=int, help="skip faces smaller than this (pixels)")
    _setting(r, "max-faces", type=int, help="images with more faces are skipped (see --multi-face)")
    _setting(r, "multi-face", choices=["skip", "each"],
             help="images with more than --max-faces faces: skip them, or one record set per face")
    _setting(r, "min-blur", type=float, help="skip faces blurrier than this Laplacian variance")
    _setting(r, "aligned", nargs="?", const="yes", choices=list(ALIGNED_MODES),
             help="the images are aligned face crops (one face filling the frame): where the full-range detector "
                  "finds none, the short-range one and then the face mesh on the whole image look for it. auto: as "
                  "the source's layout says (RAF-DB Image/aligned, CelebA img_align_celeba, UTKFace .chip.jpg); "
                  "--aligned alone: yes")
    _setting(r, "dedupe", type=int, metavar="BITS",
             help="reject face crops within BITS of an earlier one's 64-bit pHash (2-4 catches re-encoded copies); "
                  "-1 keeps all")


def _add_synthetic_args(y) -> None:
    _setting(y, "n", type=int, help="number of images")
    _setting(y, "image-size", type=int, help="pixels per face")
    _setting(y, "scene-faces", type=int, help="faces per image: 1 to this many")
    _setting(y, "lighting", help="lighting drawn per image from: normal,dim,bright,side")
    _setting(y, "blur", type=float, help="chance that an image is blurred")
    _setting(y, "occlusion", type=float, help="chance that a face's mouth or eyes are covered")


def _add_compute_args(c) -> None:
    _setting(c, "workers", type=int, metavar="N",
             help="processes that detect faces / draw images, each with its own detector (default: one per core); "
                  "with --ray, actors on the cluster (default: one per cluster CPU)")
    _setting(c, "ray", metavar="ADDRESS",
             help="run the per-image work on the Ray cluster at ADDRESS (auto, HOST:PORT): Ray Data with an actor "
                  "pool; --out must be a path every node sees")


def cmd_build(args) -> None:
    """defaults < YAML file < --set < flags given; the resolved settings go to OUT/build_config.yaml first."""
    from data_pipeline.config import build_config, ingest_config, teacher_config

    cfg = DataBuildConfig.from_yaml(args.config, args.set or (), {FLAGS[f]: v for f, v in args.given.items()})
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FacellmError(f"{out}: exists and is not a directory")
    if cfg.source != "synthetic" and not Path(cfg.root).exists():
        raise FacellmError(f"{cfg.root}: no such file or directory")
    cfg.save(out / "build_config.yaml")
    teacher = None
    if teacher_cfg := teacher_config(cfg):
        from data_pipeline.teacher import Teacher

        teacher = Teacher(teacher_cfg, out / "teacher_cache")
    if cfg.source == "synthetic":
        from data_pipeline.build import build_synthetic

        manifest = build_synthetic(build_config(cfg), teacher)
    else:
        from data_pipeline.ingest import ingest

        manifest = ingest(ingest_config(cfg), teacher)
        print(f"{manifest['images']} images, {manifest['rejected']} rejected")
    print(f"dataset written to {out}: records {manifest['records']}; QA rejected by validation: "
          f"{manifest['rejected_qa'] or 0} (all rejects with reasons in {out / 'rejects.jsonl'})")
    if teacher is not None:
        print(f"teacher: {teacher.usage.summary()}")


# ----------------------------------------------------------------------------- inspect, export, leakage

def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _add_inspect_parser(data_sub) -> None:
    i = data_sub.add_parser("inspect", help="counts per split, category, attribute and group; sample QA")
    i.add_argument("dir", type=existing_dir, help="dataset directory")
    i.add_argument("--samples", type=int, default=2, help="sample QA per category")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=cmd_inspect)


def _add_export_parser(data_sub) -> None:
    e = data_sub.add_parser("export", help="write a dataset dir's records again, in chosen formats",
                            description="Formats: hf (datasets on disk) and parquet, both with the images embedded; "
                                        "sharegpt (+ LLaMA-Factory's dataset_info.json) and llava, with image paths "
                                        "relative to the dataset dir when written into it, else absolute.")
    e.add_argument("dir", type=existing_dir, help="dataset directory")
    e.add_argument("--formats", default="hf,parquet,sharegpt,llava", help="comma list")
    e.add_argument("--out", type=output_dir, help="where to write (default: the dataset dir)")
    e.add_argument("--absolute-paths", action="store_true",
                   help="sharegpt/llava image paths absolute: tools that resolve paths from their working directory "
                        "then read the files from anywhere on this machine (ms-swift also takes the dataset dir "
                        "as ROOT_IMAGE_DIR instead)")
    e.set_defaults(func=cmd_export)
    p = data_sub.add_parser("push", help="push a dataset dir to the Hugging Face Hub (images embedded)",
                            description="Uploads DIR/dataset (every split, images inside) and the dataset card "
                                        "DIR/README.md to the Hub dataset repo REPO. Needs a token: `hf auth login` "
                                        "or $HF_TOKEN; $HF_ENDPOINT for a private hub.")
    p.add_argument("dir", type=existing_dir, help="dataset directory")
    p.add_argument("repo", help="the Hub dataset repo, e.g. me/face-qa")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.set_defaults(func=cmd_push)


def _add_leakage_parser(data_sub) -> None:
    k = data_sub.add_parser("leakage", help="benchmark images that are (near-)copies of dataset images",
                            description="Perceptual hashes of every dataset image against a folder of images, a "
                                        "FaceXBench-format JSON or a folder of them.")
    k.add_argument("dir", type=existing_dir, help="dataset directory")
    k.add_argument("--against", required=True, help="benchmark: image folder, FaceXBench JSON, or folder of JSONs")
    k.add_argument("--max-distance", type=int, default=4, help="Hamming distance of 64-bit pHashes that counts")
    k.add_argument("--report", help="write the leaks as JSON here (default: DIR/leakage.json)")
    k.add_argument("--fail", action="store_true",
                   help="exit with an error when a benchmark image or a near-duplicate across splits is found")
    k.set_defaults(func=cmd_leakage)


def cmd_inspect(args) -> None:
    from data_pipeline.summary import format_summary, summarize
    from data_pipeline.templates import group_of

    summary = summarize(Path(args.dir), group_of=group_of, samples_per_category=args.samples)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))


def cmd_export(args) -> None:
    from data_pipeline.export import export_all
    from facellm.records import load_splits

    out = Path(args.out or args.dir)
    export_all(load_splits(args.dir), out, _csv(args.formats), dataset_dir=Path(args.dir),
               absolute_paths=args.absolute_paths)
    print(f"exported {', '.join(_csv(args.formats))} of {args.dir} to {out}")


def cmd_push(args) -> None:
    from data_pipeline.export import push_to_hub

    url = push_to_hub(Path(args.dir), args.repo, args.private)
    print(f"pushed {args.dir} to {url}")


def cmd_leakage(args) -> None:
    from data_pipeline.leakage import find_duplicates, find_leaks, format_report, save_report

    report = find_leaks(Path(args.dir), Path(args.against), max_distance=args.max_distance, progress=True)
    print(format_report(report))
    path = save_report(report, Path(args.report) if args.report else Path(args.dir) / "leakage.json")
    duplicates = find_duplicates(Path(args.dir), max_distance=args.max_distance)
    print(format_report(duplicates))
    print(f"report: {path}")
    if args.fail and (report.leaks or duplicates.cross_split):
        raise FacellmError(f"{len(report.leaks)} benchmark images and {len(duplicates.cross_split)} cross-split "
                           f"pairs leak in {args.dir}")
