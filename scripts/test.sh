#!/usr/bin/env bash
# Set up .venv with the test dependencies and run the test suite (extra arguments go to pytest).
# Real-model tests use ../shared/models and skip, saying why, when it is absent.
source "$(dirname "$0")/_env.sh" "[test]"
.venv/bin/python -m ruff check trt_mpq tests scripts examples
exec .venv/bin/python -m pytest -q -rs "$@"
