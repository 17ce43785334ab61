import json
import random
from collections import Counter

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from data_pipeline import synthetic
from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.export import from_sharegpt
from data_pipeline.templates import QUESTIONS, ANSWERS, description
from facellm.records import load_split
from facellm.schema import SYNTHETIC_ATTRIBUTES, normalize


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    build_synthetic(BuildConfig(out=out, n=40, val_size=4, test_size=6, seed=3))
    return out


def test_generator_is_seeded_and_reproducible():
    a, spec_a = synthetic.generate(5, seed=1)
    b, spec_b = synthetic.generate(5, seed=1)
    c, _ = synthetic.generate(5, seed=2)
    assert spec_a == spec_b and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_mirror_pairs_swap_left_and_right():
    even, spec_even = synthetic.generate(10, seed=0)
    odd, spec_odd = synthetic.generate(11, seed=0)
    assert spec_odd.head_pose == synthetic.MIRRORED_POSE[spec_even.head_pose]
    assert {k: v for k, v in spec_odd.labels.items() if k != "head_pose"} == \
           {k: v for k, v in spec_even.labels.items() if k != "head_pose"}
    assert np.array_equal(np.asarray(odd), np.asarray(even)[:, ::-1])


def test_one_attribute_change_changes_the_pixels_where_it_should():
    spec = synthetic.sample_spec(7)
    base = np.asarray(synthetic.render(spec)).astype(int)
    for field, value in [("glasses", "no" if spec.glasses == "yes" else "yes"),
                         ("skin_tone", "dark" if spec.skin_tone != "dark" else "light")]:
        changed = np.asarray(synthetic.render(synthetic.replace(spec, **{field: value}))).astype(int)
        assert np.abs(changed - base).sum(axis=2).astype(bool).mean() > 0.01, field


def test_every_template_answer_normalises_to_its_label():
    for attribute, answers in ANSWERS.items():
        for label, phrasings in answers.items():
            for text in phrasings:
                assert normalize(attribute, text) == label, (attribute, text)
    rng = random.Random(0)
    for _ in range(50):
        labels = synthetic.sample_spec(rng.randint(0, 10**6)).labels
        text = description(labels)
        assert {a: normalize(a, text) for a in ("skin_tone", "hair_color")} == \
               {a: labels[a] for a in ("skin_tone", "hair_color")}
    assert set(QUESTIONS) == set(ANSWERS)


def test_dataset_splits_by_image_with_records_in_design_format(dataset_dir):
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    assert manifest["images"] == {"train": 30, "validation": 4, "test": 6}
    splits = {s: load_split(dataset_dir, s) for s in ("train", "validation", "test")}
    images = {s: {p for r in recs for p in r["images"]} for s, recs in splits.items()}
    assert {s: len(i) for s, i in images.items()} == {"train": 30, "validation": 4, "test": 6}
    assert not images["train"] & images["test"] and not images["train"] & images["validation"]
    for split, records in splits.items():  # every image: each attribute question once, a description, forensic
        categories = Counter(r["category"] for r in records)
        for category in (*SYNTHETIC_ATTRIBUTES, "description", "forensic"):
            assert categories[category] == manifest["images"][split], (split, category)
    r = next(r for r in splits["test"] if r["category"] == "glasses")
    assert r["id"] == "synthetic-test-000000#glasses"
    assert r["messages"][0]["content"][0]["type"] == "image"
    assert r["messages"][1]["role"] == "assistant"
    assert normalize(r["category"], r["messages"][1]["content"][0]["text"]) == r["labels"][r["category"]]
    assert (dataset_dir / r["images"][0]).is_file()


def test_load_from_disk_embeds_the_images_and_sharegpt_export_round_trips(dataset_dir):
    ds = load_from_disk(str(dataset_dir / "dataset"))
    for split in ("train", "validation", "test"):
        records = load_split(dataset_dir, split)
        first = ds[split][0]  # the images themselves are inside: PIL images equal to the files
        assert first["image_files"] == records[0]["images"]
        assert first["images"][0].tobytes() == Image.open(dataset_dir / records[0]["images"][0]).tobytes()
        lines = (dataset_dir / "sharegpt" / f"{split}.jsonl").read_text().splitlines()
        parsed = [from_sharegpt(json.loads(line)) for line in lines]
        assert parsed == records
        row = json.loads(lines[0])
        assert row["messages"][0]["content"].startswith("<image>")
        # relative to the folder that holds dataset_info.json (LLaMA-Factory's media_dir), never climbing out
        assert not row["images"][0].startswith(("..", "/")) and (dataset_dir / row["images"][0]).is_file()
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    assert info["facellm_train"] == {**info["facellm_train"], "formatting": "sharegpt",
                                     "file_name": "sharegpt/train.jsonl"}


def test_parquet_and_llava_exports_hold_the_same_records(dataset_dir):
    from datasets import load_dataset

    for split in ("train", "test"):
        records = load_split(dataset_dir, split)
        parquet = load_dataset("parquet", data_files=str(dataset_dir / "parquet" / f"{split}.parquet"), split="train")
        hf = load_from_disk(str(dataset_dir / "dataset"))[split]
        assert parquet.remove_columns("images").to_list() == hf.remove_columns("images").to_list()
        assert [im.tobytes() for im in parquet[0]["images"]] == [im.tobytes() for im in hf[0]["images"]]
        llava = json.loads((dataset_dir / "llava" / f"{split}.json").read_text())
        assert [row["id"] for row in llava] == [r["id"] for r in records]
        first, record = llava[0], records[0]
        assert first["image"] == record["images"][0] and (dataset_dir / first["image"]).is_file()
        assert first["conversations"] == [
            {"from": "human", "value": "<image>\n" + record["messages"][0]["content"][1]["text"]},
            {"from": "gpt", "value": record["messages"][1]["content"][0]["text"]}]


def test_rebuild_is_identical(dataset_dir, tmp_path):
    build_synthetic(BuildConfig(out=tmp_path, n=40, val_size=4, test_size=6, seed=3))
    assert load_split(tmp_path, "test") == load_split(dataset_dir, "test")
    assert (tmp_path / "images/test/000003.png").read_bytes() == (dataset_dir / "images/test/000003.png").read_bytes()


def test_rerun_after_an_interrupted_build_completes_it(dataset_dir, tmp_path):
    build_synthetic(BuildConfig(out=tmp_path, n=40, val_size=4, test_size=6, seed=3))
    missing = tmp_path / "images/train/000007.png"
    missing.unlink()  # as if the first run was killed before drawing it
    build_synthetic(BuildConfig(out=tmp_path, n=40, val_size=4, test_size=6, seed=3))
    assert missing.read_bytes() == (dataset_dir / "images/train/000007.png").read_bytes()
    assert load_split(tmp_path, "train") == load_split(dataset_dir, "train")
    assert not list(tmp_path.rglob(".*.tmp"))
