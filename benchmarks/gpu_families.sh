#!/usr/bin/env bash
# Issue 14 at real shapes on one GPU: the search (full depth, random weights, classic agent) and
# a sharded 8-layer save for Qwen3-32B, Gemma-3-27B (text) and Phi-3-medium, through
# benchmarks/scale_check.py. Results: $OUT/scale_<shape>.json (and the logs).
#   OUT=/some/dir bash benchmarks/gpu_families.sh
# On the lent GPU image, carried wheels go in first (see README, On a GPU).
set -u
OUT=${OUT:-benchmarks/results}
if [ -d .whl/gpu ]; then python -m pip install -q --no-index --no-deps .whl/gpu/*.whl > "$OUT/pip.log" 2>&1 || echo "pip failed"; fi
for s in qwen3-32b:200 gemma-3-27b:200 phi-3-medium:150; do
  shape=${s%%:*}; limit=${s##*:}
  start=$(date +%s)
  timeout "$limit" python benchmarks/scale_check.py --shape "$shape" --save-layers 8 --evaluations 4,1,4 \
    --work "/tmp/sc_$shape" --out "$OUT/scale_$shape.json" > "$OUT/scale_$shape.out" 2>&1
  echo "$shape rc=$? $(( $(date +%s) - start )) s"
done
