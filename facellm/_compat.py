"""Make PyPI's torchvision importable beside the CPU build of torch, in every process.

PyPI's torchvision wheels are CUDA builds: their C ops (``torchvision::nms`` ...)
cannot load next to ``torch==2.13.0+cpu``, and ``import torchvision`` then dies
while registering fake kernels for ops that were never defined. transformers
needs torchvision importable for the video processors that Qwen2-VL-style
processors carry, even when only images are processed, and so does vLLM.

``install_import_hook`` puts a finder in front of ``import torchvision``: just
before torchvision loads, it loads torchvision's C ops itself and, only when they
cannot load, declares the two op schemas torchvision fakes unconditionally. GPU
sites, where the ops load, are untouched. ``facellm`` installs the hook when it
is imported; ``scripts/install.sh`` also installs it at interpreter start-up
(a ``.pth`` file) where torchvision is broken, for the processes vLLM spawns.
This module imports nothing of facellm, so start-up can load it on its own.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the op definitions alive for the life of the process


def _ops_defined() -> bool:
    import torch

    try:
        return torch.ops.torchvision.nms is not None
    except (AttributeError, RuntimeError):
        return False


def _prepare_torchvision_ops(package_dir: Path) -> None:
    global _library
    import torch

    if _ops_defined():  # loaded, or declared by the start-up hook
        return
    for library in package_dir.glob("_C*.so"):
        try:
            torch.ops.load_library(str(library))
            return  # the real ops: nothing to declare
        except (OSError, RuntimeError):
            break
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _TORCHVISION_SCHEMAS:
        _library.define(schema)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)  # once; then the normal finders import it
            spec = importlib.util.find_spec("torchvision")
            if spec is not None and spec.origin:
                _prepare_torchvision_ops(Path(spec.origin).parent)
        return None


def install_import_hook() -> None:
    """Prepare torchvision's ops when (and only if) torchvision is imported; a no-op once it is."""
    # by class name: the start-up hook loads this file as a module of its own
    if "torchvision" in sys.modules or any(type(f).__name__ == "_BeforeTorchvision" for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BeforeTorchvision())
