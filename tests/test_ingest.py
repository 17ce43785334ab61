"""Real face datasets in their own on-disk layouts -> records with face cues, or rejects with reasons.

Fixtures are made from photos scikit-image ships (astronaut: NASA, public domain; cameraman; a cat).
"""

import json

import pytest
import skimage.data
from PIL import Image, ImageOps

from data_pipeline.ingest import IngestConfig, ingest
from facellm.errors import FacellmError
from facellm.records import load_split
from facellm.schema import normalize

from bad_inputs import ASTRONAUT, CAT, bad_images, save, two_faces

CAMERAMAN = Image.fromarray(skimage.data.camera()).convert("RGB")


def build(source, root, out, **kwargs):
    manifest = ingest(IngestConfig(source=source, root=root, out=out, **kwargs))
    records = {s: load_split(out, s) for s in manifest["records"]}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    return manifest, records, rejects


def by_image(records):
    out = {}
    for r in records:
        out.setdefault(r["id"].split("#")[0], []).append(r)
    return out


def test_fairface_layout(tmp_path):
    root = tmp_path / "fairface"
    save(ASTRONAUT, root / "train/1.jpg")
    save(CAMERAMAN, root / "train/2.jpg")
    save(CAT, root / "train/3.jpg")
    save(ASTRONAUT, root / "train/4.jpg")
    save(ImageOps.mirror(ASTRONAUT), root / "val/1.jpg")
    (root / "fairface_label_train.csv").write_text(
        "file,age,gender,race,service_test\n"
        "train/1.jpg,30-39,Female,White,True\n"
        "train/2.jpg,more than 70,Male,East Asian,False\n"
        "train/3.jpg,20-29,Female,Black,False\n"
        "train/4.jpg,about 30,Female,Martian,False\n")
    (root / "fairface_label_val.csv").write_text("file,age,gender,race,service_test\nval/1.jpg,3-9,Female,Indian,True\n")
    manifest, records, rejects = build("fairface", root, tmp_path / "out")
    assert manifest["images"] == 5 and manifest["rejected"] == 2
    train = by_image(records["train"])
    assert set(train) == {"fairface-train_1.jpg", "fairface-train_2.jpg"}
    astronaut = train["fairface-train_1.jpg"]
    assert astronaut[0]["labels"] == {"age": "30-39", "gender": "female", "race": "White", "head_pose": "frontal"}
    cameraman = train["fairface-train_2.jpg"][0]
    assert cameraman["labels"]["age"] == "70+" and cameraman["labels"]["head_pose"] == "right"
    assert {r["category"] for r in astronaut} >= {"age", "gender", "race", "head_pose", "lighting", "image_quality"}
    for r in records["train"] + records["validation"]:
        if r["category"] in r["labels"]:  # every template answer states exactly its label
            assert normalize(r["category"], r["messages"][1]["content"][0]["text"]) == r["labels"][r["category"]]
    assert by_image(records["validation"]).keys() == {"fairface-val_1.jpg"}
    # the crop holds the face with a margin; the box is given in the crop's pixels
    crop = Image.open(tmp_path / "out" / astronaut[0]["images"][0])
    x0, y0, x1, y1 = astronaut[0]["face"]["box"]
    assert 0 < x0 < x1 < crop.width and 0 < y0 < y1 < crop.height
    assert abs(astronaut[0]["face"]["cues"]["yaw"]) < 15
    reasons = {r["input"].split("/")[-1]: r["reason"] for r in rejects}
    assert reasons["3.jpg"] == "no face found"
    assert "age='about 30'" not in reasons["4.jpg"] and "race='Martian'" in reasons["4.jpg"]


