#!/usr/bin/env bash
# Set up as ./mount.sh does (Debian packages, .venv) and run the whole test suite.
#   tests/run.sh [pytest arguments]      e.g. tests/run.sh -m mount -x
# pytest's "no tests ran" (exit 5) is a failure here, never a silent success.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
./mount.sh --setup >&2
status=0
.venv/bin/python -m pytest -q tests "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests: failing" >&2
fi
exit "$status"
