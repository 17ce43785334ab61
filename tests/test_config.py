"""facellm.config: typed settings from YAML, ``--set`` overrides and flags, the same way for every stage
(`facellm train`'s TrainConfig, `facellm data build`'s DataBuildConfig)."""

from dataclasses import dataclass, field

import pytest
import yaml

from data_pipeline.config import DataBuildConfig, build_config, ingest_config, teacher_config
from facellm.config import Config, ConfigError
from finetune.config import TrainConfig

RECIPE = "finetune/configs/tiny-synthetic.yaml"  # sets max_steps: 1600
EPOCH_RECIPE = "finetune/configs/smolvlm-256m-cpu.yaml"  # sets epochs: 1


@dataclass
class Section:
    size: int = 1
    names: tuple[str, ...] = ("a",)


@dataclass
class Toy(Config):
    RENAMED = {"old-size": "section.size"}
    EXCLUSIVE = (("steps", "epochs"),)

    rate: float = 0.1
    steps: int | None = None
    epochs: float | None = None
    flag: bool = False
    mode: str = "no"
    pair: tuple[float, float] = (0.9, 0.98)
    tags: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    section: Section = field(default_factory=Section)


def write(tmp_path, text: str, name: str = "c.yaml"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_yaml_then_set_then_values_each_win(tmp_path):
    path = write(tmp_path, "rate: 0.5\nsection: {size: 3, names: [x, y]}\ncolumns: {image: img}\nflag: true\n")
    cfg = Toy.from_yaml(path, ["section.size=4", "rate=2e-3", "columns.age=years"], {"section.size": 5})
    assert cfg.section == Section(size=5, names=("x", "y"))  # the value beat --set, which beat the file
    assert cfg.rate == 0.002 and isinstance(cfg.rate, float)  # YAML 1.1 reads 2e-3 as text: still a number
    assert cfg.columns == {"image": "img", "age": "years"} and cfg.flag is True
    assert Toy.from_yaml(None) == Toy()


def test_values_are_typed_by_their_field(tmp_path):
    cfg = Toy.from_yaml(write(tmp_path, "mode: no\npair: [1, 2]\ntags: [a]\nsection: {names: b, size: '7'}\n"))
    assert cfg.mode == "no"  # YAML 1.1 reads a bare `no` as false
    assert cfg.pair == (1.0, 2.0) and cfg.tags == ["a"] and cfg.section == Section(size=7, names=("b",))
    assert Toy.from_yaml(None, ["section.names=x, y,"]).section.names == ("x", "y")  # a comma list, as flags
    for override, message in [("rate=fast", "rate 'fast': expected a number"),
                              ("section.size=1.5", "section.size 1.5: expected an integer"),
                              ("flag=maybe", "flag 'maybe': expected true or false"),
                              ("pair=[1]", "pair [1]: expected 2 values"),
                              ("section=3", "section: expected a mapping of section.size, section.names"),
                              ("rate.x=1", "rate has no settings of its own")]:
        with pytest.raises(ConfigError) as e:
            Toy.from_yaml(None, [override])
        assert str(e.value).startswith(f"--set {override}: ") and message in str(e.value)


def test_unknown_and_renamed_keys_name_the_file_and_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        Toy.from_yaml(write(tmp_path, "rate: 1\nsection: {sise: 2}\n"))
    assert str(e.value) == (f"{tmp_path / 'c.yaml'}: unknown setting 'section.sise'; "
                            "known: section.size, section.names")
    with pytest.raises(ConfigError) as e:
        Toy.from_yaml(write(tmp_path, "ratee: 1\n"))
    assert str(e.value).endswith("unknown setting 'ratee'; known: rate, steps, epochs, flag, mode, pair, tags, "
                                 "columns, section.size, section.names")
    with pytest.raises(ConfigError, match=r"c.yaml: setting 'old-size' is now 'section.size'"):
        Toy.from_yaml(write(tmp_path, "old-size: 2\n"))
    with pytest.raises(ConfigError, match=r"override 'rate': expected key=value"):
        Toy.from_yaml(None, ["rate"])


def test_exclusive_settings(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: set steps or epochs, not both"):
        Toy.from_yaml(write(tmp_path, "steps: 3\nepochs: 1\n"))
    steps = write(tmp_path, "steps: 3\n", "steps.yaml")
    assert (Toy.from_yaml(steps, ["epochs=2"]).steps, Toy.from_yaml(steps, ["epochs=2"]).epochs) == (None, 2.0)
    assert Toy.from_yaml(steps, values={"epochs": 2}).steps is None
    with pytest.raises(ConfigError, match=r"--set steps=4: set steps or epochs, not both"):
        Toy.from_yaml(steps, ["epochs=2", "steps=4"])


def test_save_writes_yaml_that_reloads_into_an_equal_config(tmp_path):
    cfg = Toy.from_yaml(None, ["section.names=[p, q]", "columns.image=img", "pair=[0.5, 0.6]", "mode=bf16"])
    path = cfg.save(tmp_path / "run" / "saved.yaml")
    assert Toy.from_yaml(path) == cfg
    assert cfg.to_dict()["section"] == {"size": 1, "names": ["p", "q"]} and cfg.to_dict()["pair"] == [0.5, 0.6]
    assert yaml.safe_load(path.read_text()) == cfg.to_dict()  # plain YAML, no Python tags
    assert [p.name for p in path.parent.iterdir()] == ["saved.yaml"]


# ----------------------------------------------------------------------------- TrainConfig

def test_train_recipe_sets_max_steps_or_epochs_and_an_override_replaces_the_other(tmp_path):
    assert (TrainConfig.from_yaml(RECIPE).max_steps, TrainConfig.from_yaml(RECIPE).epochs) == (1600, None)
    by_epochs = TrainConfig.from_yaml(RECIPE, ["epochs=2"])
    assert (by_epochs.max_steps, by_epochs.epochs) == (None, 2.0)
    by_steps = TrainConfig.from_yaml(EPOCH_RECIPE, ["max_steps=50"])
    assert (by_steps.max_steps, by_steps.epochs) == (50, None)
    neither = TrainConfig.from_yaml(None)
    assert (neither.max_steps, neither.epochs) == (None, None)  # the loop trains DEFAULT_MAX_STEPS
    both = write(tmp_path, "max_steps: 10\nepochs: 1\n", "both.yaml")
    with pytest.raises(ConfigError, match=r"both.yaml: set max_steps or epochs, not both"):
        TrainConfig.from_yaml(both)
    with pytest.raises(ConfigError, match="epochs 0.0: expected a number above 0"):
        TrainConfig.from_yaml(RECIPE, ["epochs=0"])
    with pytest.raises(ConfigError, match="max_steps 0: expected at least 1"):
        TrainConfig.from_yaml(EPOCH_RECIPE, ["max_steps=0"])


def test_train_config_keeps_its_own_checks(tmp_path):
    cfg = TrainConfig.from_yaml(RECIPE, ["lora.r=8", "learning_rate=3e-4", "mixed_precision=no"],
                                {"model": "m", "data": "d"})
    assert (cfg.lora.r, cfg.learning_rate, cfg.mixed_precision, cfg.model, cfg.data) == (8, 3e-4, "no", "m", "d")
    assert cfg.train_vision_tower is True  # from the recipe
    for override, message in [("method=qlora-ish", "method 'qlora-ish': expected lora, qlora or full"),
                              ("mixed_precision=fp8", "mixed_precision 'fp8': expected no, bf16 or fp16"),
                              ("report_to=[mlflow]", "report_to ['mlflow']: expected tensorboard and/or wandb")]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            TrainConfig.from_yaml(RECIPE, [override])
    assert TrainConfig.from_yaml(cfg.save(tmp_path / "train.yaml")) == cfg


# ----------------------------------------------------------------------------- DataBuildConfig

def test_data_build_config_makes_the_stage_configs(tmp_path):
    cfg = DataBuildConfig.from_yaml("data_pipeline/configs/fairface-teacher.yaml",
                                    ["faces.dedupe=3", f"out={tmp_path}", "columns.image=img"])
    ingest = ingest_config(cfg)
    assert (ingest.source, str(ingest.root), ingest.out, ingest.min_face, ingest.dedupe, ingest.columns) == (
        "fairface", "data/raw/fairface", tmp_path, 48, 3, {"image": "img"})
    assert ingest.templates.refusal_rate == 0.1 and ingest.templates.kinds[0] == "attributes"
    teacher = teacher_config(cfg)
    assert (teacher.url, teacher.model, teacher.qa_per_category, teacher.concurrency, teacher.max_retries) == (
        "http://127.0.0.1:8001/v1", "Qwen/Qwen2.5-VL-72B-Instruct", 2, 16, 6)

    synthetic = DataBuildConfig.from_yaml("data_pipeline/configs/synthetic-scenes.yaml", [f"out={tmp_path}"])
    build = build_config(synthetic)
    assert (build.n, build.scene.max_faces, build.scene.lighting, build.scene.blur) == (
        5000, 3, ("normal", "dim", "bright", "side"), 0.2)
    assert teacher_config(synthetic) is None


@pytest.mark.parametrize("overrides, message", [
    (["source=imagenet"], "source 'imagenet': expected one of synthetic, fairface"),
    ([], "no output directory"),
    (["out=o", "source=fairface"], "source fairface needs root"),
    (["out=o", "synthetic.n=2"], "synthetic.n 2 (--n): need at least 3 images"),
    (["out=o", "faces.multi_face=all"], "faces.multi_face 'all': expected skip or each"),
    (["out=o", "teacher.url=http://h/v1"], "teacher.url needs teacher.model"),
    (["out=o", "val_size=-1"], "expected sizes >= 0"),
    (["out=o", "templates.kinds=[trivia]"], "unknown template kinds ['trivia']"),
    (["out=o", "synthetic.lighting=[neon]"], "unknown lighting ['neon']"),
    (["out=o", "synthetic.blur=2"], "blur 2.0: expected a probability"),
])
def test_data_build_config_validation(overrides, message):
    with pytest.raises(ConfigError) as e:
        DataBuildConfig.from_yaml(None, overrides)
    assert message in str(e.value)
