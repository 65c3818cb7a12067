#!/usr/bin/env bash
# Build the TensorRT engine of a planned run folder (see --help). Needs an NVIDIA GPU and TensorRT.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/build_engine.sh RUN_DIR [extra trt-mpq build options]

Builds the TensorRT engine for a folder written by `trt-mpq plan` or `trt-mpq run` (it holds plan.json and
model.mixed.onnx) by calling `trt-mpq build RUN_DIR --backend tensorrt [options]`.
Options are passed on, e.g. --opt-level N (builder optimization level 0-5) or --batch N.

Writes RUN_DIR/model.engine, RUN_DIR/timing.cache, RUN_DIR/build.log and RUN_DIR/layers.json.
Exit status: 0 built as planned; 2 error; 3 built, but the precisions TensorRT realised differ from plan.json.
An engine loads only with the TensorRT version (and on the GPU model) that built it: build where you deploy.
Uses trt-mpq from PATH, else .venv/bin/trt-mpq of this repository (pip install '.[gpu]' or docker/Dockerfile).
USAGE
}

if [ $# -eq 0 ]; then
  echo "usage: scripts/build_engine.sh RUN_DIR [extra trt-mpq build options] (--help for more)" >&2
  exit 2
fi
case "$1" in
  -h|--help) usage; exit 0 ;;
esac
run_dir="$1"
shift

if [ ! -d "$run_dir" ]; then
  echo "build_engine.sh: '$run_dir' is not a folder; give the --out folder of 'trt-mpq plan' or 'trt-mpq run'" >&2
  exit 2
fi
missing=()
for f in plan.json model.mixed.onnx; do
  [ -f "$run_dir/$f" ] || missing+=("$f")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build_engine.sh: '$run_dir' has no ${missing[*]}; make it with 'trt-mpq plan' or 'trt-mpq run' first" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if command -v trt-mpq >/dev/null 2>&1; then
  trt_mpq=trt-mpq
elif [ -x "$root/.venv/bin/trt-mpq" ]; then
  trt_mpq="$root/.venv/bin/trt-mpq"
else
  echo "build_engine.sh: trt-mpq not found; run pip install '.[gpu]' on an NVIDIA host, or use docker/Dockerfile" >&2
  exit 2
fi

rc=0
"$trt_mpq" build "$run_dir" --backend tensorrt "$@" || rc=$?
case "$rc" in
  0) echo "build_engine.sh: engine written to $run_dir/model.engine (log: $run_dir/build.log)" >&2 ;;
  3) echo "build_engine.sh: engine built, but its precisions differ from plan.json: see $run_dir/layers.json" >&2 ;;
esac
exit "$rc"
