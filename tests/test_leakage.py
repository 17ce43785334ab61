"""Leakage, by perceptual hash: leaks into a benchmark (plain folders and FaceXBench task files) and
near-duplicates across splits, on a real built synthetic dataset and on real photos.

Measured here: a resized + brightened + JPEG-re-encoded copy of a synthetic face is within
0-4 bits of its original (64-bit pHash); scikit-image's photos lie >= 20 bits from every
synthetic face. Distinct synthetic faces, though, can be 0-2 bits apart (one drawing
template), so negatives are real photos, and positives are checked by which image is matched.
"""

import io
import json
import shutil

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageEnhance
from skimage import data as skdata

from data_pipeline import leakage, phash
from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.export import export_all
from facellm.errors import FacellmError
from facellm.records import Record, chat, load_split

PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "brick")


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


def edited(image: Image.Image, scale: float = 1.4, brightness: float = 1.1, quality: int = 80) -> Image.Image:
    """Resized, slightly brightened and JPEG re-encoded: what a benchmark's copy of an image often is."""
    image = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    buf = io.BytesIO()
    ImageEnhance.Brightness(image).enhance(brightness).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    build_synthetic(BuildConfig(out=out, n=30, val_size=3, test_size=3, seed=0))
    return out


def ids_using(dataset_dir, split: str, image: str) -> list[str]:
    """Ids of the records of ``split`` about ``image``, read back with the loader every stage uses."""
    return sorted(r["id"] for r in load_split(dataset_dir, split) if image in r["images"])


def test_vectorised_distances_equal_imagehash_distances():
    rng = np.random.default_rng(0)
    for hash_size in (8, 16):  # one and four uint64 words per hash
        hashes = [imagehash.ImageHash(rng.random((hash_size, hash_size)) > 0.5) for _ in range(40)]
        hashes.append(imagehash.ImageHash(hashes[0].hash.copy()))
        hashes[-1].hash[0, :3] = ~hashes[-1].hash[0, :3]  # 3 bits from hashes[0]
        bits = phash.pack_bits(hashes)
        limit = hash_size**2 // 2 - 2
        got = {(i, j): d for i, j, d in phash.close_pairs(bits, bits, limit, same=True)}
        want = {(i, j): hashes[i] - hashes[j] for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                if hashes[i] - hashes[j] <= limit}
        assert got == want and got[(0, len(hashes) - 1)] == 3
        across = phash.close_pairs(bits[:5], bits, 3)
        assert sorted((i, j) for i, j, _ in across) == [(0, 0), (0, 40), (1, 1), (2, 2), (3, 3), (4, 4)]


def test_unreadable_images_are_skipped_and_reported(tmp_path):
    good = tmp_path / "good.png"
    photo("camera").save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    missing = tmp_path / "missing.jpg"
    unreadable = {}
    hashes = phash.image_hashes([good, broken, missing, good], unreadable=unreadable)
    assert list(hashes) == [good] and hashes[good] == imagehash.phash(Image.open(good))
    assert set(unreadable) == {str(broken), str(missing)}
    assert unreadable[str(broken)].startswith("not a readable image") and unreadable[str(missing)] == "no such image file"


def write_facexbench(path, questions: dict[str, list[str]], dataset="fairface", category="age"):
    """A FaceXBench task file (the layout of github.com/Kartik-3004/facexbench benchmark/*.json)."""
    task = {"category": category, "sub-category": "bias_fairness", "dataset": dataset, "question_type": "MCQ",
            "num_images": "single", "prepend_text": "Age estimation ...", "postpend_text": "Answer with a letter.",
            "questions": {qid: {"image_paths": paths, "question_text": "What is the age group?",
                                "options": ["0-2", "3-9", "20-29", "70+"], "correct_answer_option": "C",
                                "answer": "20-29"} for qid, paths in questions.items()}}
    path.write_text(json.dumps(task, indent=2))
    return path


