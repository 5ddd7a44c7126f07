#!/usr/bin/env bash
# Set everything up, build the example models, then compile and verify each one with portc.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup_env.sh
OUT=${OUT:-out}
.venv/bin/python examples/build_examples.py --out "$OUT/models"
for model in mlp small_cnn tiny_transformer; do
  .venv/bin/portc compile "$OUT/models/$model.onnx" --target reference -o "$OUT/$model.reference"
  .venv/bin/portc verify "$OUT/models/$model.onnx" --target reference
  .venv/bin/portc verify "$OUT/models/$model.pt2" --target reference
done
echo "bundles are in $OUT/; run one with: .venv/bin/portc run $OUT/mlp.reference --inputs in.npz"
