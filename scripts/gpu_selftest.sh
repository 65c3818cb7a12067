#!/usr/bin/env bash
# On an NVIDIA host: run the GPU test suite (pytest -m gpu tests/gpu) and print a summary to paste into a bug report.
# Python: .venv of this repository, created and given `pip install -e '.[gpu,test]'` when needed; with
# TRT_MPQ_NO_INSTALL=1 nothing is installed and the python3 on PATH is used (activate your environment first).
# Exit status: 0 PASS, 1 FAIL, 2 SKIPPED (no GPU or TensorRT, or no GPU tests collected).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,5s/^# \{0,1\}//p' "$0"
  exit 0
fi

setup_note=""
if [ "${TRT_MPQ_NO_INSTALL:-}" = 1 ]; then
  py="$(command -v python3 || command -v python || true)"
else
  py=.venv/bin/python
  stamp=".venv/.installed[gpu,test]"
  if [ ! -x "$py" ]; then
    echo "gpu_selftest: creating .venv..." >&2
    python3 -m venv .venv || setup_note="could not create .venv with python3"
  fi
  if [ -z "$setup_note" ] && { [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; }; then
    echo "gpu_selftest: pip install -e '.[gpu,test]' into .venv..." >&2
    if "$py" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 \
      && "$py" -m pip install --quiet --disable-pip-version-check -e '.[gpu,test]' >&2; then
      touch "$stamp"
    else
      setup_note="pip install -e '.[gpu,test]' failed (see above)"
    fi
  fi
fi
if [ -z "$py" ] || ! "$py" -c 'pass' >/dev/null 2>&1; then
  setup_note="${setup_note:-no working Python (python3 on PATH or .venv/bin/python)}"
elif [ -z "$setup_note" ] && ! "$py" -c 'import pytest' >/dev/null 2>&1; then
  setup_note="pytest is not installed for $py"
fi

# modver MODULE ATTR DIST: the module's version, "not installed", or why the import failed.
modver() {
  "$py" - "$1" "$2" "$3" 2>/dev/null <<'PY' || echo "unknown (python failed)"
import importlib, importlib.metadata, sys
try:
    mod = importlib.import_module(sys.argv[1])
except ModuleNotFoundError:
    try:
        print(f"{sys.argv[1]} not importable; package {sys.argv[3]} {importlib.metadata.version(sys.argv[3])}")
    except importlib.metadata.PackageNotFoundError:
        print("not installed")
except Exception as e:  # an installed module that fails to import says why
    print(f"import failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
else:
    print(getattr(mod, sys.argv[2], "unknown"))
PY
}

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
rc=5  # pytest's "no tests collected"
tests_note=""
if [ -z "$setup_note" ] && [ -d tests/gpu ]; then
  set +e
  "$py" -m pytest -m gpu tests/gpu -rfEs -q 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  tests_note="pytest exit $rc"
elif [ -z "$setup_note" ]; then
  tests_note="tests/gpu is absent in this checkout"
fi

final="$(grep -E '^(=+ )?(no tests ran|[0-9]+ [a-z]+)(, [0-9]+ [a-z]+)* in [0-9.]+s' "$log" | tail -n 1 || true)"
count() { echo "$final" | grep -oE "[0-9]+ $1" | head -n 1 | cut -d' ' -f1 || true; }
passed="$(count passed)"; failed="$(count failed)"; errors="$(count 'errors?')"; skipped="$(count skipped)"
passed=${passed:-0}; failed=${failed:-0}; errors=${errors:-0}; skipped=${skipped:-0}
skip_reason="$(sed -n 's/^SKIPPED \[[0-9]*\] [^ ]*: //p' "$log" | head -n 1)"

if command -v nvidia-smi >/dev/null 2>&1; then
  gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | paste -sd ';' -)" \
    || gpu="nvidia-smi failed: $gpu"
else
  gpu="nvidia-smi not found"
fi

echo
echo "==== trt-mpq GPU self-test (paste this into a bug report) ===="
echo "date (UTC):   $(date -u '+%Y-%m-%d %H:%M:%S')"
echo "OS:           $(uname -srm)"
if [ -n "$py" ] && "$py" -c 'pass' >/dev/null 2>&1; then
  echo "trt-mpq:      $("$py" -c 'import trt_mpq; print(trt_mpq.__version__)' 2>/dev/null || echo 'not importable')"
  echo "Python:       $("$py" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
  echo "GPU, driver:  $gpu"
  echo "TensorRT:     $(modver tensorrt __version__ tensorrt)"
  echo "cuda-python:  $(modver cuda.bindings __version__ cuda-python)"
  echo "Polygraphy:   $(modver polygraphy __version__ polygraphy)"
else
  echo "Python:       not found"
  echo "GPU, driver:  $gpu"
fi
if [ -n "$py" ] && "$py" -c 'pass' >/dev/null 2>&1; then
  echo "probe:        $("$py" -c 'from trt_mpq.backends.tensorrt import probe; print(probe() or "ok")' 2>&1 | tail -n 1)"
fi
if [ -n "$setup_note" ]; then
  echo "tests:        not run"
else
  echo "tests:        passed=$passed failed=$failed errors=$errors skipped=$skipped ($tests_note)"
  # what differed: each failing test with its first assertion line
  grep -E '^(FAILED|ERROR) ' "$log" | cut -c1-200 | sed 's/^/  /' || true
fi

if [ -n "$setup_note" ]; then
  echo "RESULT: FAIL (setup: $setup_note)"
  exit 1
elif [ "$rc" = 0 ] && [ "$passed" -gt 0 ]; then
  echo "RESULT: PASS"
  exit 0
elif [ "$rc" = 0 ] && [ "$skipped" -gt 0 ]; then
  echo "RESULT: SKIPPED (no GPU or TensorRT: ${skip_reason:-no reason given})"
  exit 2
elif [ "$rc" = 5 ] || [ "$rc" = 0 ]; then
  echo "RESULT: SKIPPED (no GPU tests collected: $tests_note)"
  exit 2
else
  echo "RESULT: FAIL"
  exit 1
fi
