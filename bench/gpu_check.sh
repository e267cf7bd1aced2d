#!/usr/bin/env bash
# The GPU check: run on one GPU node from the repository root; prints one table (bench/gpu_check.py says what).
#
#   bash bench/gpu_check.sh            # a node with this project's environment (TensorFlow or JAX)
#   bash bench/gpu_check.sh --quick    # a short trial, also on a CPU
#
# A node with JAX but no TensorFlow and no package index: on a machine with network, first run
# `bash bench/gpu_wheels.sh` (puts the few missing pure-Python and small wheels in .whl/, under 64 MiB), bring the
# repository with .whl/ to the node; this script installs them into a private folder and runs on JAX.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
    site=${TMPDIR:-/tmp}/ifcbflow-site
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${KERAS_BACKEND:-}" ]; then
    if "$python" -c "import tensorflow" 2>/dev/null; then export KERAS_BACKEND=tensorflow; else export KERAS_BACKEND=jax; fi
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX: take GPU memory as needed, not 75% at once
echo "gpu_check: $("$python" --version), KERAS_BACKEND=$KERAS_BACKEND"
exec "$python" bench/gpu_check.py ${OUT:+--out "$OUT/gpu_check.md"} "$@"
