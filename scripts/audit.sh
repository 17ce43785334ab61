#!/usr/bin/env bash
# Known-vulnerability audit of the installed dependencies (pip-audit against PyPI's advisory data).
#   scripts/audit.sh [VENV]        (default .venv)
# pip-audit runs from a throwaway venv, so it adds nothing to facellm's environment. --strict: a
# package whose advisories cannot be fetched fails the audit instead of passing unaudited (this is
# what happens on a machine that reaches a PyPI mirror's package index but not pypi.org's JSON API).
set -euo pipefail
VENV=${1:-.venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/audit"
"$tmp/audit/bin/pip" install -q pip-audit
# local builds: torch 2.13.0+cpu is audited as torch 2.13.0; the editable facellm itself is skipped
"$VENV/bin/pip" freeze --exclude-editable | grep -v " @ file:" | sed 's/+[a-z0-9.]*$//' > "$tmp/requirements.txt"
"$tmp/audit/bin/pip-audit" -r "$tmp/requirements.txt" --no-deps --disable-pip --strict --progress-spinner off "${@:2}"
