"""More sources: Hugging Face ``datasets`` on disk (three forms), identity-keyed splits, synthetic scenes.

Real-photo fixtures are scikit-image's astronaut (NASA, public domain) and cameraman; the face detector finds
one face in each, in every variant used here (mirror, resize, brightness).
"""

import io
import json

import numpy as np
import pytest
import skimage.data
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as HFImage, Value
from PIL import Image, ImageEnhance, ImageOps

from data_pipeline import synthetic, templates
from data_pipeline.build import SPLIT_SEED_OFFSET, BuildConfig, build_synthetic
from data_pipeline.ingest import IngestConfig, hash_split, ingest
from data_pipeline.sources import read_hf
from facellm.errors import FacellmError
from facellm.faces import quality_cues
from facellm.records import load_split, load_splits, text_of
from facellm.schema import normalize

ASTRONAUT = Image.fromarray(skimage.data.astronaut())
CAMERAMAN = Image.fromarray(skimage.data.camera()).convert("RGB")
# eight pictures, each with one detectable face
VARIANTS = [ASTRONAUT, ImageOps.mirror(ASTRONAUT), CAMERAMAN, ImageOps.mirror(CAMERAMAN),
            ASTRONAUT.resize((384, 384)), CAMERAMAN.resize((384, 384)),
            ImageEnhance.Brightness(ASTRONAUT).enhance(0.8), ImageEnhance.Brightness(CAMERAMAN).enhance(1.2)]
CORRUPT = b"\xff\xd8\xff\xe0 this is not really a JPEG"


