#!/usr/bin/env bash
# Set up .venv with the test dependencies and run the test suite (extra arguments go to pytest).
# Real-model tests use ../shared/models and skip, saying why, when it is absent. The datagen extra (onnx2torch
# and PyTorch) is installed so that the gradient-based generator is tested too.
source "$(dirname "$0")/_env.sh" "[test,datagen]"
.venv/bin/python -m ruff check trt_mpq tests scripts examples
exec .venv/bin/python -m pytest -q -rs "$@"
