"""A server for one job (captioning, the demo): the chosen engine on a free local port, stopped afterwards.

Jobs talk to it over HTTP like to any other endpoint, so they run the same against a remote server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from facellm.modeling import serving_max_model_len, serving_pixel_budget
from serve.process import ServerProcess


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def choose_engine(engine: str, adapters: dict[str, str]) -> str:
    """``auto``: vLLM where installed and able to serve the adapters as trained, else the embedded engine."""
    from serve.vllm_server import VLLMError, check_adapter, vllm_available

    if engine != "auto":
        return engine
    if not vllm_available():
        return "transformers"
    try:
        for name, path in adapters.items():
            check_adapter(name, path)
    except VLLMError as e:
        print(f"facellm: using the transformers engine: {e}", file=sys.stderr)
        return "transformers"
    return "vllm"


def server_process(model: str | Path, adapters: dict[str, str] | None = None, engine: str = "auto",
                   served_name: str = "base", min_pixels: int | None = None, max_pixels: int | None = None,
                   port: int = 0, log_path: str | Path | None = None) -> ServerProcess:
    """``model`` (served as ``served_name``) and its adapters on 127.0.0.1 (``port`` 0: a free one), in a
    process of its own, not started yet (``with server as url:``). ``log_path``: the server's output."""
    adapters = dict(adapters or {})
    min_pixels, max_pixels = serving_pixel_budget(model, adapters.values(), min_pixels, max_pixels)
    port = port or free_port()
    if choose_engine(engine, adapters) == "vllm":
        from serve.vllm_server import VLLMServer, VLLMSettings

        return VLLMServer(VLLMSettings(model=str(model), served_name=served_name, adapters=adapters, port=port,
                                       min_pixels=min_pixels, max_pixels=max_pixels,
                                       max_model_len=serving_max_model_len(model, adapters.values())), log_path)
    # a process of its own, as `facellm serve` runs: in the job's process the engine's Python would share
    # one GIL with the job's client threads (measured: 2.5x slower batch captioning)
    command = [sys.executable, "-m", "facellm.cli", "serve", "--model", str(model), "--engine", "transformers",
               "--served-name", served_name, "--port", str(port)]
    command += [a for name, path in adapters.items() for a in ("--adapter", f"{name}={path}")]
    command += ["--min-pixels", str(min_pixels)] if min_pixels else []
    command += ["--max-pixels", str(max_pixels)] if max_pixels else []
    return ServerProcess("facellm serve --engine transformers", command, dict(os.environ), f"http://127.0.0.1:{port}",
                         log_path=log_path)


@contextlib.contextmanager
def local_server(model: str | Path, adapters: dict[str, str] | None = None, engine: str = "auto",
                 served_name: str = "base", min_pixels: int | None = None, max_pixels: int | None = None,
                 port: int = 0, log_path: str | Path | None = None) -> Iterator[str]:
    """Yields the base URL of :func:`server_process`'s server, stopped afterwards."""
    with server_process(model, adapters, engine, served_name, min_pixels, max_pixels, port, log_path) as url:
        yield url
