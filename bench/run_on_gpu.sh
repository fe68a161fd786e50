#!/usr/bin/env bash
# What produces the README's GPU numbers, in one go on a CUDA machine (a device session's one call):
#   1. the CUDA tests of the FedSGD engine and game (batched == naive, bf16, compiled == eager);
#   2. at R = 64, every gradient path eager under bf16 (the kernels channels-last and -nchw), then the two fastest
#      kernel paths compiled (torch.compile);
#   3. the fastest eager kernel path at R in {128, 64, 32, 8, 1} against the naive loop, with a kernel profile
#      (eager: compiling for each R would not fit; the compiled paths' R = 64 rates are in r64_compiled.json;
#      R = 128, beyond the issue's sweep, shows whether larger batches of runs still gain);
#   4. optionally the `small` B.3 reproduction on the fastest settings (resumable: rerun with the same OUTDIR).
# Each phase has its own time limit and result file (at most 9 minutes in all, most of it compiling; the device
# allows 10 minutes per call, installing the wheels included), so a cut-off call still returns the finished phases.
# Usage: bash bench/run_on_gpu.sh OUTDIR [seconds allowed for the reproduction, default 0: skipped]
set -u
out=${1:?usage: bash bench/run_on_gpu.sh OUTDIR [seconds]}
limit=${2:-0}
bench="python3 bench/fedsgd_engine_throughput.py"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_fedsgd_engine.py tests/test_fedsgd_game.py \
  -k "cuda or bf16" > "$out/cuda_tests.txt" 2>&1
tail -3 "$out/cuda_tests.txt"
timeout 90 $bench --runs 64 --rounds 5 --paths vmap grouped padded im2col grouped-nchw padded-nchw im2col-nchw \
  --precisions bfloat16 --json "$out/r64_eager.json" 2>&1 | tee "$out/r64_eager.txt"
fastest=$(python3 - "$out/r64_eager.json" <<'EOF'
import json, sys
rates = json.load(open(sys.argv[1]))["rows"][0]["rounds_per_s"]
kernels = sorted((k for k in rates if not k.startswith(("vmap", "naive"))), key=rates.get, reverse=True)
print(" ".join(k.split("/")[0] for k in kernels[:2]))
EOF
)
timeout 160 $bench --runs 64 --rounds 5 --paths ${fastest:-grouped im2col} --precisions bfloat16 --compile default \
  --json "$out/r64_compiled.json" 2>&1 | tee "$out/r64_compiled.txt"
# the fastest (path, compile mode) at R = 64
read -r path mode < <(python3 - "$out" <<'EOF'
import json, pathlib, sys
rates = {}
for name in ("r64_eager.json", "r64_compiled.json"):
    file = pathlib.Path(sys.argv[1]) / name
    if file.exists():
        rates.update(json.loads(file.read_text())["rows"][0]["rounds_per_s"])
best = max(rates, key=rates.get)
parts = best.split("/")
print(parts[0], parts[2] if len(parts) > 2 else "off")
EOF
)
echo "fastest at R = 64: $path (compile: $mode)"
eager=${fastest%% *}
timeout 170 $bench --runs 128 64 32 8 1 --paths naive "${eager:-grouped}" --precisions bfloat16 \
  --json "$out/bench.json" --profile "$out/profile.txt" 2>&1 | tee "$out/bench.txt"
if [ "$limit" -gt 0 ]; then
  compile=(); [ "$mode" != off ] && compile=(--compile "$mode")
  timeout "$limit" fedgames reproduce honesty-b3 --scale small --device cuda --precision bfloat16 "${compile[@]}" \
    --out "$out/small" --quiet > "$out/small.log" 2>&1
  echo "reproduction exit status $? (124: stopped at the time limit; rerun to resume)"
  tail -12 "$out/small.log"
  tar czf "$out/small.tar.gz" -C "$out" small && rm -rf "$out/small"  # one file: finished runs + any results
fi
