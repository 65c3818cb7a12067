# Sourced by scripts/test.sh and scripts/demo.sh: make .venv (Python 3.10-3.13) with trt-mpq installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "trt-mpq: '$PY' not found; install Python 3.10-3.13 (or set PYTHON=/path/to/python3.x)" >&2
  exit 2
fi
if ! ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
  echo "trt-mpq: '$PY' does not run; install Python 3.10-3.13 or set PYTHON=/path/to/python3.x" >&2
  exit 2
fi
case "$ver" in
  3.10|3.11|3.12|3.13) ;;
  *) echo "trt-mpq: needs Python 3.10-3.13, found $ver; set PYTHON=/path/to/python3.x" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  echo "setting up .venv (first run only)..." >&2
  "$PY" -m venv .venv
fi
EXTRAS="${1:-}"
stamp=".venv/.installed${EXTRAS}"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS}" >&2
  touch "$stamp"
fi
