#!/usr/bin/env bash
# The GPU checks of the benchmark suites in one run of DEADLINE seconds (default 480), for a session
# that is lent a GPU machine with PyTorch and no network:
#   1. the speed suite on CUDA, one configuration at a time (A first: its target is the vmap
#      mapping at least 5x faster than the per-task loop peers);
#   2. what each accuracy cell costs per meta-iteration there (benchmarks/cell_cost.py), to
#      tell which full-budget cells fit a GPU session;
#   3. one accuracy cell, CELL (default maml-20w1s-official), trained until 2 minutes before
#      DEADLINE and evaluated both ways (budgeted).
#
# Prepare in the repository root, on the machine without the GPU:
#   echo /.gpu/ >> .git/info/exclude
#   mkdir -p .gpu/omniglot && cp ../shared/data/omniglot/*.zip .gpu/omniglot/
#   pip download --no-deps --only-binary=:all: -d .gpu higher==0.2.1
# then run `bash benchmarks/gpu_session.sh 2>&1 | tee $OUT/session.log` there with `.gpu`
# carried along. The tables and logs are written to $OUT (default /tmp/metakit-gpu).
# DEVICE=cpu SPEED_CONFIGS=paper-5w COST_SETTINGS=5w1s CELL=fomaml-5w1s-official DEADLINE=600
# runs the same steps on a CPU, as a check of this script. On an H200 (twenty-seventh session)
# each speed configuration took about 100 s, so A and paper-5w ran and the rest were skipped;
# the cell costs took under 90 s.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/metakit-gpu}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-480}
CELL=${CELL:-maml-20w1s-official}
SPEED_CONFIGS=${SPEED_CONFIGS:-A paper-5w B C paper-20w}
COST_SETTINGS=${COST_SETTINGS:-5w1s 5w5s 20w1s 20w5s}
mkdir -p "$OUT"

# metakit from this checkout, higher from its wheel; the rest (torch, typer, numpy, pillow)
# is expected on the machine.
python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/metakit-site .gpu/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/metakit-site" PYTHONUNBUFFERED=1 METAKIT_CACHE_DIR=/tmp/metakit-cache
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
nvidia-smi -L 2>/dev/null

# 1. Speed. One configuration per invocation, each table appended as it finishes: a slow
# configuration costs its own table only, and none starts after 200 s. Both orders and
# both mappings in A, and vmap in chunks of 8 tasks (the memory it saves); second order
# (the targets) in the others.
for config in $SPEED_CONFIGS; do
    if ((SECONDS > 200)); then echo "speed: $config skipped (time)"; continue; fi
    rows=(-r metakit-vmap -r metakit-loop -r plain-loop -r higher)
    [[ $config == A ]] && rows+=(-r metakit-vmap-8 -r metakit-vmap-1st -r metakit-loop-1st)
    timeout 150 python3 benchmarks/speed.py --device "$DEVICE" -c "$config" "${rows[@]}" \
        --warmup 3 --iterations 20 --timeout 40 --output "$OUT/speed.md"
done

# 2. Cost per meta-iteration of each cell, both networks, for at most 90 s.
settings=()
for setting in $COST_SETTINGS; do settings+=(-s "$setting"); done
timeout 90 python3 benchmarks/cell_cost.py --device "$DEVICE" --data-dir .gpu/omniglot \
    "${settings[@]}" --iterations 10 | tee "$OUT/cost.md"

# 3. One accuracy cell, budgeted: trained until 2 minutes before DEADLINE, then evaluated.
IFS=- read -r algorithm setting protocol <<<"$CELL"
left=$((DEADLINE - SECONDS))
if ((left < 150)); then echo "accuracy: skipped (time)"; exit 0; fi
minutes=$(python3 -c "print(round(($left - 120) / 60, 2))")
echo "accuracy: $CELL for $minutes minutes"
timeout "$left" python3 benchmarks/omniglot_accuracy.py -a "$algorithm" \
    -s "$setting" -p "$protocol" --budget 60000 --minutes "$minutes" --device "$DEVICE" \
    --data-dir .gpu/omniglot --root /tmp/metakit-accuracy --output "$OUT/accuracy.md" > "$OUT/accuracy.log" 2>&1
cp /tmp/metakit-accuracy/"$CELL"/metrics.jsonl "$OUT/" 2>/dev/null
echo "done in $SECONDS s"