def jpeg(image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def build(source, root, out, **kwargs):
    manifest = ingest(IngestConfig(source=source, root=root, out=out, **kwargs))
    records = {s: load_split(out, s) for s in manifest["records"]}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    return manifest, records, rejects


def faces_by_split(records) -> dict[str, str]:
    """Face key (record id before '#') -> its split; every face must sit in exactly one split."""
    out = {}
    for split, recs in records.items():
        for r in recs:
            key = r["id"].split("#")[0]
            assert out.setdefault(key, split) == split, (key, split, out[key])
    return out


def labels_of(records) -> dict[str, dict]:
    return {r["id"].split("#")[0]: r["labels"] for recs in records.values() for r in recs}


def assert_answers_state_labels(records):
    checked = 0
    for recs in records.values():
        for r in recs:
            if r["category"] in r["labels"]:
                answer = text_of(r["messages"][1])
                assert normalize(r["category"], answer) == r["labels"][r["category"]], (r["id"], answer)
                checked += 1
    assert checked


# ----------------------------------------------------------------------------- Hugging Face datasets

def test_hf_save_to_disk_keeps_its_splits_and_names_class_labels(tmp_path):
    features = Features({"image": HFImage(), "gender": ClassLabel(names=["male", "female"]),
                         "age": Value("string"), "race": Value("string")})
    train = Dataset.from_dict({
        "image": [{"bytes": jpeg(ASTRONAUT), "path": None}, {"bytes": jpeg(CAMERAMAN), "path": None},
                  {"bytes": jpeg(ASTRONAUT), "path": None}, {"bytes": CORRUPT, "path": None},
                  {"bytes": jpeg(ImageOps.mirror(CAMERAMAN)), "path": None}],
        "gender": [1, 0, 1, 0, -1],  # -1: datasets' "no label"
        "age": ["30-39", "more than 70", "20-29", "40-49", "50-59"],
        "race": ["White", "East Asian", "Martian", "Indian", "Black"]}, features=features)
    validation = Dataset.from_dict({
        "image": [{"bytes": jpeg(ImageOps.mirror(ASTRONAUT)), "path": None}], "gender": [1], "age": ["3-9"],
        "race": ["Indian"]}, features=features)
    root = tmp_path / "hf"
    DatasetDict({"train": train, "validation": validation}).save_to_disk(str(root))
    # with these sizes "train/0" alone would hash to test: the dataset's own split must win
    assert hash_split("train/0", 0.3, 0.3) == "test"
    manifest, records, rejects = build("hf", root, tmp_path / "out", val_size=0.3, test_size=0.3)

    assert manifest["images"] == 6 and manifest["rejected"] == 2
    assert faces_by_split(records) == {"hf-train_0": "train", "hf-train_1": "train", "hf-train_4": "train",
                                       "hf-validation_0": "validation"}
    labels = labels_of(records)
    assert labels["hf-train_0"] == {"gender": "female", "age": "30-39", "race": "White", "head_pose": "frontal"}
    assert {k: labels["hf-train_1"][k] for k in ("gender", "age", "race")} == \
           {"gender": "male", "age": "70+", "race": "East Asian"}
    assert "gender" not in labels["hf-train_4"] and labels["hf-train_4"]["race"] == "Black"
    assert {k: labels["hf-validation_0"][k] for k in ("gender", "age", "race")} == \
           {"gender": "female", "age": "3-9", "race": "Indian"}
    assert_answers_state_labels(records)
    reasons = {r["input"]: r["reason"] for r in rejects}
    assert set(reasons) == {"hf:train/2", "hf:train/3"}
    assert reasons["hf:train/2"].startswith("labels: race='Martian' is not one of")
    assert reasons["hf:train/3"].startswith("image: hf:train/3: not a readable image")
    crop = records["train"][0]["images"][0]
    assert crop.startswith("images/hf/") and (tmp_path / "out" / crop).is_file()


def test_hf_parquet_with_mapped_columns_gets_hash_splits(tmp_path):
    features = Features({"img": HFImage(), "age_years": Value("int32"), "age": Value("string"),
                         "gender": Value("string")})
    images = [jpeg(ASTRONAUT), jpeg(CAMERAMAN), jpeg(ImageOps.mirror(ASTRONAUT)), CORRUPT, jpeg(ASTRONAUT),
              jpeg(ImageOps.mirror(CAMERAMAN))]
    Dataset.from_dict({
        "img": [{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(images)],
        "age_years": [34, 71, 5, 40, 25, 0],
        "age": ["unknown"] * 6,  # would reject every row if the mapping to age_years were ignored
        "gender": ["Female", "Male", "female", "male", "robot", "male"]}, features=features
    ).to_parquet(str(tmp_path / "faces.parquet"))

    with pytest.raises(FacellmError, match="no image column 'image'.*img"):
        list(read_hf(tmp_path / "faces.parquet"))
    manifest, records, rejects = build("hf", tmp_path / "faces.parquet", tmp_path / "out",
                                       columns={"image": "img", "age": "age_years"}, val_size=0.3, test_size=0.3)

    assert manifest["images"] == 6 and manifest["rejected"] == 2
    labels = labels_of(records)
    assert {k: {a: v[a] for a in ("age", "gender")} for k, v in labels.items()} == {
        "hf-train_0": {"age": "30-39", "gender": "female"}, "hf-train_1": {"age": "70+", "gender": "male"},
        "hf-train_2": {"age": "3-9", "gender": "female"}, "hf-train_5": {"age": "0-2", "gender": "male"}}
    assert_answers_state_labels(records)
    exact = {r["id"].split("#")[0]: r["face"]["age_years"] for split in records.values() for r in split}
    assert exact == {"hf-train_0": 34, "hf-train_1": 71, "hf-train_2": 5, "hf-train_5": 0}
    # a lone split is no split: each image lands where the hash of its key says
    splits = faces_by_split(records)
    assert splits == {f"hf-train_{i}": hash_split(f"train/{i}", 0.3, 0.3) for i in (0, 1, 2, 5)}
    assert len(set(splits.values())) >= 2
    reasons = {r["input"]: r["reason"] for r in rejects}
    assert set(reasons) == {"hf:train/3", "hf:train/4"}
    assert reasons["hf:train/3"].startswith("image: hf:train/3: not a readable image")
    assert reasons["hf:train/4"].startswith("labels: gender='robot' is not one of ['male', 'female']")


def test_hf_imagefolder_with_metadata_csv(tmp_path):
    root = tmp_path / "imagefolder"
    root.mkdir()
    ASTRONAUT.save(root / "a.jpg")
    CAMERAMAN.save(root / "c.jpg")
    ImageOps.mirror(ASTRONAUT).save(root / "m.jpg")
    ImageOps.mirror(CAMERAMAN).save(root / "o.jpg")
    (root / "bad.jpg").write_bytes(CORRUPT)
    # identities "bob" and "carol" hash to test, "alice" to validation (val 0.3, test 0.3)
    (root / "metadata.csv").write_text(
        "file_name,gender,age,race,identity\n"
        "a.jpg,Female,30-39,White,bob\n"
        "c.jpg,Male,more than 70,East Asian,alice\n"
        "m.jpg,female,30-39,White,bob\n"
        "o.jpg,male,60-69,Klingon,carol\n"
        "bad.jpg,female,20-29,Black,alice\n")
    items = {item.image.name: item for item in read_hf(root)}
    assert set(items) == {"a.jpg", "c.jpg", "m.jpg", "o.jpg", "bad.jpg"}
    assert items["a.jpg"].identity == "bob" and items["a.jpg"].split is None and items["a.jpg"].row is None
    manifest, records, rejects = build("hf", root, tmp_path / "out", val_size=0.3, test_size=0.3)

    face_of = {name: f"hf-{item.key.replace('/', '_')}" for name, item in items.items()}
    assert manifest["images"] == 5 and manifest["rejected"] == 2
    labels = labels_of(records)
    assert set(labels) == {face_of["a.jpg"], face_of["c.jpg"], face_of["m.jpg"]}
    assert {k: labels[face_of["c.jpg"]][k] for k in ("gender", "age", "race")} == \
           {"gender": "male", "age": "70+", "race": "East Asian"}
    assert labels[face_of["a.jpg"]]["gender"] == labels[face_of["m.jpg"]]["gender"] == "female"
    splits = faces_by_split(records)
    assert (hash_split("bob", 0.3, 0.3), hash_split("alice", 0.3, 0.3)) == ("test", "validation")
    assert splits == {face_of["a.jpg"]: "test", face_of["m.jpg"]: "test", face_of["c.jpg"]: "validation"}
    reasons = {r["input"].rsplit("/", 1)[-1]: r["reason"] for r in rejects}
    assert set(reasons) == {"bad.jpg", "o.jpg"}
    assert reasons["bad.jpg"].startswith("image: ") and "not a readable image" in reasons["bad.jpg"]
    assert reasons["o.jpg"].startswith("labels: race='Klingon' is not one of")


# ----------------------------------------------------------------------------- identity splits

def test_celeba_identity_keeps_each_person_in_one_split(tmp_path):
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    # identity -> its images; "2" hashes to train, "1" to test, "3" to validation (val 0.3, test 0.3)
    people = {"2": ["000001.jpg", "000002.jpg", "000007.jpg"], "1": ["000003.jpg", "000009.jpg", "000011.jpg"],
              "3": ["000004.jpg", "000005.jpg"]}
    files = sorted(f for fs in people.values() for f in fs)
    for image, name in zip(VARIANTS, files):
        image.save(root / "img_align_celeba" / name)
    (root / "list_attr_celeba.txt").write_text(
        f"{len(files)}\nEyeglasses Male No_Beard Smiling\n" + "".join(f"{f} -1 1 1 -1\n" for f in files))
    (root / "identity_CelebA.txt").write_text("".join(f"{f} {p}\n" for p, fs in people.items() for f in fs))
    assert not (root / "list_eval_partition.txt").exists()
    want = {p: hash_split(p, 0.3, 0.3) for p in people}
    assert want == {"2": "train", "1": "test", "3": "validation"}
    # the identity decides, not the file: by file name these would scatter
    assert any(hash_split(f, 0.3, 0.3) != want[p] for p, fs in people.items() for f in fs)

    manifest, records, rejects = build("celeba", root, tmp_path / "out", val_size=0.3, test_size=0.3)
    assert manifest["rejected"] == 0 and not rejects
    splits = faces_by_split(records)
    assert splits == {f"celeba-{f}": want[p] for p, fs in people.items() for f in fs}
    assert set(manifest["records"]) == {"train", "validation", "test"}


def test_folder_identity_column_keeps_each_person_in_one_split(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    # alice -> validation, bob -> test, dave -> train (val 0.3, test 0.3); by file name they would scatter
    people = {"alice": ["1.jpg", "2.jpg", "8.jpg"], "bob": ["3.jpg", "4.jpg"], "dave": ["5.jpg", "6.jpg", "7.jpg"]}
    files = sorted((f for fs in people.values() for f in fs), key=lambda f: int(f.split(".")[0]))
    for image, name in zip(VARIANTS, files):
        image.save(root / name)
    rows = "".join(f"{f},female,{p}\n" for p, fs in people.items() for f in fs)
    (tmp_path / "labels.csv").write_text("file,gender,identity\n" + rows + "9.jpg,male,\n")
    VARIANTS[2].save(root / "9.jpg")  # no identity: split by its own key
    want = {p: hash_split(p, 0.3, 0.3) for p in people}
    assert want == {"alice": "validation", "bob": "test", "dave": "train"}
    assert any(hash_split(f, 0.3, 0.3) != want[p] for p, fs in people.items() for f in fs)

    manifest, records, _ = build("folder", root, tmp_path / "out", labels=tmp_path / "labels.csv",
                                 val_size=0.3, test_size=0.3)
    assert manifest["rejected"] == 0
    expected = {f"folder-{f}": want[p] for p, fs in people.items() for f in fs}
    expected["folder-9.jpg"] = hash_split("9.jpg", 0.3, 0.3)
    assert faces_by_split(records) == expected


# ----------------------------------------------------------------------------- synthetic scenes

SIZE = 112


def cues(image, box):
    return quality_cues(np.asarray(image.convert("L"), dtype=np.float64), box)


@pytest.mark.parametrize("kwargs,message", [
    ({"lighting": ()}, "no lighting given"),
    ({"lighting": ("dim", "moonlight")}, "unknown lighting ['moonlight']"),
    ({"max_faces": 0}, "max_faces 0"),
    ({"blur": 1.5}, "blur 1.5"),
    ({"occlusion": -0.1}, "occlusion -0.1"),
])
def test_scene_options_refuse_what_cannot_be_drawn(kwargs, message):
    with pytest.raises(ValueError) as e:
        synthetic.SceneOptions(**kwargs)
    assert message in str(e.value)


def test_scene_with_several_faces_has_boxes_inside_each_tile():
    counts = set()
    for index in range(16):
        image, faces, conditions = synthetic.generate_scene(index, 0, SIZE, synthetic.SceneOptions(max_faces=3))
        n = len(faces)
        counts.add(n)
        assert conditions == {"lighting": "normal", "blurred": False, "faces": n}
        assert image.size == (n * SIZE, SIZE)
        for k, face in enumerate(faces):
            x0, y0, x1, y1 = face.box
            assert k * SIZE <= x0 < x1 <= (k + 1) * SIZE and 0 <= y0 < y1 <= SIZE, (index, k, face.box)
            assert (x1 - x0) > SIZE / 2 and (y1 - y0) > SIZE / 2
            assert face.occlusion == "none" and face.labels == face.spec.labels
        assert len({f.spec for f in faces}) == n  # distinct people
    assert counts == {1, 2, 3}


def test_occlusion_drops_the_labels_it_hides():
    seen = set()
    for index in range(12):
        plain_image, plain, _ = synthetic.generate_scene(index, 0, SIZE, synthetic.SceneOptions(max_faces=2))
        image, faces, _ = synthetic.generate_scene(index, 0, SIZE, synthetic.SceneOptions(max_faces=2, occlusion=1.0))
        assert [f.spec for f in faces] == [f.spec for f in plain]
        for k, (face, ref) in enumerate(zip(faces, plain)):
            seen.add(face.occlusion)
            hidden = {"mouth": "expression", "eyes": "glasses"}[face.occlusion]
            assert face.labels == {a: v for a, v in ref.labels.items() if a != hidden}
            if face.occlusion == "mouth":
                assert face.observations is None
            else:
                assert face.observations == synthetic.EXPRESSION_OBSERVATIONS[face.labels["expression"]]
            # the patch is drawn into this face's tile and nowhere else
            tile = (slice(None), slice(k * SIZE, (k + 1) * SIZE))
            diff = np.abs(np.asarray(image, dtype=int) - np.asarray(plain_image, dtype=int)).sum(axis=2)
            assert diff[tile].astype(bool).mean() > 0.05
    assert seen == {"mouth", "eyes"}


def test_dim_lighting_and_blur_move_the_measured_cues_across_the_template_thresholds():
    plain, dim_only, blur_only = (synthetic.SceneOptions(), synthetic.SceneOptions(lighting=("dim",)),
                                  synthetic.SceneOptions(blur=1.0))
    for seed in (0, 1):
        for index in range(12):
            base, faces, _ = synthetic.generate_scene(index, seed, SIZE, plain)
            dim, dim_faces, dim_c = synthetic.generate_scene(index, seed, SIZE, dim_only)
            blur, blur_faces, blur_c = synthetic.generate_scene(index, seed, SIZE, blur_only)
            assert dim_c["lighting"] == "dim" and blur_c["blurred"]
            assert faces[0].box == dim_faces[0].box == blur_faces[0].box
            normal, dark, soft = (cues(im, faces[0].box) for im in (base, dim, blur))
            # measured on this generator: normal >= 75, dim <= 51; sharp >= 500, blurred <= 21
            assert normal["brightness"] > templates.DARK > dark["brightness"], (seed, index, normal, dark)
            assert normal["blur_laplacian_var"] > templates.SHARP_BLUR, (seed, index, normal)
            assert soft["blur_laplacian_var"] < templates.BLURRY_BLUR, (seed, index, soft)


def answer(record) -> str:
    return text_of(record["messages"][1])


def test_build_synthetic_scenes_writes_crops_and_consistent_scene_qa(tmp_path):
    options = synthetic.SceneOptions(max_faces=3, lighting=("normal", "dim"), blur=0.3, occlusion=0.5)
    cfg = BuildConfig(out=tmp_path, n=14, val_size=2, test_size=2, seed=1, scene=options)
    manifest = build_synthetic(cfg)
    assert json.loads((tmp_path / "manifest.json").read_text())["scene"] == \
           {"max_faces": 3, "lighting": ["normal", "dim"], "blur": 0.3, "occlusion": 0.5}
    by_id = {r["id"]: r for recs in load_splits(tmp_path).values() for r in recs}
    seen = {"counts": set(), "occlusions": set(), "dim": 0, "blurred": 0}
    for split, size in manifest["images"].items():
        stream = cfg.seed * 10 + SPLIT_SEED_OFFSET[split]
        for index in range(size):
            image, faces, conditions = synthetic.generate_scene(index, stream, SIZE, options)
            n, key = len(faces), f"synthetic-{split}-{index:06d}"
            seen["counts"].add(n)
            seen["dim"] += conditions["lighting"] == "dim"
            seen["blurred"] += conditions["blurred"]
            scene_file = tmp_path / f"images/{split}/{index:06d}.png"
            assert np.array_equal(np.asarray(Image.open(scene_file).convert("RGB")), np.asarray(image))
            if n == 1:
                keys = [key]
                assert by_id[f"{key}#face_count"]["images"] == [f"images/{split}/{index:06d}.png"]
                assert answer(by_id[f"{key}#face_count"]) == "There is 1 face in the image."
                assert not list(scene_file.parent.glob(f"{index:06d}_face*.png"))
            else:
                keys = [f"{key}-face{k}" for k in range(n)]
                assert answer(by_id[f"{key}-scene#face_count"]) == f"There are {n} faces in the image."
                assert f"{key}-scene#description-{n}" in by_id and f"{key}-scene#description-{n + 1}" not in by_id
                for k in range(n):
                    crop = Image.open(tmp_path / f"images/{split}/{index:06d}_face{k}.png").convert("RGB")
                    tile = image.crop((k * SIZE, 0, (k + 1) * SIZE, SIZE))
                    assert np.array_equal(np.asarray(crop), np.asarray(tile))
                    described = by_id[f"{key}-scene#description" + (f"-{k + 1}" if k else "")]
                    assert described["messages"][0]["content"][1]["text"] == \
                           f"Describe the {templates.POSITIONS[k]} face from the left."
                    assert answer(described) == templates.description(faces[k].labels)
            for face_key, face in zip(keys, faces):
                record = by_id[f"{face_key}#occlusion"]
                seen["occlusions"].add(face.occlusion)
                assert record["face"]["occlusion"] == face.occlusion
                assert answer(record) == templates.OCCLUSION_ANSWERS[face.occlusion]
                assert record["labels"] == face.labels
                assert ("expression" in record["labels"]) == (face.occlusion != "mouth")
                assert ("glasses" in record["labels"]) == (face.occlusion != "eyes")
                assert (f"{face_key}#expression" in by_id) == (face.occlusion != "mouth")
                c = record["face"]["cues"]
                lighting = answer(by_id[f"{face_key}#lighting"])
                assert lighting.startswith("The face is dimly lit" if c["brightness"] < templates.DARK
                                           else "The face is well lit"), (face_key, c, lighting)
                if conditions["lighting"] == "dim":
                    assert lighting.startswith("The face is dimly lit"), (face_key, c)
                quality = by_id.get(f"{face_key}#image_quality")
                if conditions["blurred"]:
                    assert c["blur_laplacian_var"] <= templates.BLURRY_BLUR and answer(quality) == "The face is blurry."
                elif c["blur_laplacian_var"] >= templates.SHARP_BLUR:
                    assert answer(quality) == "The face is sharp and in focus."
                else:
                    assert quality is None
    # this seed and size exercise every condition at least once
    assert seen["counts"] == {1, 2, 3} and seen["occlusions"] == {"none", "mouth", "eyes"}
    assert seen["dim"] and seen["blurred"]
    assert manifest["rejected_qa"] == {}


def test_build_synthetic_with_plain_options_is_the_plain_generator(tmp_path):
    cfg = BuildConfig(out=tmp_path, n=10, val_size=2, test_size=2, seed=2)
    assert cfg.scene.plain
    manifest = build_synthetic(cfg)
    assert manifest["images"] == {"train": 6, "validation": 2, "test": 2}
    for split, size in manifest["images"].items():
        files = sorted(p.name for p in (tmp_path / "images" / split).iterdir())
        assert files == [f"{i:06d}.png" for i in range(size)]
        for i in range(size):
            expected, spec = synthetic.generate(i, cfg.seed * 10 + SPLIT_SEED_OFFSET[split], SIZE)
            saved = np.asarray(Image.open(tmp_path / "images" / split / f"{i:06d}.png").convert("RGB"))
            assert np.array_equal(saved, np.asarray(expected)), (split, i)
            records = [r for r in load_split(tmp_path, split) if r["id"].startswith(f"synthetic-{split}-{i:06d}#")]
            assert records and all(r["labels"] == spec.labels for r in records)
            assert all(r["face"].get("occlusion") is None for r in records)
            x0, y0, x1, y1 = synthetic.face_box(spec)  # clipped to the image
            assert all(r["face"]["box"] == [max(0.0, x0), max(0.0, y0), min(SIZE, x1), min(SIZE, y1)] for r in records)
    categories = set(manifest["categories"])
    assert not categories & {"face_count", "occlusion"}
    assert {"expression", "glasses", "description", "forensic"} <= categories
