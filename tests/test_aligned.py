"""Aligned face crops are faces: sets that ship tightly cropped faces (RAF-DB's Image/aligned, 100x100) become
records, through the short-range detector or the face mesh on the whole image, while a crop of a cat's face
stays a reject. The crops are the astronaut's face (NASA, public domain) 5-15 % inside the full-range detector's
own box, where that detector finds nothing; the cat is scikit-image's."""

import json

import pytest
from PIL import Image

from data_pipeline.config import DataBuildConfig
from data_pipeline.ingest import NO_FACE, NO_FACE_ALIGNED, IngestConfig, ingest
from facellm.cli import main
from facellm.config import ConfigError
from facellm.errors import FacellmError
from facellm.records import load_split

from bad_inputs import ASTRONAUT, CAT, save, tight_crop

INSETS = (0.05, 0.10, 0.15)
CROPS = {f"{'m' if mirror else 'o'}{round(inset * 100):02d}": tight_crop(inset, mirror)
         for inset in INSETS for mirror in (False, True)}  # o05, m05, o10, ... : six 100x100 faces
CAT_FACE = CAT.crop((100, 20, 300, 220)).resize((100, 100))  # the short-range detector alone takes it for a face
EXPRESSIONS = {"1": "surprised", "4": "happy", "7": "neutral"}


def build(source, root, out, **kwargs):
    manifest = ingest(IngestConfig(source=source, root=root, out=out, val_size=0, test_size=0, **kwargs))
    records = {s: load_split(out, s) for s in manifest["records"]}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    return manifest, records, rejects


def journal(out) -> list[dict]:
    return [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]