def test_benchmark_images_from_folders_and_facexbench_files(tmp_path):
    bench = tmp_path / "benchmark"
    (bench / "images" / "task_a").mkdir(parents=True)
    for n in (1, 2, 3):
        photo(PHOTOS[n]).resize((64, 64)).save(bench / "images" / "task_a" / f"question_{n}.png")
    (bench / "images" / "stray.JPG").write_bytes((bench / "images" / "task_a" / "question_1.png").read_bytes())
    task = write_facexbench(bench / "task_a.json", {"1": ["images/task_a/question_1.png"],
                                                    "2": ["images/task_a/question_2.png", "images/task_a/question_3.png"]})
    (bench / "notes.json").write_text('{"not": "a task"}')
    images = sorted((bench / "images").rglob("*"))
    task_images = [(bench / "images" / "task_a" / f"question_{n}.png").absolute() for n in (1, 2, 3)]

    assert leakage.benchmark_images(task) == task_images
    assert leakage.benchmark_images(bench / "images") == sorted(p.absolute() for p in images if p.is_file())
    skipped = {}
    refs = leakage.benchmark_questions(bench, skipped)
    assert sorted(refs) == sorted([*task_images, (bench / "images" / "stray.JPG").absolute()])
    assert [q["question"] for q in refs[task_images[2]]] == ["2"] and refs[task_images[2]][0]["dataset"] == "fairface"
    assert refs[(bench / "images" / "stray.JPG").absolute()] == []
    assert list(skipped) == [str(bench / "notes.json")]
    with pytest.raises(FacellmError, match="not a FaceXBench task file"):
        leakage.benchmark_images(bench / "notes.json")
    with pytest.raises(FacellmError, match="no such file"):
        leakage.benchmark_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacellmError, match="no images"):
        leakage.benchmark_images(tmp_path / "empty")


def test_one_image_path_as_a_string_counts_and_a_broken_task_in_a_folder_is_skipped(tmp_path):
    bench = tmp_path / "benchmark"
    (bench / "images").mkdir(parents=True)
    photo("camera").resize((64, 64)).save(bench / "images" / "q1.png")
    task = write_facexbench(bench / "task.json", {"1": "images/q1.png"})  # one path, not a list
    broken = write_facexbench(bench / "broken.json", {"1": ["images/q1.png"]})
    broken.write_text(broken.read_text().replace('"correct_answer_option"', '"correct"'))

    skipped = {}
    refs = leakage.benchmark_questions(bench, skipped)
    assert [q["file"] for q in refs[(bench / "images" / "q1.png").absolute()]] == [str(task)]
    assert "question 1 lacks ['correct_answer_option']" in skipped[str(broken)]
    with pytest.raises(FacellmError, match="question 1 lacks"):
        leakage.benchmark_questions(broken)  # named on its own, a broken task is an error


def test_exact_and_edited_copies_leak_unrelated_photos_do_not(synthetic_dir, tmp_path):
    bench = tmp_path / "bench"
    (bench / "sub").mkdir(parents=True)
    shutil.copy(synthetic_dir / "images/train/000003.png", bench / "exact.png")
    edited(Image.open(synthetic_dir / "images/test/000001.png")).save(bench / "sub" / "edited.jpg", quality=85)
    for name in PHOTOS:
        photo(name).save(bench / f"{name}.jpg")

    report = leakage.find_leaks(synthetic_dir, bench)
    assert report.dataset_images == 30 and report.benchmark_images == 2 + len(PHOTOS) and not report.unreadable
    exact, copy = str((bench / "exact.png").absolute()), str((bench / "sub" / "edited.jpg").absolute())
    assert report.leaked_benchmark_images == sorted([exact, copy])  # no photo leaks

    by_bench = {b: [x for x in report.leaks if x.benchmark_image == b] for b in (exact, copy)}
    best = min(by_bench[exact], key=lambda x: x.distance)
    assert (best.dataset_image, best.distance, best.identical) == ("images/train/000003.png", 0, True)
    assert best.records == {"train": ids_using(synthetic_dir, "train", "images/train/000003.png")}
    assert best.record_ids and all(r.startswith("synthetic-train-000003#") for r in best.record_ids)
    best = min(by_bench[copy], key=lambda x: x.distance)
    assert best.dataset_image == "images/test/000001.png" and best.distance <= 4 and not best.identical
    assert "test" in report.by_split() and report.notes == [leakage.SYNTHETIC_NOTE]

    # the margin the negative relies on: photos are far from every synthetic face
    faces = phash.image_hashes(synthetic_dir / "images" / s / f"{i:06d}.png"
                                 for s, n in (("train", 24), ("validation", 3), ("test", 3)) for i in range(n))
    photos = phash.image_hashes(bench / f"{name}.jpg" for name in PHOTOS)
    assert len(faces) == 30 and min(p - f for p in photos.values() for f in faces.values()) >= 12


