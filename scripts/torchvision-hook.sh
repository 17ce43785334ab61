#!/usr/bin/env bash
# Usage: scripts/torchvision-hook.sh VENV
# Where PyPI's torchvision (a CUDA build) cannot import beside CPU torch, fix it at interpreter start-up
# with facellm's hook (facellm/_compat.py declares the op schemas torchvision fakes), so that processes
# that never import facellm (vLLM's workers, other tools' venvs) can load the processors too. Written on
# every run, so a clone that has moved leaves no stale hook behind. Used by install.sh and compat.sh.
set -euo pipefail
VENV=$1
COMPAT="$(cd "$(dirname "$0")/.." && pwd)/facellm/_compat.py"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -f "$SITE/facellm-torchvision.pth"
if ! "$VENV/bin/python" -c "import torchvision" >/dev/null 2>&1; then
  # one module instance per process (site-packages is scanned twice where lib64 links to lib): it holds
  # the op declarations, which must live as long as the process
  "$VENV/bin/python" - "$SITE" "$COMPAT" <<'PY'
import pathlib, sys
site, compat = sys.argv[1:]
line = ("import sys, importlib.util as u; n = 'facellm_torchvision_hook'; "
        f"s = None if n in sys.modules else u.spec_from_file_location(n, {compat!r}); "
        "m = s and sys.modules.setdefault(n, u.module_from_spec(s)); "
        "m and (s.loader.exec_module(m), m.install_import_hook())")
pathlib.Path(site, "facellm-torchvision.pth").write_text(line + "\n")
PY
  "$VENV/bin/python" -c "import torchvision" || { echo "torchvision still cannot import; see facellm/_compat.py" >&2; exit 1; }
fi