def test_utkface_file_name_labels(tmp_path):
    root = tmp_path / "utk"
    save(ASTRONAUT, root / "26_1_0_20170116174525125.jpg.chip.jpg")
    save(CAMERAMAN, root / "61_0_2_20170109150557335.jpg.chip.jpg")
    save(ASTRONAUT, root / "not_a_label_name.jpg")
    _, records, rejects = build("utkface", root, tmp_path / "out", val_size=0, test_size=0)
    labels = {r["id"].split("#")[0]: r["labels"] for r in records["train"]}
    assert labels["utkface-26_1_0_20170116174525125.jpg.chip.jpg"] == {
        "age": "20-29", "gender": "female", "race": "White", "head_pose": "frontal"}
    assert "race" not in labels["utkface-61_0_2_20170109150557335.jpg.chip.jpg"]  # "Asian" has no FairFace group
    ages = {r["id"].split("#")[0]: r["face"]["age_years"] for r in records["train"]}
    assert ages == {"utkface-26_1_0_20170116174525125.jpg.chip.jpg": 26,  # the exact age, for the MAE in eval
                    "utkface-61_0_2_20170109150557335.jpg.chip.jpg": 61}
    assert [r["reason"] for r in rejects] == ["labels: file name 'not_a_label_name.jpg' is not age_gender_race_date.jpg"]