def test_facexbench_task_leak_names_question_ids(synthetic_dir, tmp_path):
    bench = tmp_path / "benchmark"
    (bench / "images" / "fairface_age").mkdir(parents=True)
    img = bench / "images" / "fairface_age"
    edited(Image.open(synthetic_dir / "images/train/000007.png"), scale=2.0).save(img / "question_1.png")
    photo("coffee").save(img / "question_2.png")
    photo("astronaut").save(img / "question_17_1.png")
    shutil.copy(synthetic_dir / "images/validation/000000.png", img / "question_17_2.png")
    task = write_facexbench(bench / "fairface_single_mcq_age_test.json", {
        "1": ["images/fairface_age/question_1.png"], "2": ["images/fairface_age/question_2.png"],
        "17": ["images/fairface_age/question_17_1.png", "images/fairface_age/question_17_2.png"],
        "18": ["images/fairface_age/missing.png"]})

    report = leakage.find_leaks(synthetic_dir, task)
    assert report.benchmark_images == 4 and list(report.unreadable) == [str((img / "missing.png").absolute())]
    assert sorted(q["question"] for q in report.questions) == ["1", "17"]
    assert {q["file"] for q in report.questions} == {str(task)}
    assert all(q["dataset"] == "fairface" and q["category"] == "age" for q in report.questions)
    matched = {x.dataset_image for x in report.leaks}
    assert {"images/train/000007.png", "images/validation/000000.png"} <= matched
    assert {"train", "validation"} <= set(report.by_split())

    path = leakage.save_report(report, tmp_path / "reports" / "leakage.json")
    saved = json.loads(path.read_text())
    assert saved["kind"] == "leakage" and saved["summary"]["questions_affected"] == 2
    assert saved["summary"]["leaks"] == len(report.leaks) == len(saved["leaks"])
    assert {q["question"] for x in saved["leaks"] for q in x["questions"]} == {"1", "17"}
    assert any(x["splits"] == ["validation"] and x["identical"] for x in saved["leaks"])
    text = leakage.format_report(report)
    assert "fairface_single_mcq_age_test.json#17" in text and "1 unreadable" in text


def test_cross_split_duplicates_are_found(synthetic_dir, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(synthetic_dir, ds)
    # validation image 1 replaced by a re-encoded, resized, brightened copy of train image 10 (a split leak)
    edited(Image.open(ds / "images/train/000010.png"), scale=0.8).resize((112, 112)).save(ds / "images/validation/000001.png")
    report = leakage.find_duplicates(ds)
    assert report.images == 30 and not report.shared_files
    planted = [p for p in report.cross_split if (p.a, p.b) == ("images/train/000010.png", "images/validation/000001.png")]
    assert len(planted) == 1 and planted[0].distance <= 4 and not planted[0].identical
    assert planted[0].splits_a == ["train"] and planted[0].splits_b == ["validation"]
    leaked = report.leaked_record_ids()
    assert {r for r in leaked if r.startswith("synthetic-validation-000001#")} == set(planted[0].records_b["validation"])
    assert planted[0].records_b == {"validation": ids_using(ds, "validation", "images/validation/000001.png")}
    assert planted[0].records_a == {"train": ids_using(ds, "train", "images/train/000010.png")}
    assert report.notes == [leakage.SYNTHETIC_NOTE]
    saved = json.loads(leakage.save_report(report, tmp_path / "dups.json").read_text())
    assert saved["summary"]["cross_split_pairs"] == len(report.cross_split) >= 1
    assert any(p["cross_split"] and p["b"] == "images/validation/000001.png" for p in saved["pairs"])


def test_duplicates_on_real_photos_exact_copy_and_shared_file(tmp_path):
    """Distinct photos give no pairs; a copied file within train and a file two splits share do."""
    out = tmp_path / "photos"
    (out / "images").mkdir(parents=True)
    for name in PHOTOS:
        photo(name).resize((160, 160)).save(out / "images" / f"{name}.jpg", quality=90)

    def records(split, names):
        return [Record(id=f"folder-{split}-{n}#age", images=[f"images/{n}.jpg"], messages=chat("How old?", "20-29."),
                       labels={"age": "20-29"}, category="age", source="folder").model_dump() for n in names]

    export_all({"train": records("train", PHOTOS[:5]), "validation": records("validation", PHOTOS[5:7]),
                "test": records("test", PHOTOS[7:])}, out)
    clean = leakage.find_duplicates(out)
    assert clean.images == len(PHOTOS) and clean.pairs == [] and clean.shared_files == {} and clean.notes == []

    shutil.copy(out / "images" / "coffee.jpg", out / "images" / "coffee_copy.jpg")
    export_all({"train": records("train", [*PHOTOS[:5], "coffee_copy"]),
                "validation": records("validation", PHOTOS[5:7]),
                "test": records("test", [PHOTOS[7], "camera"])}, out)  # camera.jpg also used by test
    report = leakage.find_duplicates(out)
    assert [(p.a, p.b, p.distance, p.identical, p.cross_split) for p in report.pairs] == [
        ("images/coffee.jpg", "images/coffee_copy.jpg", 0, True, False)]
    assert report.shared_files == {"images/camera.jpg": {"test": ["folder-test-camera#age"],
                                                         "train": ["folder-train-camera#age"]}}
    assert report.leaked_record_ids() == ["folder-test-camera#age"]
