"""facellm: face understanding with vision-language models."""

from facellm._compat import patch_torchvision

patch_torchvision()

__version__ = "0.1.0"
