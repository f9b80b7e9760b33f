#!/usr/bin/env bash
# The main job on the embedded default: set-up, then the CPU sweep, fit, plan, flagship run and report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/workbench demo "$@"
