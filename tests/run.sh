#!/usr/bin/env bash
# The whole test suite, once per Keras backend: the backend is fixed when Keras is first imported, so
# each backend runs in its own pytest process. Extra arguments go to pytest (e.g. -k attention).
# KERASLLM_TEST_BACKENDS="jax" bash tests/run.sh runs a subset of backends.
set -euo pipefail
cd "$(dirname "$0")/.."
backends="${KERASLLM_TEST_BACKENDS:-jax torch tensorflow}"
workers=()
if python -c "import xdist" 2>/dev/null; then
  # loadgroup: a file marked with xdist_group (one with costly module fixtures) runs in one worker, so
  # those fixtures are built once instead of once per worker.
  workers=(-n 2 --dist loadgroup)
  # Two workers already fill the two cores; a thread pool per worker on top only adds contention
  # (torch's part of the suite ran 28% faster with one thread each on this machine).
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  # The same for TensorFlow's own pools: a TF subset (tests/quantization and tests/models/test_lora.py)
  # ran ~7% faster, 72 vs 77 s, measured twice in both orders; the full run's gain is not measured.
  export TF_NUM_INTRAOP_THREADS="${TF_NUM_INTRAOP_THREADS:-1}" TF_NUM_INTEROP_THREADS="${TF_NUM_INTEROP_THREADS:-1}"
fi
# JAX's persistent compilation cache, fresh for this run: tests (and the subprocesses of the resume
# tests) that compile the same tiny programs reuse them instead of compiling again.
jax_cache="$(mktemp -d)"
trap 'rm -rf "$jax_cache"' EXIT
export JAX_COMPILATION_CACHE_DIR="$jax_cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
for backend in $backends; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND="$backend" python -m pytest -q -p no:cacheprovider -p no:benchmark --durations=15 "${workers[@]}" tests "$@"
done
