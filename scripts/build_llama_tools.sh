#!/usr/bin/env bash
# Build llama.cpp's command-line tools (llama-imatrix, llama-perplexity, llama-quantize) from the
# llama.cpp source vendored in the llama-cpp-python sdist, with the wheel's CMAKE_ARGS; called by
# scripts/setup.sh after the wheel is installed:
#
#   bash scripts/build_llama_tools.sh 0.3.36 "-DGGML_NATIVE=OFF"
#
# The binaries are built once per machine (about 4 minutes on 2 cores) into
# ${XDG_CACHE_HOME:-~/.cache}/gguf-fragility/llama-tools/<key>/ (key: version + CMAKE_ARGS + the
# fixed flags below), copied into .venv/bin/, and recorded in .venv/llama_build.json. The sdist
# comes from PyPI through pip (cached beside the wheels); nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION="$1"
CMAKE_ARGS="$2"
TOOLS=(llama-imatrix llama-perplexity llama-quantize)
# static, no network code: the tools read local files only
FIXED=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
       -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF
       -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
       -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF)

cache="${XDG_CACHE_HOME:-$HOME/.cache}/gguf-fragility"
key=$(printf '%s %s %s %s' "$LLAMA_VERSION" "$CMAKE_ARGS" "${FIXED[*]}" "${TOOLS[*]}" | sha256sum | cut -c1-12)
dest="$cache/llama-tools/$key"

ready() { for t in "${TOOLS[@]}"; do [ -x "$dest/$t" ] || return 1; done; [ -f "$dest/build.json" ]; }

if ! ready; then
  sdist="$cache/sdist/llama_cpp_python-$LLAMA_VERSION.tar.gz"
  if [ ! -f "$sdist" ]; then
    echo "build_llama_tools: fetching the llama-cpp-python $LLAMA_VERSION sdist from PyPI"
    mkdir -p "$cache/sdist"
    .venv/bin/python -m pip download -q --no-binary :all: --no-deps -d "$cache/sdist" \
      "llama-cpp-python==$LLAMA_VERSION"
  fi
  echo "build_llama_tools: building ${TOOLS[*]} with CMAKE_ARGS='$CMAKE_ARGS' (about 4 minutes on 2 cores)"
  work=$(mktemp -d "${TMPDIR:-/tmp}/llama-tools.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  t0=$(date +%s)
  tar -xzf "$sdist" -C "$work" "llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"
  src="$work/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"
  # CMAKE_ARGS is a space-separated list of -D flags, as pip passes it to scikit-build-core
  read -r -a user_args <<< "$CMAKE_ARGS"
  cmake -S "$src" -B "$work/build" "${FIXED[@]}" "${user_args[@]}" > "$work/configure.log" 2>&1 \
    || { tail -30 "$work/configure.log"; exit 1; }
  cmake --build "$work/build" --target "${TOOLS[@]}" -j "${GGUF_FRAGILITY_BUILD_JOBS:-2}" \
    > "$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
  seconds=$(( $(date +%s) - t0 ))
  # stage beside the destination so that publishing it is one rename on the same filesystem
  mkdir -p "$cache/llama-tools"
  stage=$(mktemp -d "$cache/llama-tools/.stage-$key.XXXXXX")
  trap 'rm -rf "$work" "$stage"' EXIT
  for t in "${TOOLS[@]}"; do cp "$work/build/bin/$t" "$stage/$t"; done
  LLAMA_VERSION="$LLAMA_VERSION" CMAKE_ARGS="$CMAKE_ARGS" FIXED="${FIXED[*]}" SECONDS_TAKEN="$seconds" \
    .venv/bin/python - "$stage/build.json" <<'EOF'
import json, os, platform, sys, time
json.dump({"llama_cpp_python": os.environ["LLAMA_VERSION"], "cmake_args": os.environ["CMAKE_ARGS"],
           "fixed_cmake_args": os.environ["FIXED"].split(), "build_seconds": int(os.environ["SECONDS_TAKEN"]),
           "built_on": platform.node(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
          open(sys.argv[1], "w"), indent=1)
EOF
  # a concurrent build of the same key may have published first; keep either
  mv -T "$stage" "$dest" 2>/dev/null || ready
  echo "build_llama_tools: built in ${seconds}s -> $dest"
fi

for t in "${TOOLS[@]}"; do
  cp -f "$dest/$t" ".venv/bin/$t.tmp" && mv -f ".venv/bin/$t.tmp" ".venv/bin/$t"
done
LLAMA_VERSION="$LLAMA_VERSION" CMAKE_ARGS="$CMAKE_ARGS" DEST="$dest" TOOLS="${TOOLS[*]}" \
  .venv/bin/python - <<'EOF'
import json, os
from pathlib import Path
tools = {t: str(Path(".venv/bin", t).resolve()) for t in os.environ["TOOLS"].split()}
build = json.loads(Path(os.environ["DEST"], "build.json").read_text())
record = {"llama_cpp_python": os.environ["LLAMA_VERSION"], "cmake_args": os.environ["CMAKE_ARGS"],
          "tools": tools, "tools_cache": os.environ["DEST"],
          "tools_cmake_args": build["fixed_cmake_args"] + os.environ["CMAKE_ARGS"].split(),
          "tools_build_seconds": build["build_seconds"]}
tmp = Path(".venv/llama_build.json.tmp")
tmp.write_text(json.dumps(record, indent=1) + "\n")
tmp.replace(".venv/llama_build.json")
EOF
