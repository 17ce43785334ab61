"""Make PyPI's torchvision importable beside the CPU build of torch.

PyPI's torchvision wheels are CUDA builds: their C ops (``torchvision::nms`` ...)
cannot load next to ``torch==2.13.0+cpu``, and ``import torchvision`` then dies
while registering fake kernels for ops that were never defined. transformers
needs torchvision importable for the video processors that Qwen2-VL-style
processors carry, even when only images are processed.

When the C ops are missing we declare the two op schemas torchvision registers
fake kernels for unconditionally. Nothing here runs when torchvision's own ops
load (GPU sites), or when torchvision is not installed at all.
"""

from __future__ import annotations

import importlib.util

_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the op definitions alive for the life of the process


def _torchvision_ops_load() -> bool:
    import torch

    try:
        return torch.ops.torchvision.nms is not None
    except (AttributeError, RuntimeError):
        return False


def patch_torchvision() -> None:
    global _library
    if _library is not None or importlib.util.find_spec("torchvision") is None:
        return
    import torch

    try:
        import torchvision.extension  # noqa: F401  (loads the C ops when they can load)
    except RuntimeError:
        pass  # the fake-op registration failed; the definitions below fix the retry
    if _torchvision_ops_load():
        return
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _TORCHVISION_SCHEMAS:
        _library.define(schema)