def rafdb_folder(root):
    """RAF-DB's layout (read_rafdb): EmoLabel/list_patition_label.txt and Image/aligned/<stem>_aligned.jpg."""
    lines = []
    for n, (name, crop) in enumerate(CROPS.items()):
        save(crop, root / f"Image/aligned/train_{name}_aligned.jpg")
        lines.append(f"train_{name}.jpg {list(EXPRESSIONS)[n % 3]}")
    save(CAT_FACE, root / "Image/aligned/test_cat_aligned.jpg")
    lines.append("test_cat.jpg 4")
    (root / "EmoLabel").mkdir()
    (root / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def crop_folder(root):
    """The same crops (and the cat) as a plain folder with a labels file."""
    for name, crop in {**CROPS, "cat": CAT_FACE}.items():
        save(crop, root / f"{name}.jpg")
    labels = root / "labels.csv"
    labels.write_text("file,expression\n" + "".join(f"{name}.jpg,happy\n" for name in (*CROPS, "cat")))
    return labels


def test_rafdb_aligned_crops_become_records_and_a_cat_crop_a_reject(tmp_path):
    root = rafdb_folder(tmp_path / "raf")
    out = tmp_path / "out"
    manifest, records, rejects = build("rafdb", root, out)  # aligned: auto, and RAF-DB's Image/aligned is aligned
    faces = {r["id"].split("#")[0]: r for r in records["train"]}
    assert set(faces) == {f"rafdb-train_{name}.jpg" for name in CROPS}
    for n, name in enumerate(CROPS):
        face = faces[f"rafdb-train_{name}.jpg"]
        assert face["labels"] == {"expression": list(EXPRESSIONS.values())[n % 3], "head_pose": "frontal"}
        x0, y0, x1, y1 = face["face"]["box"]  # the crop is the whole 100x100 image: the margin has no room
        assert Image.open(out / face["images"][0]).size == (100, 100)
        assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100 and min(x1 - x0, y1 - y0) >= 80
        cues = face["face"]["cues"]
        assert abs(cues["yaw"]) < 15 and abs(cues["roll"]) < 10  # measured from the mesh: she faces the camera
        assert 0.15 < cues["eye_openness"] < 0.6 and cues["smile"] > 0.03  # eyes open, smiling (as in the photo)
        assert cues["blur_laplacian_var"] > 100 and 100 < cues["brightness"] < 220
        assert face["face"]["landmarks"].endswith(".landmarks.npy")
    # the full-range detector finds none of them: the 5 % crops come from the short-range one, the 15 % ones
    # from the face mesh on the whole image
    assert manifest["faces_found_by"] == {"short_range": 4, "face_mesh": 2}
    found_by = {e["key"]: e["faces"][0]["found_by"] for e in journal(out) if e["faces"]}
    assert found_by["train_o05.jpg"] == found_by["train_m05.jpg"] == "short_range"
    assert found_by["train_o15.jpg"] == found_by["train_m15.jpg"] == "face_mesh"
    assert all(e["aligned"] for e in journal(out))
    (cat,) = rejects
    assert cat["input"].endswith("Image/aligned/test_cat_aligned.jpg") and cat["reason"] == NO_FACE_ALIGNED


def test_the_same_crops_as_a_plain_folder_need_aligned_and_switching_redoes_the_journal(tmp_path):
    root = tmp_path / "crops"
    labels = crop_folder(root)
    out = tmp_path / "out"
    # a plain folder says nothing about alignment: the full-range detector alone, which misses every crop
    with pytest.raises(FacellmError, match="no image gave a face.*for face crops that fill the frame pass --aligned"):
        build("folder", root, out, labels=labels)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} == {NO_FACE} and len(rejects) == 7
    assert len(journal(out)) == 7

    manifest, records, rejects = build("folder", root, out, labels=labels, aligned="yes")
    assert {r["id"].split("#")[0] for r in records["train"]} == {f"folder-{name}.jpg" for name in CROPS}
    assert [(r["input"].split("/")[-1], r["reason"]) for r in rejects] == [("cat.jpg", NO_FACE_ALIGNED)]
    assert sum(manifest["faces_found_by"].values()) == 6 and "full_range" not in manifest["faces_found_by"]
    entries = journal(out)
    assert len(entries) == 14 and all(e["aligned"] for e in entries[7:])  # every image redone, once

    before = (out / "journal.jsonl").read_bytes()
    again, records_again, _ = build("folder", root, out, labels=labels, aligned="yes")
    assert (out / "journal.jsonl").read_bytes() == before and records_again == records and again == manifest
    with pytest.raises(FacellmError, match="no image gave a face"):  # and back: redone without the crops' help
        build("folder", root, out, labels=labels, aligned="no")
    assert len(journal(out)) == 21


def test_full_photos_in_an_aligned_build_are_found_as_before_and_old_journals_are_reused(tmp_path):
    root = tmp_path / "photos"
    save(ASTRONAUT, root / "a.jpg")
    save(CAT, root / "cat.jpg")
    labels = root / "labels.csv"
    labels.write_text("file,gender\na.jpg,female\ncat.jpg,female\n")
    out = tmp_path / "out"
    plain, records, rejects = build("folder", root, out, labels=labels)
    assert plain["faces_found_by"] == {"full_range": 1} and [r["reason"] for r in rejects] == [NO_FACE]
    # a journal written before the aligned mode (v2: no "aligned", no "found_by") is what aligned: no makes
    old = [{k: v for k, v in e.items() if k != "aligned"} | {"v": 2,
            "faces": [{k: v for k, v in f.items() if k != "found_by"} for f in e["faces"]]} for e in journal(out)]
    (out / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in old))
    v2 = (out / "journal.jsonl").read_bytes()
    reused, records_reused, _ = build("folder", root, out, labels=labels)
    assert (out / "journal.jsonl").read_bytes() == v2 and reused == plain and records_reused == records
    # aligned: the full-range detector still finds the face in a full photo; the cat stays a reject
    aligned, records_aligned, rejects = build("folder", root, out, labels=labels, aligned="yes")
    assert len(journal(out)) == 4 and aligned["faces_found_by"] == {"full_range": 1}
    assert records_aligned == records and [r["reason"] for r in rejects] == [NO_FACE_ALIGNED]


