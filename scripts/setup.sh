#!/usr/bin/env bash
# Installs everything StarCard needs on a fresh Debian machine (run as root there), then
# creates .venv and installs the project with its dev tools. Safe to run again: it only
# installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v pcscd >/dev/null 2>&1 || need_apt+=(pcscd)
[ -f /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] || need_apt+=(vsmartcard-vpcd)
pkg-config --exists libpcsclite 2>/dev/null || need_apt+=(libpcsclite-dev pkg-config)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
command -v opensc-tool >/dev/null 2>&1 || need_apt+=(opensc)
command -v vicc >/dev/null 2>&1 || need_apt+=(vsmartcard-vpicc)
command -v pcsc_scan >/dev/null 2>&1 || need_apt+=(pcsc-tools)
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need_apt+=(fonts-wqy-microhei)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # citizen-page browser tests
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)  # make bench: verifier_http_rps load generator
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv python3-dev)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing system packages: ${need_apt[*]}; run 'make setup' as root (apt-get install)" >&2
    exit 1
  fi
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: StarCard needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
touch .venv/.starcard-setup
echo "setup: ready (.venv)"
