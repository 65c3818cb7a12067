#!/usr/bin/env bash
# Set up .venv and run the main job on the project's own example: a small CNN trained on scikit-learn's
# digits (examples/digits). Per-unit INT8/FP16 sensitivity on the CPU backend, then the fastest mix whose
# accuracy on the held-out digits stays within 0.5 points, with its artifacts in runs/demo/. Planned for a
# throughput deployment (256 samples per inference): at batch 1 this tiny network is launch-bound and the
# estimate keeps it FP32, which the summary would explain.
source "$(dirname "$0")/_env.sh" ""
echo "== trt-mpq inspect examples/digits/digits_cnn.onnx"
.venv/bin/trt-mpq inspect examples/digits/digits_cnn.onnx
echo
echo "== trt-mpq run examples/digits/digits_cnn.onnx --out runs/demo --calib examples/digits/calib.npz \\"
echo "       --eval examples/digits/eval.npz --metric accuracy --max-drop 0.005 --latency-batch 256"
.venv/bin/trt-mpq run examples/digits/digits_cnn.onnx --out runs/demo --calib examples/digits/calib.npz \
  --eval examples/digits/eval.npz --metric accuracy --max-drop 0.005 --latency-batch 256 "$@"
