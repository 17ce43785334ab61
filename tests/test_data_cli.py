"""`facellm data build|inspect|export|leakage`, driven in-process through facellm.cli.main (one subprocess
checks the installed entry point). Real photos from scikit-image: astronaut (NASA, public domain), cameraman,
coffee and a cat (no faces)."""

import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import skimage.data
from datasets import Dataset, Features, Image as HFImage, Value
from PIL import Image

from data_pipeline.export import from_sharegpt
from data_pipeline.templates import group_of
from facellm.cli import main
from facellm.records import load_splits

ENTRY_POINT = Path(sys.executable).with_name("facellm")


def run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what came before
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def manifest_of(out_dir: Path) -> dict:
    return json.loads((out_dir / "manifest.json").read_text())


def table(text: str, title: str) -> dict[str, list[int]]:
    """Rows of one of `data inspect`'s tables: first cell -> the numbers after it."""
    lines = text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert lines[1].startswith("---"), lines[:2]
    return {cells[0]: [int(c) for c in cells[1:]] for cells in (line.split() for line in lines[2:])}


# ----------------------------------------------------------------------------- build from YAML

CONFIG = """\
source: synthetic
out: {out}
val_size: 2
test_size: 2
seed: 4
templates:
  kinds: [attributes, cues]
  refusal_rate: 0
synthetic:
  n: 12
  scene_faces: 3
  occlusion: 0.5
  lighting: [normal, dim]
"""


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    """A synthetic dataset with several-face scenes, built by the CLI from a YAML file, `--n` overriding it."""
    root = tmp_path_factory.mktemp("cli-synthetic")
    (root / "build.yaml").write_text(CONFIG.format(out=root / "data"))
    assert main(["data", "build", str(root / "build.yaml"), "--n", "15"]) == 0
    return root / "data"


def test_build_from_yaml_with_a_flag_overriding_it(synthetic_dir):
    manifest = manifest_of(synthetic_dir)
    assert manifest["images"] == {"train": 11, "validation": 2, "test": 2}  # --n 15 beat `n: 12`
    assert manifest["seed"] == 4
    assert manifest["scene"] == {"max_faces": 3, "lighting": ["normal", "dim"], "blur": 0.0, "occlusion": 0.5}
    assert manifest["template_options"]["kinds"] == ["attributes", "cues"]
    assert manifest["template_options"]["refusal_rate"] == 0
    categories = set(manifest["categories"])
    assert {"expression", "glasses", "lighting", "occlusion", "face_count"} <= categories
    assert not categories & {"forensic", "expression_reasoning", "identity_refusal"}
    assert not any(c.startswith("mcq_") for c in categories)
    records = [r for rs in load_splits(synthetic_dir).values() for r in rs]
    # descriptions come only from the scene questions (each face by place), not from the "description" kind
    assert all("-scene#description" in r["id"] for r in records if r["category"] == "description")
    assert any(r["id"].endswith("-scene#face_count") for r in records)


def test_build_prints_the_record_counts(tmp_path, capsys):
    rc, out, _ = run(capsys, "data", "build", "--out", tmp_path, "--n", "5", "--val-size", "1", "--test-size", "1",
                     "--qa", "attributes", "--refusal-rate", "0")
    assert rc == 0
    records = manifest_of(tmp_path)["records"]
    assert f"dataset written to {tmp_path}: records {records}" in out
    assert sum(records.values()) == sum(len(r) for r in load_splits(tmp_path).values())
    assert set(manifest_of(tmp_path)["categories"]) == {"expression", "glasses", "skin_tone", "head_pose",
                                                        "hair_color"}


def test_a_flag_with_its_default_value_still_overrides_the_yaml(tmp_path):
    (tmp_path / "build.yaml").write_text(f"out: {tmp_path / 'data'}\nsynthetic: {{n: 5}}\nval_size: 1\n"
                                         "test_size: 1\nseed: 4\ntemplates: {kinds: attributes}\n")
    assert main(["data", "build", str(tmp_path / "build.yaml"), "--seed", "0"]) == 0
    assert manifest_of(tmp_path / "data")["seed"] == 0


