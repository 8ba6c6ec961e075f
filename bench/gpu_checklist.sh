#!/usr/bin/env bash
# The GPU checklist in one run (the figures BENCHMARKS.md owes): versions, the mux encoders (NVENC among
# them) and bench/full_size.py's run list, everything printed also written to $OUT (or ./gpu-out).
# Wheels the machine lacks travel in .whl/ and go to /tmp/site; openreel runs from src/.
#   BENCH_SECONDS: how long full_size.py may run before it is stopped (rows so far are kept).
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c 'import sys, torch, diffusers, transformers, av; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "diffusers", diffusers.__version__, "transformers", transformers.__version__, "av", av.__version__); print("attention backends: flash", torch.backends.cuda.flash_sdp_enabled(), "cudnn", torch.backends.cuda.cudnn_sdp_enabled())'
    timeout 120 python3 bench/mux.py --sizes 1080p:8 --json "$out/mux.jsonl"
    timeout "${BENCH_SECONDS:-480}" python3 bench/full_size.py --json "$out/full_size.jsonl" "$@"
    echo "full_size.py exit $?"
    nvidia-smi --query-gpu=memory.used --format=csv
} 2>&1 | grep --line-buffered -v "Warning\|warn(" | tee "$out/log.txt"
