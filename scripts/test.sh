#!/usr/bin/env bash
# Run the whole test suite as CI does: set-up, headless Chromium for the report tests, then pytest
# (fast, slow, browser; Slurm tests run when SLURM_CONF points at a live cluster: .ci/run starts one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "[test] installing chromium for the report tests" >&2
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core) >/dev/null
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
