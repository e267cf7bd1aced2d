#!/usr/bin/env bash
# Wheels that a GPU node with JAX, OpenCV and the scientific stack (but no TensorFlow, no package index) lacks to run
# bench/gpu_check.sh: downloaded here into .whl/ for the node's Python (default 3.12), at this project's pins.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${NODE_PYTHON_VERSION:-3.12}
pin() { grep -oE "\"$1==[^\"]+\"" pyproject.toml | tr -d '"'; }
wanted=(
    "$(pin keras)" "$(pin dask)" "$(pin distributed)" "$(pin zarr)" "$(pin typer)" "$(pin fsspec)"
    namex optree numcodecs donfig crc32c tblib zict locket partd tornado
)
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${wanted[@]}"
du -sh .whl
