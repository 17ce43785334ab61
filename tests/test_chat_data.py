"""Any chat dataset in: `facellm train` reads facellm's own dataset directory, its exports (Parquet, LLaMA-Factory
ShareGPT, LLaVA) and a TRL-convention datasets folder with embedded images, as the same chats; bad rows of a
foreign dataset are skipped into OUT/data_rejects.jsonl with their reasons, and the rest trains."""

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline.build import BuildConfig, build_synthetic
from facellm.cli import build_parser, main
from facellm.errors import FacellmError
from facellm.images import load_image
from facellm.records import load_split
from finetune.chat_data import read_chats
from finetune.collator import strip_nulls
from finetune.config import TrainConfig
from finetune.train import train

RECIPE = "finetune/configs/tiny-synthetic.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat-data") / "faces"
    build_synthetic(BuildConfig(out=out, n=20, val_size=2, test_size=1, seed=7))
    return out


@pytest.fixture(scope="module")
def embedded(data, tmp_path_factory):
    """The train split in TRL's convention (plain-string messages, datasets.Image cells holding the PNG bytes),
    saved with save_to_disk in a folder that has no images beside it."""
    from datasets import Dataset, Features, Image, List, Value

    records = load_split(data, "train")
    features = Features({"id": Value("string"),
                         "messages": List({"role": Value("string"), "content": Value("string")}),
                         "images": List(Image())})
    def text(message):
        return "".join(p["text"] for p in message["content"] if p["type"] == "text")

    rows = {"id": [r["id"] for r in records],
            "messages": [[{"role": m["role"], "content": text(m)} for m in r["messages"]] for r in records],
            "images": [[{"bytes": (data / p).read_bytes(), "path": None} for p in r["images"]] for r in records]}
    out = tmp_path_factory.mktemp("elsewhere") / "trl"
    Dataset.from_dict(rows, features=features).save_to_disk(str(out))
    return out


LAYOUTS = ("facellm", "parquet", "sharegpt", "llava", "hf")


def where(layout, data, embedded):
    """What --data names for each layout: the dataset directory, its exports, the moved TRL folder."""
    if layout == "sharegpt":  # LLaMA-Factory's dataset_info.json: beside the exports, or in sharegpt/
        return next(p for p in (data / "dataset_info.json", data / "sharegpt" / "dataset_info.json") if p.is_file())
    return {"facellm": data, "parquet": data / "parquet" / "train.parquet", "llava": data / "llava" / "train.json",
            "hf": embedded}[layout]


def comparable(source):
    """Each chat as (id, messages without nulls, sha of its images' RGB pixels)."""
    pixels = {}

    def digest(ref):
        if ref not in pixels:
            pixels[ref] = hashlib.sha1(np.asarray(load_image(ref, source.image_root)).tobytes()).hexdigest()
        return pixels[ref]

    return [(c["id"], strip_nulls(c["messages"]), [digest(ref) for ref in c["images"]]) for c in source.train]


