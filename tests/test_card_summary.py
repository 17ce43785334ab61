"""`summarize`, `format_summary` and the dataset card: numbers checked against the files on disk
(read back independently from the Parquet export), on a built synthetic dataset and on a
hand-made FairFace/UTKFace-like dataset with demographic labels and rejects."""

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.card import render_card, write_card
from data_pipeline.export import export_all
from data_pipeline.summary import balance, format_summary, image_key, reject_kind, summarize
from facellm.records import Record, chat


def parquet_rows(dataset_dir, split):
    return pq.read_table(dataset_dir / "parquet" / f"{split}.parquet").to_pylist()


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    build_synthetic(BuildConfig(out=out, n=30, val_size=3, test_size=3, seed=1))
    return out


# 12 faces: race White 5, Black 3, East Asian 2, Indian 2; even ones from FairFace, odd ones from UTKFace
RACES = ["White"] * 5 + ["Black"] * 3 + ["East Asian"] * 2 + ["Indian"] * 2
GENDERS = ["female", "male"] * 6
AGES = ["20-29", "20-29", "30-39", "40-49", "20-29", "3-9", "30-39", "20-29", "70+", "20-29", "30-39", "20-29"]
SPLIT = ["train"] * 8 + ["validation"] * 2 + ["test"] * 2
REJECTS = [
    {"source": "fairface", "input": "/data/fairface/val/1.jpg", "reason": "no face found"},
    {"source": "fairface", "input": "/data/fairface/val/2.jpg", "reason": "no face found"},
    {"source": "utkface", "input": "/data/utk/x.jpg", "reason": "labels: age='x' is not one of [...]"},
    {"source": "fairface", "input": "/data/fairface/val/3.jpg",
     "reason": "3 faces (max_faces 1; multi_face=each keeps one record set per face)"},
    {"source": "fairface", "input": "images/fairface/val_4.jpg", "id": "fairface-val_4#age", "writer": "template",
     "category": "age", "question": "How old?", "answer": "Old.", "reason": "validate: answer names no age group"},
]


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("labelled")
    (out / "images" / "faces").mkdir(parents=True)
    by_split = {"train": [], "validation": [], "test": []}
    for i in range(12):
        source = "fairface" if i % 2 == 0 else "utkface"
        rel = f"images/faces/{i}.jpg"
        Image.new("RGB", (32, 32), (10 * i, 80, 120)).save(out / rel)
        labels = {"race": RACES[i], "gender": GENDERS[i], "age": AGES[i]}
        for category in ("age", "gender", "race")[: 2 + (i < 6)]:  # faces 0-5: 3 records, 6-11: 2 records
            by_split[SPLIT[i]].append(Record(
                id=f"{source}-{i}#{category}", images=[rel], messages=chat(f"{category}?", f"{labels[category]}."),
                labels=labels, category=category, source=source, face={"box": [0, 0, 32, 32]}).model_dump())
    export_all(by_split, out)
    (out / "rejects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REJECTS))
    (out / "manifest.json").write_text(json.dumps({"source": "fairface"}))
    return out


def test_synthetic_summary_counts_match_the_files(synthetic_dir):
    s = summarize(synthetic_dir)
    manifest = json.loads((synthetic_dir / "manifest.json").read_text())
    assert s["source"] == "synthetic" and list(s["splits"]) == ["train", "validation", "test"]
    rows = {split: parquet_rows(synthetic_dir, split) for split in s["splits"]}
    for split, records in rows.items():
        assert s["splits"][split]["records"] == len(records) == manifest["records"][split]
        assert s["splits"][split]["images"] == len({image_key(r["id"]) for r in records}) == manifest["images"][split]
        assert s["categories"]["by_split"][split] == dict(Counter(r["category"] for r in records))
        assert sum(s["categories"]["by_split"][split].values()) == len(records)
    assert s["records"] == sum(len(r) for r in rows.values()) and s["images"] == 30
    assert s["categories"]["total"] == manifest["categories"]
    assert s["sources"] == {"synthetic": s["records"]}

    # labels counted once per image, per split
    faces = {(split, image_key(r["id"])): r["labels"] for split, records in rows.items() for r in records}
    for name in ("expression", "glasses", "skin_tone", "head_pose", "hair_color"):
        for split in rows:
            want = Counter(lab[name] for (sp, _), lab in faces.items() if sp == split and lab.get(name))
            assert s["attributes"][name]["by_split"][split] == {k: v for k, v in want.items() if v}
        assert sum(s["attributes"][name]["total"].values()) == 30
    skin = Counter(lab["skin_tone"] for lab in faces.values())
    assert s["balance"]["skin_tone"]["max_min_ratio"] == round(max(skin.values()) / min(skin.values()), 3)
    per_image = Counter(Counter((sp, image_key(r["id"])) for sp, rs in rows.items() for r in rs).values())
    assert s["records_per_image"]["histogram"] == {str(k): v for k, v in sorted(per_image.items())}
    assert s["rejects"]["total"] == len((synthetic_dir / "rejects.jsonl").read_text().splitlines())


def test_samples_are_deterministic_and_real(synthetic_dir):
    a, b = summarize(synthetic_dir), summarize(synthetic_dir)
    assert a["samples"] == b["samples"] and set(a["samples"]) == set(a["categories"]["total"])
    by_id = {r["id"]: r for split in a["splits"] for r in parquet_rows(synthetic_dir, split)}
    for category, pairs in a["samples"].items():
        assert 1 <= len(pairs) <= 2 and len({p["id"] for p in pairs}) == len(pairs)
        for p in pairs:
            record = by_id[p["id"]]
            assert record["category"] == category
            assert p["question"] == record["messages"][0]["content"][1]["text"]
            assert p["answer"] == record["messages"][1]["content"][0]["text"]
    assert summarize(synthetic_dir, samples_per_category=1, seed=5)["samples"].keys() == a["samples"].keys()


def test_group_of_maps_categories(synthetic_dir):
    s = summarize(synthetic_dir, group_of=lambda c: "attribute" if c in ("glasses", "hair_color", "skin_tone") else "other")
    totals = s["categories"]["total"]
    assert s["groups"]["total"] == {"attribute": totals["glasses"] + totals["hair_color"] + totals["skin_tone"],
                                    "other": s["records"] - totals["glasses"] - totals["hair_color"] - totals["skin_tone"]}
    assert "Records per category group" in format_summary(s)


def test_labelled_summary_balance_and_rejects(labelled_dir):
    s = summarize(labelled_dir)
    assert s["splits"] == {"train": {"records": 8 * 2 + 6, "images": 8, "image_files": 8},
                           "validation": {"records": 4, "images": 2, "image_files": 2},
                           "test": {"records": 4, "images": 2, "image_files": 2}}
    assert s["sources"] == {"fairface": 15, "utkface": 15}
    assert s["categories"]["total"] == {"age": 12, "gender": 12, "race": 6}
    assert s["attributes"]["race"]["total"] == {"White": 5, "Black": 3, "East Asian": 2, "Indian": 2}
    assert s["attributes"]["race"]["by_split"]["validation"] == {"East Asian": 2}
    assert s["attributes"]["race"]["by_split"]["test"] == {"Indian": 2}
    assert s["attributes"]["gender"]["total"] == {"male": 6, "female": 6}
    assert s["attributes"]["age"]["total"] == {"3-9": 1, "20-29": 6, "30-39": 3, "40-49": 1, "70+": 1}
    race = s["balance"]["race"]
    assert (race["max"], race["max_min_ratio"]) == ("White", 2.5) and race["min"] in ("East Asian", "Indian")
    assert race["missing"] == ["Latino_Hispanic", "Southeast Asian", "Middle Eastern"]
    assert s["balance"]["gender"]["max_min_ratio"] == 1.0 and s["balance"]["age"]["max_min_ratio"] == 6.0
    assert "skin_tone" not in s["balance"]
    assert s["records_per_image"] == {"images": 12, "histogram": {"2": 6, "3": 6}, "min": 2, "max": 3, "mean": 2.5}
    assert s["rejects"]["total"] == 5 and (s["rejects"]["inputs"], s["rejects"]["qa"]) == (4, 1)
    assert s["rejects"]["by_reason"]["no face found"] == 2
    assert s["rejects"]["by_kind"] == {"no face found": 2, "labels": 1, "N faces": 1, "validate": 1}

    text = format_summary(s)
    assert "Group balance" in text and "2.5" in text and "Latino_Hispanic" in text
    assert "no face found" in text and "Rejects (4 input images, 1 QA pairs" in text
    train_line = next(line for line in text.splitlines() if line.startswith("train "))
    assert train_line.split() == ["train", "8", "22"]


def test_balance_and_reject_kind():
    assert balance({"a": 4, "b": 1, "c": 0}) == {"counts": {"a": 4, "b": 1, "c": 0}, "total": 5,
                                                  "max": "a", "min": "b", "max_min_ratio": 4.0}
    assert balance({"male": 3}, "gender")["missing"] == ["female"]
    assert reject_kind("image: cannot identify image file '/x/1.jpg'") == "image"
    assert reject_kind("2 faces (max_faces 1; multi_face=each keeps one record set per face)") == "N faces"


def front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_of_labelled_dataset(labelled_dir):
    path = write_card(labelled_dir)
    assert path == labelled_dir / "README.md"
    text = path.read_text()
    meta = front_matter(text)
    assert meta["license"] == "other" and meta["license_name"] == "per-source"
    assert "visual-question-answering" in meta["task_categories"] and meta["size_categories"] == ["n<1K"]
    files = meta["configs"][0]["data_files"]
    assert [f["split"] for f in files] == ["train", "validation", "test"]
    assert all((labelled_dir / f["path"]).is_file() for f in files)
    assert "| fairface | 15 | CC BY 4.0 |" in text
    assert "| utkface | 15 | non-commercial research purposes only |" in text
    assert "utkface: non-commercial research use only" in text
    assert "| train | 8 | 22 |" in text and "| validation | 2 | 4 |" in text and "| **total** | 12 | 30 |" in text
    assert "| race | 6 | 0 | 0 | 6 |" in text  # records per category: train, validation, test, total
    assert "| White | 5 | 0 | 0 | 5 |" in text and "| Indian | 0 | 0 | 2 | 2 |" in text  # images per race
    assert "| race | 12 | White |" in text and "| 2.5 | Latino_Hispanic, Southeast Asian, Middle Eastern |" in text
    assert "| no face found | 2 |" in text and "4 input images gave no record and 1 question/answer pairs" in text
    assert "not face recognition" in text and "identity questions" in text
    assert "load_from_disk" in text and "facellm_train" in text and "llava/<split>.json" in text
    assert "no real person" not in text


def test_card_of_synthetic_dataset(synthetic_dir):
    s = summarize(synthetic_dir)
    text = write_card(synthetic_dir, summary=s).read_text()
    assert text == render_card(s, synthetic_dir)
    meta = front_matter(text)
    assert meta["license"] == "apache-2.0" and "synthetic" in meta["tags"]
    assert "no real people" in text and "no real person is depicted" in text
    for split, v in s["splits"].items():
        assert f"| {split} | {v['images']} | {v['records']} |" in text
    for category, n in s["categories"]["total"].items():
        assert f"| {category} | " in text and f" | {n} |" in text


def test_card_states_what_the_build_did(synthetic_dir):
    """Template-only builds say so; refusal records are counted and named; teacher answers are attributed
    to the teacher (the whole teacher build is in test_teacher_build)."""
    s = summarize(synthetic_dir)
    refusals = s["categories"]["total"].get("identity_refusal", 0)
    assert refusals > 0  # the default refusal rate
    text = render_card(s, synthetic_dir)
    assert f"{s['records']} records were written by facellm's templates" in text
    assert f"{refusals} records ask who the person is and answer with a polite decline" in text
    assert "ask identity questions only to decline them" in text and "teacher model" not in text

    taught = {**s, "categories": {**s["categories"], "total": {"teacher_expression": 7, "age": 3}}, "records": 10,
              "manifest": {"teacher": {"model": "big-vlm"}}}
    text = render_card(taught, synthetic_dir)
    assert "7 records (categories `teacher_*`) have answers **generated by a teacher model** (`big-vlm`)" in text
    assert "3 records were written by facellm's templates" in text
    assert "No record asks who the person is." in text and "ask no identity questions" in text
