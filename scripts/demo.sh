#!/usr/bin/env bash
# Set up .venv and run the main job on the project's own example: a small CNN trained on scikit-learn's
# digits (examples/digits), per-unit INT8/FP16 sensitivity on the CPU backend. Output: runs/demo/.
source "$(dirname "$0")/_env.sh" ""
echo "== trt-mpq inspect examples/digits/digits_cnn.onnx"
.venv/bin/trt-mpq inspect examples/digits/digits_cnn.onnx
echo
echo "== trt-mpq analyze examples/digits/digits_cnn.onnx --calib examples/digits/calib.npz --out runs/demo"
.venv/bin/trt-mpq analyze examples/digits/digits_cnn.onnx --calib examples/digits/calib.npz --out runs/demo "$@"