def test_precedence_is_defaults_then_yaml_then_set_then_flags(tmp_path):
    (tmp_path / "build.yaml").write_text(f"out: {tmp_path / 'data'}\nseed: 4\nval_size: 1\ntest_size: 2\n"
                                         "synthetic: {n: 12, image_size: 64}\ntemplates: {kinds: [attributes]}\n")
    assert main(["data", "build", str(tmp_path / "build.yaml"), "--set", "seed=5", "--set", "synthetic.n=9",
                 "--n", "7", "--set", "templates.refusal_rate=0"]) == 0
    manifest = manifest_of(tmp_path / "data")
    assert manifest["images"] == {"train": 4, "validation": 1, "test": 2}  # --n 7 beat --set synthetic.n=9 and n: 12
    assert manifest["seed"] == 5  # --set beat the YAML
    assert manifest["image_size"] == 64  # the YAML beat the default (112)
    assert manifest["template_options"] == {"kinds": ["attributes"], "mcq_per_face": 1, "refusal_rate": 0.0}


def test_build_writes_its_resolved_config_which_reloads_into_the_same_settings(tmp_path):
    from data_pipeline.config import DataBuildConfig

    (tmp_path / "build.yaml").write_text(f"out: {tmp_path / 'data'}\nsynthetic: {{n: 5, lighting: [dim]}}\n")
    args = ["--set", "val_size=1", "--set", "test_size=1", "--qa", "attributes,cues", "--seed", "3"]
    assert main(["data", "build", str(tmp_path / "build.yaml"), *args]) == 0
    saved = DataBuildConfig.from_yaml(tmp_path / "data" / "build_config.yaml")
    assert saved == DataBuildConfig.from_yaml(tmp_path / "build.yaml", ["val_size=1", "test_size=1"],
                                              {"templates.kinds": "attributes,cues", "seed": 3})
    assert (saved.out, saved.seed, saved.val_size, saved.synthetic.n) == (str(tmp_path / "data"), 3, 1.0, 5)
    assert saved.templates.kinds == ("attributes", "cues") and saved.synthetic.lighting == ("dim",)
    assert manifest_of(tmp_path / "data")["scene"]["lighting"] == ["dim"]
    assert not list((tmp_path / "data").glob(".*.tmp"))  # written aside, then renamed


def test_resolved_config_is_written_before_the_build_starts(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    rc, _, err = run(capsys, "data", "build", "--source", "folder", "--root", tmp_path / "photos",
                     "--out", tmp_path / "data")
    assert rc == 2 and "--labels" in err  # the ingest refused: a folder source needs a labels file
    saved = (tmp_path / "data" / "build_config.yaml").read_text()
    assert "source: folder\n" in saved and f"root: {tmp_path / 'photos'}\n" in saved


def test_old_flag_named_yaml_keys_name_their_new_setting(tmp_path, capsys):
    for old, new in [("teacher-url: http://h/v1", "teacher.url"), ("val-size: 2", "val_size"),
                     ("scene_faces: 2", "synthetic.scene_faces"), ("qa: [cues]", "templates.kinds")]:
        (tmp_path / "old.yaml").write_text(f"out: {tmp_path / 'x'}\n{old}\n")
        rc, _, err = run(capsys, "data", "build", tmp_path / "old.yaml")
        key = old.split(":")[0]
        assert rc == 2 and f"{tmp_path / 'old.yaml'}: setting {key!r} is now {new!r}" in err
    rc, _, err = run(capsys, "data", "build", "--out", tmp_path / "x", "--set", "min-face=40")
    assert rc == 2 and "--set min-face=40: setting 'min-face' is now 'faces.min_face'" in err
    assert not (tmp_path / "x").exists()


def test_build_hf_source_with_columns_mapping_from_yaml(tmp_path, capsys):
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="JPEG")
    Dataset.from_dict({"img": [{"bytes": buf.getvalue(), "path": "a.jpg"}], "age_years": [34],
                       "gender": ["Female"]},
                      features=Features({"img": HFImage(), "age_years": Value("int32"), "gender": Value("string")})
                      ).to_parquet(str(tmp_path / "faces.parquet"))
    (tmp_path / "hf.yaml").write_text(f"source: hf\nroot: {tmp_path / 'faces.parquet'}\nout: {tmp_path / 'data'}\n"
                                      "columns: {image: img, age: age_years}\nval_size: 0\ntest_size: 0\n")
    rc, out, err = run(capsys, "data", "build", tmp_path / "hf.yaml")
    assert rc == 0, err
    assert "1 images, 0 rejected" in out
    labels = {r["id"].split("#")[0]: r["labels"] for r in load_splits(tmp_path / "data")["train"]}
    assert labels == {"hf-train_0": {"age": "30-39", "gender": "female", "head_pose": "frontal"}}


