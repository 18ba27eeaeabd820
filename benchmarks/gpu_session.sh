#!/usr/bin/env bash
# The GPU checks of the benchmark suites in one run of at most 10 minutes, for a session that is
# lent a GPU machine with PyTorch and no network: the speed suite on CUDA (the vmap mapping
# against the per-task loop peers; the target is 5x in configuration A), then MAML 5-way
# 1-shot under the paper's protocol (and the paper's strided network), trained for MINUTES and
# evaluated both ways.
#
# Prepare in the repository root, on the machine without the GPU:
#   echo /.gpu/ >> .git/info/exclude
#   mkdir -p .gpu/omniglot && cp ../shared/data/omniglot/*.zip .gpu/omniglot/
#   pip download --no-deps --only-binary=:all: -d .gpu higher==0.2.1
# then run `bash benchmarks/gpu_session.sh` there with `.gpu` carried along. The tables and
# logs are written to $OUT (default /tmp/metakit-gpu). DEVICE=cpu SPEED_CONFIGS=paper-5w
# MINUTES=0.1 runs the same steps on a CPU in about 7 minutes, as a check of this script.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/metakit-gpu}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-2}
SPEED_CONFIGS=${SPEED_CONFIGS:-A B C paper-5w}
mkdir -p "$OUT"

# metakit from this checkout, higher from its wheel; the rest (torch, typer, numpy, pillow)
# is expected on the machine.
python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/metakit-site .gpu/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/metakit-site" PYTHONUNBUFFERED=1 METAKIT_CACHE_DIR=/tmp/metakit-cache
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

# One configuration per invocation, A first, each table appended as it finishes: a slow
# configuration costs its own table only, and none starts after 3 minutes.
for config in $SPEED_CONFIGS; do
    if ((SECONDS > 180)); then echo "speed: $config skipped (time)" | tee -a "$OUT/speed.log"; continue; fi
    timeout 150 python3 benchmarks/speed.py --device "$DEVICE" -c "$config" \
        -r metakit-vmap -r metakit-loop -r plain-loop -r higher \
        --warmup 2 --iterations 10 --timeout 60 --output "$OUT/speed.md" 2>&1 | tee -a "$OUT/speed.log"
done

timeout 240 python3 benchmarks/omniglot_accuracy.py -a maml -s 5w1s -p paper --budget 60000 \
    --minutes "$MINUTES" --device "$DEVICE" --data-dir .gpu/omniglot --root /tmp/metakit-accuracy \
    --output "$OUT/accuracy.md" 2>&1 | grep -v '^iteration' | tee "$OUT/accuracy.log"
