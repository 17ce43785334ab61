"""Safe defaults that are not a request away from being tested elsewhere: where servers listen, which
weights load, and that a checkpoint's own code never runs."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from facellm.cli import build_parser
from facellm.modeling import load_model, load_processor
from serve.api import warn_if_exposed


@pytest.mark.parametrize("command", [["serve", "--model", "M"], ["chat", "--endpoint", "http://127.0.0.1:8000"]])
def test_servers_listen_on_this_machine_only_unless_told(command, tiny_model_dir, caplog):
    args = build_parser().parse_args([str(tiny_model_dir) if a == "M" else a for a in command])
    assert args.host == "127.0.0.1"
    with caplog.at_level(logging.WARNING):
        warn_if_exposed("0.0.0.0", None)
        warn_if_exposed("127.0.0.1", None)
    assert [r.getMessage() for r in caplog.records] == [
        "binding 0.0.0.0 makes the model reachable from the network without an API key"]


def test_pickled_weights_are_not_loaded(tiny_model_dir, tmp_path):
    """Only safetensors: a checkpoint that ships its weights as a pickle (which can run code on load) is refused."""
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "pickled")
    torch.save(load_file(model_dir / "model.safetensors"), model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(OSError, match="safetensors"):
        load_model(model_dir)


def test_a_checkpoints_own_code_never_runs(tiny_model_dir, tmp_path):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "custom")
    marker = tmp_path / "code-ran"
    (model_dir / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Config", "AutoModelForImageTextToText": "evil.Model",
                          "AutoProcessor": "evil.Processor"}
    (model_dir / "config.json").write_text(json.dumps(config))
    load_model(model_dir)  # the architecture is a known one: loaded by transformers' own class
    load_processor(model_dir)
    assert not marker.exists()


def test_offline_audit_finds_what_affects_the_installed_version_and_skips_withdrawn(tmp_path):
    """scripts/audit_offline.py against a local OSV folder: ranges (fixed, last_affected, never fixed),
    explicit version lists, withdrawn advisories and other ecosystems, on this environment's pytest."""
    import subprocess
    import sys
    from importlib.metadata import version

    current = version("pytest")

    def advisory(name, events=None, versions=(), ecosystem="PyPI", **extra):
        affected = {"package": {"name": "PyTest", "ecosystem": ecosystem}, "versions": list(versions)}
        if events is not None:
            affected["ranges"] = [{"type": "ECOSYSTEM", "events": events}]
        (tmp_path / f"{name}.json").write_text(json.dumps({"id": name, "affected": [affected], **extra}))

    advisory("HIT-RANGE", [{"introduced": "0"}, {"fixed": "999"}])
    advisory("HIT-LAST", [{"introduced": "1.0"}, {"last_affected": current}])
    advisory("HIT-OPEN", [{"introduced": "1.0"}])
    advisory("HIT-LIST", versions=[current])
    advisory("MISS-FIXED", [{"introduced": "0"}, {"fixed": "1.0"}])
    advisory("MISS-LATER", [{"introduced": "999"}])
    advisory("MISS-WITHDRAWN", [{"introduced": "0"}], withdrawn="2024-01-01T00:00:00Z")
    advisory("MISS-NPM", [{"introduced": "0"}], ecosystem="npm")
    script = Path(__file__).parents[1] / "scripts" / "audit_offline.py"
    run = subprocess.run([sys.executable, str(script), "--osv", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    found = sorted(line.split(": ")[1].split()[0] for line in run.stdout.splitlines() if line.startswith("pytest "))
    assert found == ["HIT-LAST", "HIT-LIST", "HIT-OPEN", "HIT-RANGE"]
    assert "4 known vulnerabilities" in run.stdout