def test_unknown_yaml_setting_and_bad_qa_kind_exit_2_naming_them(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(f"out: {tmp_path / 'x'}\nsynthetic: {{n: 5}}\nscene_facez: 2\n")
    rc, out, err = run(capsys, "data", "build", tmp_path / "bad.yaml")
    assert rc == 2 and f"{tmp_path / 'bad.yaml'}: unknown setting 'scene_facez'; known: source, root," in err
    assert "synthetic.scene_faces" in err and "teacher.url" in err
    rc, out, err = run(capsys, "data", "build", "--out", tmp_path / "y", "--n", "5", "--qa", "attributes,bogus")
    assert rc == 2 and "unknown template kinds ['bogus']" in err and "known: attributes" in err
    (tmp_path / "badqa.yaml").write_text(f"out: {tmp_path / 'z'}\nsynthetic: {{n: 5}}\n"
                                         "templates: {kinds: [cues, trivia]}\n")
    rc, out, err = run(capsys, "data", "build", tmp_path / "badqa.yaml")
    assert rc == 2 and "unknown template kinds ['trivia']" in err
    rc, out, err = run(capsys, "data", "build", "--out", tmp_path / "w", "--n", "5", "--lighting", " , ")
    assert rc == 2 and "no lighting given" in err
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z", "w"))


def test_entry_point_exits_2_on_an_unknown_setting_without_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_text("sorce: synthetic\n")
    result = subprocess.run([str(ENTRY_POINT), "data", "build", str(tmp_path / "bad.yaml")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "unknown setting 'sorce'" in result.stderr and "Traceback" not in result.stderr


def test_build_help_mentions_yaml_config_and_teacher_key(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "build", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "YAML" in out and "config" in out
    assert "FACELLM_TEACHER_API_KEY" in out


# ----------------------------------------------------------------------------- inspect

def test_inspect_counts_match_the_dataset(synthetic_dir, capsys):
    splits = load_splits(synthetic_dir)
    names = list(splits)
    per_split = {s: Counter(r["category"] for r in rs) for s, rs in splits.items()}
    groups = {s: Counter(group_of(r["category"]) for r in rs) for s, rs in splits.items()}
    total = sum(per_split.values(), Counter())

    rc, out, _ = run(capsys, "data", "inspect", synthetic_dir, "--samples", "1")
    assert rc == 0
    assert out.split("\n")[0].endswith(f"{sum(total.values())} records about "
                                       f"{len({r['id'].split('#')[0] for rs in splits.values() for r in rs})} images)")
    categories = table(out, "Records per category")
    assert categories == {c: [per_split[s][c] for s in names] + [n] for c, n in total.items()}
    group_rows = table(out, "Records per category group")
    assert group_rows == {g: [groups[s][g] for s in names] + [sum(groups[s][g] for s in names)]
                          for g in set().union(*groups.values())}
    assert group_rows["fine_detail"][-1] == sum(n for c, n in total.items() if group_of(c) == "fine_detail")
    assert table(out, "Splits")["total"] == [len({r["id"].split("#")[0] for rs in splits.values() for r in rs}),
                                             sum(total.values())]

    rc, out, _ = run(capsys, "data", "inspect", synthetic_dir, "--json")
    assert rc == 0
    summary = json.loads(out)
    assert summary["categories"]["total"] == dict(total)
    assert summary["categories"]["by_split"] == {s: dict(c) for s, c in per_split.items()}
    assert summary["groups"]["total"] == dict(sum(groups.values(), Counter()))
    assert summary["records"] == sum(total.values())
    assert {s: v["records"] for s, v in summary["splits"].items()} == {s: len(rs) for s, rs in splits.items()}
    assert set(summary["samples"]) == set(total)


# ----------------------------------------------------------------------------- real photos: export, leakage

@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """A folder-source dataset of two real photos: astronaut in train, cameraman in test."""
    root = tmp_path_factory.mktemp("cli-photos")
    (root / "photos").mkdir()
    Image.fromarray(skimage.data.astronaut()).save(root / "photos" / "astronaut.jpg")
    Image.fromarray(skimage.data.camera()).convert("RGB").save(root / "photos" / "camera.jpg")
    (root / "labels.csv").write_text("file,gender,split\nastronaut.jpg,female,train\ncamera.jpg,male,test\n")
    assert main(["data", "build", "--source", "folder", "--root", str(root / "photos"), "--labels",
                 str(root / "labels.csv"), "--out", str(root / "data")]) == 0
    return root / "data"


def test_export_sharegpt_and_llava_elsewhere_round_trips(photo_dir, tmp_path, capsys):
    other = tmp_path / "exported"
    rc, out, _ = run(capsys, "data", "export", photo_dir, "--formats", "sharegpt,llava", "--out", other)
    assert rc == 0 and "exported sharegpt, llava" in out
    assert sorted(p.name for p in other.iterdir()) == ["dataset_info.json", "llava", "sharegpt"]
    splits = load_splits(photo_dir)
    assert set(splits) == {"train", "test"}
    for split, records in splits.items():  # written outside the dataset dir: absolute paths, to the same files
        rows = [json.loads(line) for line in (other / "sharegpt" / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == len(records)
        for row, record in zip(rows, records):
            assert len(row["images"]) == 1 and os.path.isabs(row["images"][0])
            assert Path(row["images"][0]).samefile(photo_dir / record["images"][0])
        assert [from_sharegpt(row, str(photo_dir.resolve())) for row in rows] == records
        llava = json.loads((other / "llava" / f"{split}.json").read_text())
        assert [x["id"] for x in llava] == [r["id"] for r in records]
        assert all(Path(x["image"]).samefile(photo_dir / r["images"][0]) for x, r in zip(llava, records))
    info = json.loads((other / "dataset_info.json").read_text())
    assert set(info) == {"facellm_train", "facellm_test"}

    rc, _, err = run(capsys, "data", "export", photo_dir, "--formats", "sharegpt,csv", "--out", tmp_path / "o2")
    assert rc == 2 and "unknown export formats ['csv']" in err


def test_leakage_finds_a_jpeg_copy_and_not_unrelated_photos(photo_dir, tmp_path, capsys):
    camera = next(r for r in load_splits(photo_dir)["test"])["images"][0]
    bench = tmp_path / "bench"
    bench.mkdir()
    crop = Image.open(photo_dir / camera)
    crop.resize((crop.width * 9 // 10, crop.height * 9 // 10)).save(bench / "copy.jpg", quality=60)
    Image.fromarray(skimage.data.coffee()).save(bench / "coffee.jpg")
    report = tmp_path / "leaks.json"

    rc, out, err = run(capsys, "data", "leakage", photo_dir, "--against", bench, "--report", report)
    assert rc == 0
    assert "1 leaks: 1 benchmark images, dataset images by split {'test': 1}" in out
    leak_line = next(line for line in out.splitlines() if line.strip().startswith("d="))
    assert str(bench / "copy.jpg") in leak_line and camera in leak_line and "[test]" in leak_line
    data = json.loads(report.read_text())
    assert data["summary"]["leaks"] == 1 and data["benchmark_images"] == 2 and data["dataset_images"] == 2
    (leak,) = data["leaks"]
    assert leak["dataset_image"] == camera and leak["benchmark_image"] == str(bench / "copy.jpg")
    assert leak["distance"] <= 4 and not leak["identical"] and leak["splits"] == ["test"]
    assert sorted(leak["records"]["test"]) == sorted(r["id"] for r in load_splits(photo_dir)["test"])

    rc, out, err = run(capsys, "data", "leakage", photo_dir, "--against", bench, "--fail")
    assert rc == 2 and "1 benchmark images and 0 cross-split pairs leak" in err
    assert json.loads((photo_dir / "leakage.json").read_text())["summary"]["leaks"] == 1  # the default report

    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    Image.fromarray(skimage.data.coffee()).save(unrelated / "coffee.jpg")
    Image.fromarray(skimage.data.chelsea()).save(unrelated / "chelsea.png")
    rc, out, err = run(capsys, "data", "leakage", photo_dir, "--against", unrelated, "--fail",
                       "--report", tmp_path / "clean.json")
    assert rc == 0, err
    assert "0 leaks" in out and "0 near-duplicate pairs, 0 across splits" in out
    clean = json.loads((tmp_path / "clean.json").read_text())
    assert clean["summary"]["leaks"] == 0 and clean["benchmark_images"] == 2 and clean["leaks"] == []


def test_yaml_values_are_checked_against_their_settings_types(tmp_path, capsys):
    (tmp_path / "typo.yaml").write_text(f"out: {tmp_path / 'x'}\nsynthetic: {{n: five}}\n")
    rc, _, err = run(capsys, "data", "build", tmp_path / "typo.yaml")
    assert rc == 2 and f"{tmp_path / 'typo.yaml'}: synthetic.n 'five': expected an integer" in err
    (tmp_path / "source.yaml").write_text(f"out: {tmp_path / 'x'}\nsource: bogus\n")
    rc, _, err = run(capsys, "data", "build", tmp_path / "source.yaml")
    assert rc == 2 and "source 'bogus': expected one of synthetic, fairface," in err
    assert not (tmp_path / "x").exists()
