#!/usr/bin/env bash
# One GPU lease for issue 24 in one command under the device tool's 10-minute limit:
#   1. environment: nvidia-smi, torch/CUDA/library versions, a bf16 matmul's TFLOP/s;
#   2. the step benchmark: every method in the study's setting, eager and with the levers
#      (benchmarks/train_step.py --study; compile for moco_v2 and supervised only);
#      then moco_v2 and supervised again through the trial's GPU augmentation (--augment);
#   3. packing: k = 1, 2, 4 processes stepping moco_v2 at once (benchmarks/packing.py);
#   4. as much of the gpu preset's 200-epoch moco_v2 `ori` trial as the time left allows, with the
#      levers of the fastest moco_v2 mode measured in 2 (benchmarks/lease_trial.py).
# Everything lands in $OUT (at most 8 files: the device tool returns no more): env.txt,
# train_step.log, augment.log, packing.log, trial_curves.csv, trial.json, lease.log.
#
# On the device machine, from the repository root, with CIFAR-10 carried as .lease/cifar10-jpeg.tgz
# (see docs/results/gpu.md, "Next lease"): bash benchmarks/gpu_lease.sh
# Without a GPU (CI): bash benchmarks/gpu_lease.sh --dry-run  (tiny settings and digits: ~25 s of CPU time)
# Trial only (the next lease, docs/results/gpu.md): bash benchmarks/gpu_lease.sh --trial
#   skips 2-3 and trains the moco_v2 `ori` trial in the fastest mode measured (compiled+graph), kNN only
#   (no final probe), saving its state to /tmp/lease_state every 5 epochs: the same command again, at once
#   on the still-warm machine, resumes it there, then (time left) times the data-parallel machinery on
#   one GPU (benchmarks/data_parallel.py) and the streaming loader's GPU JPEG decode
#   (benchmarks/streaming.py --device cuda), both issue 27. Add --dry-run after --trial to try it on a CPU.
# Phase budgets in seconds: LEASE_TOTAL_S (default 560), LEASE_BENCH_S (240), LEASE_PACK_S (100).
set -uo pipefail
cd "$(dirname "$0")/.."
TRIAL_ONLY=0; [[ "${1:-}" == "--trial" ]] && { TRIAL_ONLY=1; shift; }
DRY=0; [[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
TOTAL=${LEASE_TOTAL_S:-560}; BENCH=${LEASE_BENCH_S:-240}; PACK=${LEASE_PACK_S:-100}; AUG=60
START=$(date +%s)
left() { echo $(( TOTAL - ($(date +%s) - START) )); }
log() { echo "[lease $(( $(date +%s) - START ))s] $*" | tee -a "$OUT/lease.log"; }

log "1. environment (dry run: $DRY)"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  nproc; uname -r
  $PY - <<'EOF'
import platform, time
import torch, torchvision, timm, numpy
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "timm", timm.__version__, "numpy", numpy.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "SMs", p.multi_processor_count, "memory GiB", round(p.total_memory / 2**30, 1))
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(); tic = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    print("bf16 matmul 8192^3 TFLOP/s", round(10 * 2 * 8192**3 / (time.perf_counter() - tic) / 1e12, 1))
else:
    print("no CUDA device")
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$OUT/lease.log"

if (( DRY )); then
  SMALL=(--width 0.0625 --batch 8 --image-size 16)
  BENCH_ARGS=(--methods supervised moco_v2 --modes eager levers --steps 1 "${SMALL[@]}")
  PACK_ARGS=(--ks 1 2 --seconds 0.5 --warmup 1 --chunk 1 "${SMALL[@]}")
  AUG_ARGS=(--steps 1 "${SMALL[@]}")
  DATASET=digits
  TRIAL_SET=(--set model.width=0.0625 --set optim.batch_size=32 --set data.train_per_class=20 --set data.test_per_class=10
             --set method.queue_size=64 --set optim.epochs=2 --set eval.eval_every=1 --set eval.probe=false)
  TOTAL=${LEASE_TOTAL_S:-600}; BENCH=200; PACK=200; AUG=200  # generous: a busy CI core, not the work, sets the time
else
  BENCH_ARGS=(--methods moco_v2 supervised barlow_twins byol dino simclr supcon --compile-methods moco_v2 supervised
              --budget-s $(( BENCH - 60 )))
  PACK_ARGS=(--ks 1 2 4 --seconds 15)
  AUG_ARGS=()
  DATASET=imagefolder:/tmp/data/cifar10-jpeg
  TRIAL_SET=()
  if [[ -f .lease/cifar10-jpeg.tgz ]]; then
    mkdir -p /tmp/data && tar xzf .lease/cifar10-jpeg.tgz -C /tmp/data && log "CIFAR-10 unpacked to /tmp/data"
  else
    log "no .lease/cifar10-jpeg.tgz: the trial phase will fail (see docs/results/gpu.md)"
  fi
fi

LEVERS=(--levers-from "$OUT/train_step.log")
if (( TRIAL_ONLY )); then
  LEVERS=(--mode compiled+graph --state /tmp/lease_state/trial.pt --set eval.probe=false)
  (( DRY )) && LEVERS=(--mode levers --state /tmp/lease_state/trial.pt --set eval.probe=false)
  mkdir -p /tmp/lease_state
  TOTAL=${LEASE_TOTAL_S:-585}
else
log "2. step benchmark (budget ${BENCH}s)"
timeout -s INT "$BENCH" $PY benchmarks/train_step.py --study "${BENCH_ARGS[@]}" > "$OUT/train_step.log" 2>&1
log "train_step exit $?"; grep -v '^{' "$OUT/train_step.log" | tail -40 | tee -a "$OUT/lease.log"

log "2b. augmentation's share: the same step fed through the trial's GPU augmentation (budget ${AUG}s)"
timeout -s INT "$AUG" $PY benchmarks/train_step.py --study --methods moco_v2 supervised --modes levers --augment \
  "${AUG_ARGS[@]}" > "$OUT/augment.log" 2>&1
log "augment exit $?"; grep -v '^{' "$OUT/augment.log" | tail -4 | tee -a "$OUT/lease.log"

log "3. packing (budget ${PACK}s)"
timeout -s INT "$PACK" $PY benchmarks/packing.py "${PACK_ARGS[@]}" > "$OUT/packing.log" 2>&1
log "packing exit $?"; grep -v '^{' "$OUT/packing.log" | tail -8 | tee -a "$OUT/lease.log"
fi

TRIAL_S=$(( $(left) - 15 ))
if (( TRIAL_S < 60 )); then
  log "4. trial skipped: ${TRIAL_S}s left"
else
  log "4. moco_v2 ori trial of the gpu preset (budget ${TRIAL_S}s)"
  timeout -s INT $(( TRIAL_S + 10 )) $PY benchmarks/lease_trial.py --dataset "$DATASET" --budget-s "$TRIAL_S" \
    --out "$OUT" "${LEVERS[@]}" "${TRIAL_SET[@]}" >> "$OUT/lease.log" 2>&1
  log "trial exit $?"; tail -4 "$OUT/lease.log"
fi
if (( TRIAL_ONLY )); then  # the second call, after the trial finished (issue 27)
  # late_phase TITLE LOG CMD...: CMD in the time left (if a minute is), output to $OUT/LOG, its tail to lease.log
  late_phase() {
    local title=$1 file=$2; shift 2
    if (( $(left) > 60 )); then
      log "$title"
      timeout $(( $(left) - 5 )) "$@" > "$OUT/$file" 2>&1
      log "${file%.log} exit $?"; grep -v '^{' "$OUT/$file" | tail -4 | tee -a "$OUT/lease.log"
    else
      log "$title: skipped, $(left)s left"
    fi
  }
  DP_ARGS=(); (( DRY )) && DP_ARGS=(--width 0.0625 --batch 8 --steps 2 --rounds 1)
  late_phase "5. data-parallel overhead on one device (benchmarks/data_parallel.py)" data_parallel.log \
    $PY benchmarks/data_parallel.py "${DP_ARGS[@]}"
  STREAM_ARGS=(--device cuda --root /tmp/data/cifar10-jpeg --workers 8 --images 10000 --large 1000 --repeats 2)
  (( DRY )) && STREAM_ARGS=(--images 64 --large 16 --repeats 1 --batch-size 32)
  late_phase "6. streaming with GPU JPEG decode vs torchvision's DataLoader (benchmarks/streaming.py)" streaming.log \
    $PY benchmarks/streaming.py "${STREAM_ARGS[@]}"
fi
log "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
