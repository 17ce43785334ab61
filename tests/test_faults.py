"""Faults a long job must survive without losing finished work (the per-stage fault tests live beside
their stages: teacher API faults in test_teacher*, killed training in test_train_features, killed
captioning in test_caption)."""

import hashlib
import resource
import subprocess
import sys

from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.templates import ATTRIBUTES_ONLY
from facellm.records import load_splits


def _files(root):
    """Every visible file's hash (temp files are hidden: ``.name.tmp``)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def test_disk_full_during_export_is_a_clear_error_and_the_dataset_stays_intact(tmp_path):
    data = tmp_path / "data"
    build_synthetic(BuildConfig(out=data, n=60, val_size=6, test_size=6, seed=0, templates=ATTRIBUTES_ONLY))
    before, records = _files(data), load_splits(data)

    def small_disk():  # every file the export writes may grow to 8 KiB, then writes fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    result = subprocess.run([sys.executable, "-m", "facellm.cli", "data", "export", str(data)], capture_output=True,
                            text=True, timeout=300, preexec_fn=small_disk)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"facellm: error: {data}: export failed (File too large" in result.stderr
    assert "files written before stay as they were" in result.stderr
    assert _files(data) == before  # nothing half-written replaced a finished file
    assert load_splits(data) == records
