"""Every command that takes paths: bad input gives one clear line naming it, a non-zero exit, no traceback."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest


def facellm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "facellm.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def assert_clean_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no error message"
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("args,fragments", [
    (["train", "nope.yaml"], ["nope.yaml", "no such config file"]),
    (["train", "--model", "no-model", "--data", "no-data"], ["no-model"]),
    (["train", "--set", "max_steps"], ["max_steps", "key=value"]),
    (["eval", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--data", "missing-dir", "--out", "o"],
     ["missing-dir", "no such directory"]),
    (["serve", "--model", "missing-model"], ["missing-model", "no such directory"]),
    (["serve", "--model", ".", "--adapter", "oops"], ["oops", "NAME=DIR"]),
    (["tiny-model", "--family", "gpt2", "--out", "x"], ["gpt2", "unsupported"]),
    (["tiny-model", "--out", "x", "--corpus", "missing.txt"], ["missing.txt"]),
    (["data", "build", "--n", "2", "--out", "x"], ["synthetic.n 2", "--n", "at least 3"]),
    (["demo", "--out", "."], ["not empty"]),
    (["data", "build", "--out", "a-file"], ["a-file", "not a directory"]),
    (["data", "build", "--source", "fairface", "--out", "o"], ["--root"]),
    (["data", "build", "--source", "folder", "--root", "not-empty", "--out", "o"], ["--labels"]),
    (["data", "build", "--source", "fairface", "--root", "not-empty", "--out", "o"], ["fairface_label_train.csv"]),
    (["tiny-model", "--out", "a-file"], ["a-file", "not a directory"]),
    (["train", "--output", "a-file"], ["a-file", "not a directory"]),
    (["demo", "--out", "a-file"], ["a-file", "not a directory"]),
])
def test_bad_paths_and_settings_fail_cleanly(args, fragments, tmp_path):
    (tmp_path / "not-empty").mkdir()
    (tmp_path / "not-empty" / "file").write_text("x")
    (tmp_path / "a-file").write_text("x")
    args = [str(tmp_path / "not-empty") if a in (".", "not-empty") else a for a in args]
    assert_clean_error(facellm(*args, cwd=tmp_path), *fragments)


def test_train_rejects_bad_yaml_and_unknown_settings(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: [1,\n")
    assert_clean_error(facellm("train", bad), "bad.yaml", "not valid YAML")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("max_stepz: 3\n")
    assert_clean_error(facellm("train", unknown), "max_stepz")


def test_eval_names_a_directory_that_is_not_a_dataset(tmp_path):
    assert_clean_error(facellm("eval", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--data", tmp_path,
                               "--out", tmp_path / "o"), str(tmp_path), "no dataset/")


def test_serve_names_a_directory_that_is_not_a_model(tmp_path):
    assert_clean_error(facellm("serve", "--model", tmp_path), str(tmp_path), "config.json")


def test_help_explains_every_command():
    result = facellm("--help")
    assert result.returncode == 0
    for command in ("tiny-model", "data", "train", "eval", "serve", "chat", "demo"):
        assert command in result.stdout


def test_tiny_model_list():
    result = facellm("tiny-model", "--list")
    assert result.returncode == 0 and "qwen2_vl" in result.stdout.split()


def test_clients_name_an_unreachable_endpoint(tmp_path):
    from data_pipeline.build import BuildConfig, build_synthetic

    build_synthetic(BuildConfig(out=tmp_path / "d", n=3, val_size=1, test_size=1))
    dead = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
    assert_clean_error(facellm("eval", "--endpoint", dead, "--model", "m", "--data", tmp_path / "d",
                               "--out", tmp_path / "o"), dead, "cannot reach")
    assert_clean_error(facellm("chat", "--endpoint", dead), dead, "cannot list models")


STAGES = {"data_pipeline", "finetune", "serve"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file, function bodies too: lazy imports count."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module or ""))
    return found


def test_core_modules_never_import_a_stage():
    """Dependencies point one way: the stages import facellm core, never the reverse. Only the composition
    (facellm/cli/, and facellm/demo.py, which runs the whole loop) wires stages together."""
    core = Path(__file__).resolve().parents[1] / "facellm"
    checked, offenders = [], []
    for path in sorted(core.rglob("*.py")):
        rel = path.relative_to(core)
        if rel.parts[0] == "cli" or rel == Path("demo.py"):
            continue
        checked.append(rel.as_posix())
        offenders += [f"facellm/{rel}:{line} imports {name}" for line, name in imports(path)
                      if name.split(".")[0] in STAGES]
    assert {"schema.py", "config.py", "eval/attributes.py"} <= set(checked), checked
    assert not offenders, offenders


def test_stages_never_import_each_other():
    """data_pipeline, finetune and serve hand over through files and the HTTP API, not imports."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for stage in sorted(STAGES):
        for path in sorted((root / stage).rglob("*.py")):
            offenders += [f"{path.relative_to(root)}:{line} imports {name}" for line, name in imports(path)
                          if name.split(".")[0] in STAGES - {stage}]
    assert not offenders, offenders
