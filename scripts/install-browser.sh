#!/usr/bin/env bash
# Debian's Chromium for the browser tests of the chat UI (Playwright drives it; Playwright's own
# browser download cannot work offline). Idempotent: returns at once when chromium is installed.
set -euo pipefail
command -v chromium >/dev/null && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null; then
  echo "install-browser: no apt-get here; install Chromium yourself (it must be on PATH as 'chromium')" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
command -v chromium
