#!/usr/bin/env bash
# GPU suite: GPT-2 124M training tokens/s (kerasllm and KerasHub, jax and torch, bf16, flash attention
# checked in the training step), generation tokens/s, targets met / missed; tables in OUT/gpu_suite.md,
# numbers in OUT/gpu_suite.json, worker logs in OUT/gpu_suite.log. The logic is benchmarks/gpu_suite.py.
#
#   bash benchmarks/gpu_suite.sh [--smoke] [--out DIR] [--wheels DIR] [--budget-s S] [gpu_suite.py options]
#
# --smoke: tiny shape, CPU only, a few steps, about a minute on 2 cores (tests/test_gpu_suite_smoke.py runs
# it in CI); its numbers are not measurements. --out defaults to $OUT if set, else /tmp/gpu_suite.
# --budget-s: seconds for the whole script (default 450 on GPU, 240 with --smoke): variants run one at a
# time, each under its own timeout, and one that no longer fits is reported as skipped.
#
# On a lent GPU (the device tool; its image has python3 3.12, torch 2.11 and jax 0.11.2 with CUDA, but no
# keras, keras-hub, namex, optree, kagglehub or kagglesdk), step by step:
#   1. Here, in the repository root, fetch the missing wheels into .whl/ (ignored by git; about 5 MB):
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#          --platform manylinux2014_x86_64 -d .whl \
#          keras==3.15.1 keras-hub==0.32.0 namex==0.1.0 optree==0.20.0 kagglehub==1.0.2 kagglesdk==0.1.28
#   2. Run it:  run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=540)
#      The script installs .whl/*.whl (or --wheels DIR, wheels/, shared/wheels/) into /tmp/gpu_suite_site
#      with no index and no dependencies when keras or keras_hub is missing, and prints the tables last.
#   3. give_back() unless you run again at once; the files come back under the reply's files_at.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
command="bash benchmarks/gpu_suite.sh${*:+ $*}"
py="${PYTHON:-python3}"
smoke=() out="${OUT:-/tmp/gpu_suite}" wheels="" budget="" rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=(--smoke); shift ;;
    --out) out="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --budget-s) budget="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) rest+=("$1"); shift ;;
  esac
done
if [ -z "$budget" ]; then
  budget=$([ ${#smoke[@]} -gt 0 ] && echo 240 || echo 450)
fi

# (a) What the image lacks, from wheels: only when keras or keras_hub is missing, so a development
# machine keeps its own installation.
if ! "$py" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('keras') and u.find_spec('keras_hub')))"; then
  if [ -z "$wheels" ]; then
    for dir in .whl wheels shared/wheels; do
      if compgen -G "$dir/*.whl" >/dev/null; then wheels="$dir"; break; fi
    done
  fi
  if [ -n "$wheels" ]; then
    site=/tmp/gpu_suite_site
    echo "# installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$wheels"/*.whl || { echo "gpu_suite.sh: installing the wheels failed" >&2; exit 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "# keras or keras_hub is missing and no wheels were found (.whl/, wheels/, shared/wheels/):" \
         "the variants that need them will fail; see this script's header" >&2
  fi
fi

# (b) and (c): the variants, each in its own process, within what is left of the budget; the outer
# timeout only guards against the driver itself hanging.
left=$((budget - (SECONDS - start)))
export PYTHONUNBUFFERED=1
timeout -k 10 $((left + 30)) "$py" -P benchmarks/gpu_suite.py "${smoke[@]}" --out "$out" --budget-s "$left" \
  --command "$command" "${rest[@]}"
status=$?
echo "# gpu_suite.sh: exit $status after $((SECONDS - start)) s; results in $out"
exit $status
