"""facellm: face understanding with vision-language models."""

from facellm._compat import install_import_hook

install_import_hook()

__version__ = "0.1.0"