def test_celeba_attributes_and_partition(tmp_path):
    root = tmp_path / "celeba"
    save(ASTRONAUT, root / "img_align_celeba/000001.jpg")
    save(CAMERAMAN, root / "img_align_celeba/000002.jpg")
    names = ["Eyeglasses", "Male", "No_Beard", "Smiling", "Black_Hair", "Brown_Hair"]
    (root / "list_attr_celeba.txt").write_text(
        "2\n" + " ".join(names) + "\n000001.jpg -1 -1 1 1 -1 1\n000002.jpg 1 1 -1 -1 1 1\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    _, records, _ = build("celeba", root, tmp_path / "out")
    astronaut = records["train"][0]["labels"]
    assert astronaut == {"gender": "female", "glasses": "no", "smiling": "yes", "beard": "no", "hair_color": "brown",
                         "head_pose": "frontal"}
    cameraman = records["test"][0]["labels"]
    assert cameraman["glasses"] == "yes" and cameraman["beard"] == "yes" and "hair_color" not in cameraman


def test_rafdb_expressions(tmp_path):
    root = tmp_path / "raf"
    save(ASTRONAUT, root / "Image/aligned/train_00001_aligned.jpg")
    save(CAMERAMAN, root / "Image/aligned/test_0001_aligned.jpg")
    (root / "EmoLabel").mkdir()
    (root / "EmoLabel/list_patition_label.txt").write_text("train_00001.jpg 4\ntest_0001.jpg 7\n")
    _, records, _ = build("rafdb", root, tmp_path / "out")
    assert records["train"][0]["labels"]["expression"] == "happy"
    assert records["test"][0]["labels"]["expression"] == "neutral"


def test_missing_layout_files_name_what_is_expected(tmp_path):
    with pytest.raises(FacellmError, match="fairface_label_train.csv"):
        ingest(IngestConfig(source="fairface", root=tmp_path, out=tmp_path / "o"))
    with pytest.raises(FacellmError, match="list_attr_celeba.txt"):
        ingest(IngestConfig(source="celeba", root=tmp_path, out=tmp_path / "o"))
    with pytest.raises(FacellmError, match="fractions"):
        ingest(IngestConfig(source="celeba", root=tmp_path, out=tmp_path / "o", val_size=200))


def test_bad_input_matrix_ends_in_records_or_clear_rejects(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    cases = bad_images(root)
    rows = [{"file": name, "glasses": "no"} for name in cases]
    rows.append({"file": "good.jpg", "gender": "female"})
    rows.append({"file": "full.png", "tattoo": "yes"})
    rows.append({"file": "missing.jpg", "gender": "female"})
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest, records, rejects = build("folder", root, tmp_path / "out", labels=labels, val_size=0, test_size=0)
    reasons = {r["input"].split("/")[-1]: r["reason"] for r in rejects}
    kept = {r["id"].split("#")[0].removeprefix("folder-") for r in records["train"]}
    for name, expected in cases.items():
        if expected is None:
            assert name in kept, (name, reasons.get(name))
        else:
            assert expected in reasons[name], (name, reasons.get(name))
    assert "good.jpg" in kept
    assert "unknown attribute 'tattoo'" in reasons["full.png"]
    assert "no such image file" in reasons["missing.jpg"]
    assert manifest["images"] == len(rows)
    # the EXIF-rotated photo is upright before the detector sees it: the face is found, frontal
    rotated = next(r for r in records["train"] if r["id"].startswith("folder-rotated.jpg"))
    assert rotated["labels"]["head_pose"] == "frontal" and abs(rotated["face"]["cues"]["roll"]) < 15


def test_multi_face_each_keeps_every_face(tmp_path):
    root = tmp_path / "folder"
    save(two_faces(), root / "two.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,glasses\ntwo.jpg,no\n")
    _, records, _ = build("folder", root, tmp_path / "out", labels=labels, multi_face="each", val_size=0, test_size=0)
    faces = {r["id"].split("#")[0] for r in records["train"]}
    assert faces == {"folder-two.jpg-face0", "folder-two.jpg-face1"}


def test_an_interrupted_build_resumes_without_duplicates_or_losses(tmp_path):
    root = tmp_path / "folder"
    for i in range(4):
        save(ImageOps.mirror(ASTRONAUT) if i % 2 else ASTRONAUT, root / f"{i}.jpg")
    save(CAT, root / "cat.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,gender\n" + "".join(f"{i}.jpg,female\n" for i in range(4)) + "cat.jpg,female\n")
    out = tmp_path / "out"
    full, records, rejects = build("folder", root, out, labels=labels, val_size=0, test_size=0)
    journal = (out / "journal.jsonl").read_text().splitlines()
    # as if killed while writing the fourth entry: three whole lines and a torn one
    (out / "journal.jsonl").write_text("\n".join(journal[:3]) + "\n" + journal[3][: len(journal[3]) // 2])
    resumed, records2, rejects2 = build("folder", root, out, labels=labels, val_size=0, test_size=0)
    assert resumed == full and records2 == records and rejects2 == rejects
    keys = [json.loads(line)["key"] for line in (out / "journal.jsonl").read_text().splitlines()
            if line.strip().endswith("}")]
    assert sorted(keys) == sorted(f"{i}.jpg" for i in range(4)) + ["cat.jpg"]


def test_dedupe_rejects_a_re_encoded_copy_and_keeps_the_first(tmp_path):
    root = tmp_path / "folder"
    save(ASTRONAUT, root / "a.png")
    save(ASTRONAUT.resize((480, 480)), root / "b.jpg", quality=70)  # the same photo, smaller and re-encoded
    save(CAMERAMAN, root / "c.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,glasses\na.png,no\nb.jpg,no\nc.png,no\n")
    manifest, records, rejects = build("folder", root, tmp_path / "out", labels=labels, dedupe=4,
                                       val_size=0, test_size=0)
    assert set(by_image(records["train"])) == {"folder-a.png", "folder-c.png"}
    (reject,) = rejects
    assert reject["input"].endswith("b_jpg.jpg") and "near-duplicate of images/folder/a_png.jpg" in reject["reason"]
    assert manifest["rejected"] == 1


def test_changing_filters_or_split_sizes_needs_no_new_detection(tmp_path):
    root = tmp_path / "folder"
    for i in range(12):
        save(ASTRONAUT if i % 2 else ImageOps.mirror(ASTRONAUT), root / f"{i}.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,glasses\n" + "".join(f"{i}.jpg,no\n" for i in range(12)))
    out = tmp_path / "out"
    first, records, _ = build("folder", root, out, labels=labels, val_size=0, test_size=0)
    assert set(records) == {"train"}
    journal = (out / "journal.jsonl").read_bytes()
    _, records, _ = build("folder", root, out, labels=labels, val_size=0.4, test_size=0.4)
    assert len(records) == 3 and (out / "journal.jsonl").read_bytes() == journal  # re-split, nothing re-detected
    with pytest.raises(FacellmError, match="no image gave a face"):
        build("folder", root, out, labels=labels, min_face=10_000)
    reasons = {json.loads(line)["reason"] for line in (out / "rejects.jsonl").read_text().splitlines()}
    assert reasons == {"every face is smaller than 10000 px or blurrier than 0.0"}
    assert (out / "journal.jsonl").read_bytes() == journal
