#!/usr/bin/env bash
# The checks a CUDA machine gets when one is lent: the model parity tests on the GPU, then a real
# `sluice serve` there answering TGI's routes, W1 and W2 over HTTP, and a graceful stop.
#
#   bench/cuda_check.sh TEMPLATE_DIR OUT_DIR [DTYPE...]
#
# TEMPLATE_DIR: the default model's config.json and tokenizer files. Such a machine cannot fetch
# the default model, so a checkpoint of its shapes with seeded random weights
# (bench/random_weights_checkpoint.py) takes its place in a private cache: its speed is the real
# model's and the parity tests compare against transformers on the same weights, but tests
# that judge what the text says (drafts accepted on copy-heavy prompts) do not apply to it.
# Every step logs to OUT_DIR and a failing step does not stop the others.
set -uo pipefail
template=$1
out=$2
shift 2
dtypes=("${@:-bfloat16}")
mkdir -p "$out"
export XDG_CACHE_HOME=/tmp/sluice-cuda-check-cache
model=$(python3 -c 'from sluice.weights.embedded import embedded_model_dir as d
from sluice.weights.sources import default_cache_dir as c; print(d(c()))')
port=3000
export PYTHONUNBUFFERED=1

step() { echo "=== $* ($(date +%T))"; }

step gpu
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' \
    | tee -a "$out/gpu.txt"

step checkpoint
python3 bench/random_weights_checkpoint.py "$template" "$model" >/dev/null 2>&1 || exit 1
python3 -c 'import json, sys; from sluice.weights.gguf_convert import CONVERTER_VERSION, MARKER_NAME
from pathlib import Path; marker = {"version": CONVERTER_VERSION, "source": "random weights"}
(Path(sys.argv[1]) / MARKER_NAME).write_text(json.dumps(marker))' "$model"

step model tests on cuda
# Tensor parallelism needs two GPUs; the packed GGUF tests need the real GGUF.
SLUICE_TEST_DEVICE=cuda timeout 200 python3 -m pytest -q -rfE --tb=short -p no:cacheprovider \
    --timeout 60 tests/model -k "not tensor_parallel and not gguf" >"$out/model_tests.log" 2>&1
grep -E '^(FAILED|ERROR)|passed|failed' "$out/model_tests.log"

serve() {  # serve DTYPE_FLAGS...: start a server, wait until healthy (90 s at most)
    python3 -m sluice serve --model-id "$model" --port "$port" "$@" >>"$out/server.log" 2>&1 &
    server=$!
    for _ in $(seq 90); do
        curl -sf "localhost:$port/health" >/dev/null && return 0
        kill -0 "$server" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

stop() {  # SIGTERM, then record the exit status of a drained stop
    kill -TERM "$server"
    wait "$server"
    echo "server exit status after SIGTERM: $?" | tee -a "$out/routes.log"
}

for dtype in "${dtypes[@]}"; do
    step "serve $dtype"
    if ! serve --dtype "$dtype"; then
        echo "server ($dtype) did not become healthy" | tee -a "$out/routes.log"
        kill "$server" 2>/dev/null
        continue
    fi
    {
        curl -s "localhost:$port/info"
        echo
        curl -s "localhost:$port/generate" -H 'Content-Type: application/json' \
            -d '{"inputs": "Hello", "parameters": {"max_new_tokens": 8, "details": true}}'
        echo
        curl -sN "localhost:$port/generate_stream" -H 'Content-Type: application/json' \
            -d '{"inputs": "Hello", "parameters": {"max_new_tokens": 4}}'
        curl -s "localhost:$port/v1/chat/completions" -H 'Content-Type: application/json' \
            -d '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}'
        echo
    } >>"$out/routes.log" 2>&1
    step "bench $dtype"
    for workload in w1 w2; do
        timeout 150 python3 -m sluice bench --url "http://localhost:$port" \
            --workload "$workload" --runs 3 --output "$out/$dtype" 2>&1 | tail -n 15 \
            | tee -a "$out/bench.log"
    done
    grep -E '^(tgi_queue_size|sluice_kv_cache)' <(curl -s "localhost:$port/metrics") \
        >>"$out/routes.log"
    stop
done
step done
