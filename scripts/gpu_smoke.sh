#!/usr/bin/env bash
# GPU smoke test (issue 19): one script, at most 8 minutes on one H100.
#   bash scripts/gpu_smoke.sh [OUTDIR]
# 1. PreActResNet-18 on cifar10_jpeg: natural 1 epoch, FGSM-RS 1 epoch, free
#    AT m = 8 for 1 epoch-equivalent; PGD-20 on the first 1,000 test images
#    (experiments/configs/gpu_smoke.py); per-update times in results.json.
# 2. The quick speed benchmark (experiments/configs/benchmark.py:quick).
# Everything it writes goes to OUTDIR (default $OUT, else /tmp/gpu_smoke).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-/tmp/gpu_smoke}}"
mkdir -p "$OUTDIR"
export JAXADV_DATA_DIR="${JAXADV_DATA_DIR:-$(pwd)/../shared/data}"
[ -d "$JAXADV_DATA_DIR" ] || export JAXADV_DATA_DIR="$(pwd)/shared/data"
exec > >(tee "$OUTDIR/gpu_smoke.log") 2>&1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import jax; print(jax.__version__, jax.devices())" || {
  echo "jax is not importable here: pip install -e . first"; exit 1; }
python3 - <<'PY'
import jax
if jax.default_backend() == "cpu":
  raise SystemExit("no accelerator visible to jax: this is not a GPU run")
PY
t0=$(date +%s)
timeout 330 python3 -m experiments.robust_training \
    --config=experiments/configs/gpu_smoke.py --workdir="$OUTDIR/train"
echo "training + PGD-20: rc $? in $(( $(date +%s) - t0 )) s"
python3 - "$OUTDIR/train/results.json" <<'PY'
import json, sys
try:
  res = json.load(open(sys.argv[1]))
except OSError as e:
  raise SystemExit(f"no results: {e}")
per = {}
for r in res["records"]:
  per[r["method"]] = r["train_seconds"] / r["train_steps"]
  print(f"{r['method']}: {1e3 * per[r['method']]:.1f} ms / update, clean "
        f"{r['clean_acc']:.4f}, PGD-20 {r['pgd_acc']:.4f}")
if "natural" in per and "free" in per:
  print(f"free / natural per update: {per['free'] / per['natural']:.3f}")
PY
t1=$(date +%s)
timeout 120 python3 -m experiments.benchmarks \
    --config=experiments/configs/benchmark.py:quick --workdir="$OUTDIR/bench"
echo "quick benchmark: rc $? in $(( $(date +%s) - t1 )) s"
