#!/usr/bin/env bash
# The tests. Set-up first (timed on its own), then pytest:
#   bash scripts/test.sh          the quick set: everything but the slow, Slurm, browser and end-to-end tests,
#                                 on 2 workers (pytest-xdist), with the package's line coverage (at least 80%)
#   bash scripts/test.sh --all    everything (slow, Slurm when SLURM_CONF points at a live cluster, browser,
#                                 the demo and the embedded default end to end): what .ci/run calls
# Further arguments go to pytest (e.g. -k NAME, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/setup.sh
echo "[test] set-up: $((SECONDS - start)) s" >&2

all=0
args=()
for arg in "$@"; do
  if [[ $arg == --all ]]; then all=1; else args+=("$arg"); fi
done

.venv/bin/ruff check .
start=$SECONDS
status=0
if ((all)); then
  if ! command -v chromium >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "[test] installing chromium for the report tests" >&2
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core) >/dev/null
  fi
  # the CPU-heavy end-to-end tests time their own stages: one worker, so that nothing else shares the cores
  .venv/bin/python -m pytest "${args[@]}" || status=$?
else
  .venv/bin/python -m pytest -n 2 -m "not slow and not slurm and not browser and not demo and not default" \
    --cov=workbench --cov-report=term:skip-covered --cov-fail-under=80 "${args[@]}" || status=$?
fi
echo "[test] pytest: $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s" >&2
exit $status
