#!/usr/bin/env bash
# Create or update .venv with every pinned dependency, llama-cpp-python built with
# explicit CMAKE_ARGS, llama.cpp's command-line tools built from the same source and flags
# (scripts/build_llama_tools.sh), and this project in editable mode. A ready machine returns
# in seconds.
#
#   bash scripts/setup.sh                       # CPU build (portable, -DGGML_NATIVE=OFF)
#   GGUF_FRAGILITY_CMAKE_ARGS="-DGGML_CUDA=on" bash scripts/setup.sh   # NVIDIA GPU build
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
CMAKE_ARGS="${GGUF_FRAGILITY_CMAKE_ARGS:--DGGML_NATIVE=OFF}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'

want="$(cat requirements.txt pyproject.toml scripts/setup.sh scripts/build_llama_tools.sh | sha256sum | cut -c1-16) $CMAKE_ARGS"
stamp=.venv/.setup-stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/llama-perplexity ]; then
  echo "setup: .venv is up to date"
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip==25.3
# --no-compile: Python compiles a module's bytecode on its first import instead (and caches it,
# unless PYTHONDONTWRITEBYTECODE is set: the Makefile unsets it); most of what the pins install
# (JupyterLab's server, test and optional modules) is never imported, and compiling all of it
# took more CPU than the rest of the install (2026-12-04, *Measurements*)
.venv/bin/python -m pip install -q --no-compile -r requirements.txt

# One pinned llama.cpp build per CMAKE_ARGS, kept outside the clone so fresh clones reuse it.
# pip's own wheel cache keys on the version only, so we build the wheel ourselves (--no-cache-dir).
key=$(printf '%s %s' "$LLAMA_VERSION" "$CMAKE_ARGS" | sha256sum | cut -c1-12)
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/gguf-fragility/wheels/$key"
if ! ls "$wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "setup: building llama-cpp-python $LLAMA_VERSION with CMAKE_ARGS='$CMAKE_ARGS' (about 6 minutes on 2 cores)"
  mkdir -p "$wheels"
  CMAKE_ARGS="$CMAKE_ARGS" .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir \
    --no-binary llama-cpp-python -w "$wheels" "llama-cpp-python==$LLAMA_VERSION"
fi
.venv/bin/python -m pip install -q --no-deps --no-compile --force-reinstall \
  "$wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
.venv/bin/python -m pip install -q --no-deps --no-compile -e .
# llama-imatrix, llama-perplexity, llama-quantize into .venv/bin; writes .venv/llama_build.json
bash scripts/build_llama_tools.sh "$LLAMA_VERSION" "$CMAKE_ARGS"
.venv/bin/python -m ipykernel install --sys-prefix --name gguf-fragility --display-name "gguf-fragility (.venv)" >/dev/null
echo "$want" > "$stamp"
echo "setup: .venv ready (llama-cpp-python $LLAMA_VERSION, CMAKE_ARGS='$CMAKE_ARGS')"
