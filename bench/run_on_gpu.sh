#!/usr/bin/env bash
# What produced the README's GPU numbers, in one go on a CUDA machine: the CUDA tests of the FedSGD engine, the
# engine benchmark (fp32 and bf16, R in {1, 8, 32, 64}) with a kernel profile, and the `small` B.3 reproduction
# (resumable: a rerun with the same OUTDIR continues it).
# Usage: bash bench/run_on_gpu.sh OUTDIR [seconds allowed for the reproduction, default 240; 0 skips it]
set -u
out=${1:?usage: bash bench/run_on_gpu.sh OUTDIR [seconds]}
limit=${2:-240}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider tests/test_fedsgd_engine.py tests/test_fedsgd_game.py -k "cuda or bf16" \
  > "$out/cuda_tests.txt" 2>&1
tail -3 "$out/cuda_tests.txt"
python3 bench/fedsgd_engine_throughput.py --precisions float32 bfloat16 --json "$out/bench.json" \
  --profile "$out/profile.txt" 2>&1 | tee "$out/bench.txt"
if [ "$limit" -gt 0 ]; then
  timeout "$limit" fedgames reproduce honesty-b3 --scale small --device cuda --out "$out/small" --quiet \
    > "$out/small.log" 2>&1
  echo "reproduction exit status $? (124: stopped at the time limit; rerun to resume)"
  tail -12 "$out/small.log"
  tar czf "$out/small.tar.gz" -C "$out" small && rm -rf "$out/small"  # one file: finished runs + any results
fi
