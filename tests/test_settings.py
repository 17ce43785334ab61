"""Every setting does what it says: no field of a config dataclass is declared but read nowhere, and
every shipped recipe/config YAML holds only known settings.

Static on purpose: a setting that no code reads can pass every behavioural test (``epochs`` once did: the
recipes set it and the loop never looked). A field counts as read when some code outside its own class
body reads ``<anything>.<field>``; validation inside the class does not count.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("facellm", "data_pipeline", "finetune", "serve")
CONFIG_NAME = re.compile(r"(Config|Settings|Options)$")


def sources() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


def is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if (isinstance(target, ast.Name) and target.id == "dataclass") or (
                isinstance(target, ast.Attribute) and target.attr == "dataclass"):
            return True
    return False


def config_classes(trees: dict[Path, ast.Module]) -> list[tuple[Path, ast.ClassDef]]:
    return [(path, node) for path, tree in trees.items() for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and CONFIG_NAME.search(node.name) and is_dataclass(node)]


def fields(node: ast.ClassDef) -> list[str]:
    return [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            and not (isinstance(s.annotation, ast.Name) and s.annotation.id == "ClassVar")]


def attribute_reads(tree: ast.AST, skip: ast.AST | None = None) -> set[str]:
    inside = {id(n) for n in ast.walk(skip)} if skip is not None else set()
    return {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load) and id(n) not in inside}


def test_config_classes_are_found():
    names = {node.name for _, node in config_classes(sources())}
    # the stages' settings: training, data build, serving, captioning (the set must not silently shrink)
    assert {"TrainConfig", "LoraSettings", "DataBuildConfig", "TemplateOptions", "TeacherConfig", "VLLMSettings",
            "CaptionConfig"} <= names, names


@pytest.mark.parametrize("path_and_class", config_classes(sources()),
                         ids=lambda pc: f"{pc[0].relative_to(ROOT)}:{pc[1].name}")
def test_every_config_field_is_read(path_and_class):
    path, cls = path_and_class
    trees = sources()
    reads = set()
    for other, tree in trees.items():
        reads |= attribute_reads(tree, skip=cls if other == path else None)
    unread = [f for f in fields(cls) if f not in reads]
    assert not unread, f"{cls.name} ({path.relative_to(ROOT)}) declares settings no code reads: {unread}"


def test_the_check_catches_an_unread_setting():
    tree = ast.parse("from dataclasses import dataclass\n\n@dataclass\nclass RunConfig:\n    steps: int = 1\n"
                     "    epochs: float = 0\n\n    def check(self):\n        return self.epochs > 0\n\n"
                     "def run(cfg):\n    return cfg.steps\n")
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))
    assert is_dataclass(cls) and fields(cls) == ["steps", "epochs"]
    reads = attribute_reads(tree, skip=cls)
    assert "steps" in reads and "epochs" not in reads  # read only by the class's own validation


RECIPES = sorted((ROOT / "finetune" / "configs").glob("*.yaml"))  # accelerate/ configs are accelerate's
BUILDS = sorted((ROOT / "data_pipeline" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_hold_only_known_settings(recipe):
    from finetune.config import TrainConfig

    cfg = TrainConfig.from_yaml(recipe)  # unknown keys raise, naming the valid ones
    assert (cfg.max_steps is None) != (cfg.epochs is None), f"{recipe.name}: set max_steps or epochs"


@pytest.mark.parametrize("build", BUILDS, ids=lambda p: p.name)
def test_shipped_data_build_configs_hold_only_known_settings(build):
    from data_pipeline.config import DataBuildConfig

    assert DataBuildConfig.from_yaml(build)


def test_there_are_shipped_configs_to_check():
    assert len(RECIPES) >= 4 and len(BUILDS) >= 2