def test_auto_follows_each_layout_utkface_chips_and_celeba_aligned_are_crops(tmp_path):
    utk = tmp_path / "utk"
    save(CROPS["o10"], utk / "26_1_0_20170116174525125.jpg.chip.jpg")  # "Aligned&Cropped Faces"
    save(CROPS["o10"], utk / "27_1_0_20170116174525126.jpg")  # an in-the-wild name: not said to be a crop
    _, records, rejects = build("utkface", utk, tmp_path / "out-utk")
    assert {r["id"].split("#")[0] for r in records["train"]} == {"utkface-26_1_0_20170116174525125.jpg.chip.jpg"}
    assert [(r["input"].split("/")[-1], r["reason"]) for r in rejects] == [("27_1_0_20170116174525126.jpg", NO_FACE)]
    celeba = tmp_path / "celeba"
    save(CROPS["m15"], celeba / "img_align_celeba/000001.jpg")
    (celeba / "list_attr_celeba.txt").write_text("1\nMale Smiling No_Beard\n000001.jpg -1 1 1\n")
    manifest, records, _ = build("celeba", celeba, tmp_path / "out-celeba")
    assert records["train"][0]["labels"] == {"gender": "female", "smiling": "yes", "beard": "no", "glasses": "no",
                                             "head_pose": "frontal"}
    assert manifest["faces_found_by"] == {"face_mesh": 1}


def test_affectnet_style_class_folders_of_crops_through_an_imagefolder(tmp_path):
    root = tmp_path / "affectnet"  # split/class/image.jpg: datasets' imagefolder names the classes in "label"
    save(CROPS["o05"], root / "train/happy/0.jpg")
    save(CROPS["m10"], root / "train/happy/1.jpg")
    save(CROPS["m15"], root / "train/sad/0.jpg")
    save(CAT_FACE, root / "val/sad/cat.jpg")
    manifest, records, rejects = build("hf", root, tmp_path / "out", columns={"expression": "label"}, aligned="yes")
    labels = {r["id"].split("#")[0]: r["labels"] for r in records["train"]}
    assert labels == {"hf-train_0": {"expression": "happy", "head_pose": "frontal"},
                      "hf-train_1": {"expression": "happy", "head_pose": "frontal"},
                      "hf-train_2": {"expression": "sad", "head_pose": "frontal"}}
    assert [(r["input"].split("/")[-1], r["reason"]) for r in rejects] == [("cat.jpg", NO_FACE_ALIGNED)]
    assert sum(manifest["faces_found_by"].values()) == 3


def test_aligned_setting_from_flags_and_yaml(tmp_path, capsys):
    root = tmp_path / "crops"
    crop_folder(root)
    out = tmp_path / "data"
    assert main(["data", "build", "--source", "folder", "--root", str(root), "--labels", str(root / "labels.csv"),
                 "--out", str(out), "--val-size", "0", "--test-size", "0", "--aligned"]) == 0  # alone: yes
    assert "7 images, 1 rejected" in capsys.readouterr().out
    assert DataBuildConfig.from_yaml(out / "build_config.yaml").faces.aligned == "yes"
    (tmp_path / "b.yaml").write_text(f"out: {out}\nfaces: {{aligned: no}}\n")  # YAML 1.1 reads no as false
    assert DataBuildConfig.from_yaml(tmp_path / "b.yaml").faces.aligned == "no"
    assert DataBuildConfig.from_yaml(None, (), {"out": str(out)}).faces.aligned == "auto"
    with pytest.raises(ConfigError, match="faces.aligned 'maybe' .--aligned.: expected one of auto, yes, no"):
        DataBuildConfig.from_yaml(None, ["faces.aligned=maybe"], {"out": str(out)})
