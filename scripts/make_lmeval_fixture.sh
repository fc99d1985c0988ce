#!/usr/bin/env bash
# Freeze real lm-evaluation-harness output into tests/data/lmeval/ (run once; the tests read it).
#
#   scripts/make_lmeval_fixture.sh [REFERENCE.gguf] [Q2_K.gguf]
#
# lm-eval 0.4.9.1 runs with `--model gguf` against `python -m llama_cpp.server` on SmolLM2's
# F16 reference and its Q2_K rung (the default run's ladder files unless given), over the two
# local tasks in tests/data/lmeval/tasks/ (8 frozen ARC-Challenge items, multiple_choice; 8
# arithmetic items, generate_until). lm-eval lives in its own venv, never in the project's:
#
#   python3 -m venv /tmp/lmeval-venv
#   /tmp/lmeval-venv/bin/pip install --no-deps lm-eval==0.4.9.1
#   /tmp/lmeval-venv/bin/pip install torch --index-url <a CPU wheel>   # here: /opt/wheels/torch-2.13.0+cpu
#   /tmp/lmeval-venv/bin/pip install "transformers<4.57" accelerate peft "datasets<4" evaluate \
#       jsonlines numexpr pytablewriter sqlitedict dill more_itertools word2number zstandard \
#       sacrebleu scikit-learn rouge-score tqdm-multiprocess pybind11 "llama-cpp-python[server]==0.3.36"
#
# Offline: the tasks read local JSON files (dataset_path: json) and the gguf model needs no
# tokenizer, so HF_*_OFFLINE=1 holds.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LMEVAL_VENV:-/tmp/lmeval-venv}"
ref="${1:-$here/.cache/models/smollm2-135m/reference.gguf}"
q2k="${2:-$here/.cache/models/smollm2-135m/Q2_K.gguf}"
out="$here/tests/data/lmeval"
port="${LMEVAL_PORT:-18765}"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_DATASETS_CACHE="$(mktemp -d)" HF_HOME="$(mktemp -d)"

run_rung() {  # run_rung NAME GGUF
  local name="$1" gguf="$2" pid
  "$venv/bin/python" -m llama_cpp.server --model "$gguf" --n_ctx 2048 --n_threads 2 \
      --seed 0 --host 127.0.0.1 --port "$port" >"$out/server_$name.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null' RETURN
  for _ in $(seq 60); do
    curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break
    sleep 1
  done
  rm -rf "$out/$name"
  (cd "$out/tasks" && "$venv/bin/python" -m lm_eval --model gguf \
      --model_args "base_url=http://127.0.0.1:$port" --include_path . \
      --tasks arc_mini,arith_mini --limit 8 --seed 1234 \
      --log_samples --output_path "$out/$name")
  rm -f "$out/server_$name.log"
}

run_rung F16 "$ref"
run_rung Q2_K "$q2k"
