#!/usr/bin/env bash
# The whole test suite, once per Keras backend: the backend is fixed when Keras is first imported, so
# each backend runs in its own pytest process. Extra arguments go to pytest (e.g. -k attention).
# KERASLLM_TEST_BACKENDS="jax" bash tests/run.sh runs a subset of backends.
set -euo pipefail
cd "$(dirname "$0")/.."
backends="${KERASLLM_TEST_BACKENDS:-jax torch tensorflow}"
workers=()
if python -c "import xdist" 2>/dev/null; then workers=(-n 2); fi
for backend in $backends; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND="$backend" python -m pytest -q -p no:cacheprovider -p no:benchmark --durations=15 "${workers[@]}" tests "$@"
done