def test_every_layout_reads_the_same_chats(data, embedded):
    sources = {layout: read_chats(where(layout, data, embedded)) for layout in LAYOUTS}
    assert {layout: s.layout for layout, s in sources.items()} == {layout: layout for layout in LAYOUTS}
    own = comparable(sources["facellm"])
    assert len(own) == len(load_split(data, "train")) > 100
    for layout, source in sources.items():
        assert source.rejects == [] and source.rows >= len(own), layout
        assert comparable(source) == own, layout
    # the very same image: an absolute path to the dataset's file, or its bytes where the layout embeds them
    first = data / sources["facellm"].train[0]["images"][0]
    for layout in ("sharegpt", "llava"):
        assert sources[layout].train[0]["images"][0] == str(first)
    assert sources["hf"].train[0]["images"][0] == first.read_bytes()
    assert sources["parquet"].train[0]["images"][0] in (str(first), first.read_bytes())
    # facellm's keys ride along in its Parquet and ShareGPT exports: their validation rows can be scored
    validation = load_split(data, "validation")
    assert [c["labels"] for c in sources["sharegpt"].validation] == [r["labels"] for r in validation]
    assert sources["parquet"].train[5]["category"] == sources["facellm"].train[5]["category"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_from_each_layout(layout, data, embedded, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig.from_yaml(RECIPE, [f"model={tiny_model_dir}", f"data={where(layout, data, embedded)}",
                                         f"output={out}", "max_steps=2", "batch_size=2", "log_every=1",
                                         "eval_every=0", "eval_samples=2", "seed=0", "threads=2"])
    summary = train(cfg)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log if "loss" in r)
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    assert log[0]["data"] == summary["data"] == json.loads((out / "summary.json").read_text())["data"]
    info = summary["data"]
    assert info["layout"] == layout and info["rejected"] == 0
    assert info["train_rows"] == len(load_split(data, "train"))
    assert summary["train_examples"] == 17  # grouped by image, whatever the layout: 20 - 2 validation - 1 test
    card = json.loads((out / "adapter" / "facellm_train.json").read_text())["dataset"]
    if layout == "facellm":
        assert "rejects" not in info and summary["validation"] is not None and card["manifest"]["source"] == "synthetic"
        return
    assert (out / "data_rejects.jsonl").read_text() == ""
    assert card["layout"] == layout and (card.get("files") or card.get("splits"))
    if layout == "sharegpt":  # its validation rows carry facellm's labels
        assert summary["validation"] is not None and "validation_note" not in info
    else:
        assert summary["validation"] is None and info["validation_note"].startswith("validation accuracy skipped")


@pytest.fixture
def bad_sharegpt(data, tmp_path):
    """LLaMA-Factory layout, the conversations/from/value tag variant: images under media/, relative to the
    dataset_info.json folder (LLaMA-Factory's media_dir), good rows of 8 images and six bad rows."""
    folder, media = tmp_path / "lf", tmp_path / "lf" / "media"
    media.mkdir(parents=True)
    good = [r for r in load_split(data, "train") if int(r["images"][0][-10:-4]) < 8]
    for r in good:
        shutil.copy(data / r["images"][0], media / r["images"][0].split("/")[-1])

    def row(id_, image_names, *turns):
        return {"id": id_, "images": [f"media/{n}" for n in image_names],
                "conversations": [{"from": who, "value": text} for who, text in zip(("human", "gpt") * 3, turns)]}

    rows = [row(r["id"], [r["images"][0].split("/")[-1]], "<image>" + r["messages"][0]["content"][1]["text"],
                r["messages"][1]["content"][0]["text"]) for r in good]
    (media / "broken.png").write_bytes(b"this is not an image")
    (media / "truncated.png").write_bytes((media / "000000.png").read_bytes()[:300])
    bad = {
        "missing": row("missing", ["nope.png"], "<image>Glasses?", "No glasses."),
        "two-tags": row("two-tags", ["000001.png"], "<image><image>Same person?", "Yes."),
        "assistant-first": {"id": "assistant-first", "images": ["media/000002.png"],
                            "conversations": [{"from": "gpt", "value": "Hello."},
                                              {"from": "human", "value": "<image>Glasses?"}]},
        "broken": row("broken", ["broken.png"], "<image>Glasses?", "No."),
        "truncated": row("truncated", ["truncated.png"], "<image>Glasses?", "No."),
        "empty-answer": row("empty-answer", ["000003.png"], "<image>Glasses?", "  "),
    }
    for k, r in enumerate(bad.values()):
        rows.insert(3 + 5 * k, r)
    (folder / "faces.json").write_text(json.dumps(rows))
    columns = {"messages": "conversations", "images": "images"}  # no tags: LLaMA-Factory's defaults, from/value
    (folder / "dataset_info.json").write_text(json.dumps({"faces": {
        "file_name": "faces.json", "formatting": "sharegpt", "columns": columns}}))
    return folder, good, rows


REASONS = {"missing": "missing image", "two-tags": "image count: 2 image tags/parts but 1 images",
           "assistant-first": "roles assistant, user", "broken": "undecodable image",
           "truncated": "undecodable image", "empty-answer": "empty answer"}


def test_bad_rows_are_skipped_into_the_rejects_file_and_the_rest_trains(bad_sharegpt, tiny_model_dir, tmp_path,
                                                                        capsys):
    folder, good, rows = bad_sharegpt
    out = tmp_path / "run"
    settings = [f"model={tiny_model_dir}", "max_steps=2", "batch_size=2", "log_every=1", "eval_every=0", "threads=2"]
    code = main(["train", RECIPE, "--data", str(folder / "dataset_info.json"), "--output", str(out),
                 *(a for s in settings for a in ("--set", s))])
    assert code == 0
    rejects = [json.loads(line) for line in (out / "data_rejects.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rejects) == sorted(REASONS)
    for r in rejects:
        assert r["index"] == [row["id"] for row in rows].index(r["id"]) and r["split"] == "train"
        assert r["reason"].startswith(REASONS[r["id"]]) and r["file"] == "faces:faces.json"
    assert "nope.png" in next(r["reason"] for r in rejects if r["id"] == "missing")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["rejected"] == 6 and summary["data"]["train_rows"] == len(good) == len(rows) - 6
    assert summary["train_examples"] == 8  # the eight good images, each one chat
    losses = [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    printed = capsys.readouterr().out
    used = f"{len(rows)} rows, {len(good)} train and 0 validation used"
    assert f"{used}, 6 skipped (reasons in {out / 'data_rejects.jsonl'})" in printed


def test_llava_image_folder_is_settable(data, tmp_path):
    moved = tmp_path / "moved.json"  # image paths relative to the dataset directory, as facellm exports them
    rows = json.loads((data / "llava" / "train.json").read_text())
    moved.write_text(json.dumps([{**r, "image": r["image"].removeprefix(f"{data}/")} for r in rows]))
    default = read_chats(moved)  # LLaVA's default here: the JSON's folder, where no image is
    assert default.train == [] and len(default.rejects) == default.rows > 100
    assert all(r["reason"].startswith("missing image: images/train/") for r in default.rejects)
    given = read_chats(moved, image_folder=data)
    assert given.rejects == [] and comparable(given) == comparable(read_chats(data))


def test_trl_rows_with_image_tags_and_parts(data, tmp_path):
    """Plain strings with <image> tags put images where the tags are; parts lists are taken as they are."""
    image = str(data / "images" / "train" / "000000.png")
    rows = [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Compare <image> and <image>."},
                          {"role": "assistant", "content": "Same."}], "images": [image, image]},
            {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hair?"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "Gray."}]}], "images": [image]},
            {"messages": [{"role": "user", "content": "Hair?"}, {"role": "assistant", "content": "Gray."},
                          {"role": "user", "content": "Sure?"}], "images": [image]}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    source = read_chats(tmp_path / "rows.jsonl")
    assert source.layout == "json" and source.rows == 4
    assert source.train[0]["messages"][1]["content"] == [
        {"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " and "}, {"type": "image"},
        {"type": "text", "text": "."}]
    assert source.train[1]["messages"][0]["content"][0] == {"type": "image"} and source.train[1]["id"] == "rows.jsonl#1"
    assert [(r["index"], r["reason"].split(" ")[0]) for r in source.rejects] == [(2, "roles"), (3, "malformed")]


def test_nothing_usable_is_a_one_line_error_naming_the_path(data, tmp_path):
    with pytest.raises(FacellmError, match=f"{tmp_path / 'missing'}: no such file"):
        read_chats(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacellmError, match=f"{tmp_path / 'empty'}: no training data found"):
        read_chats(tmp_path / "empty")
    pq.write_table(pa.table({"text": ["hi"], "images": [["a.png"]]}), tmp_path / "train.parquet")
    with pytest.raises(FacellmError, match=r"train.parquet: no 'messages' column \(has text, images\)"):
        read_chats(tmp_path / "train.parquet")
    info = tmp_path / "lf" / "dataset_info.json"
    info.parent.mkdir()
    entry = {"file_name": "x.json", "formatting": "sharegpt"}
    info.write_text(json.dumps({"faces_a": entry, "faces_b": entry}))
    with pytest.raises(FacellmError, match="none named \\*train; pick one with --set data_name=NAME"):
        read_chats(info)
    with pytest.raises(FacellmError, match="x.json does not exist"):
        read_chats(info, data_name="faces_b")


def test_train_help_says_what_data_it_reads(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("facellm data build", "save_to_disk", "Parquet", "dataset_info.json", "LLaVA", "--image-folder",
                     "data_rejects.jsonl"):
        assert fragment in text, fragment
