#!/usr/bin/env bash
# One call of the device tool (10-minute limit) on a GPU lease, for issues 24 and 27. Three modes:
#   (none)     full: 1. environment: nvidia-smi, torch/CUDA/library versions, a bf16 matmul's TFLOP/s;
#              2. the step benchmark: every registered method in the study's setting, eager and with the
#              levers (benchmarks/train_step.py --study --methods all; compile for moco_v2 and supervised
#              only), then moco_v2 and supervised through the trial's GPU augmentation (--augment);
#              3. packing: k = 1, 2, 4 processes stepping moco_v2 at once (benchmarks/packing.py);
#              4. as much of the gpu preset's 200-epoch moco_v2 `ori` trial as the time left allows, with
#              the levers of the fastest moco_v2 mode measured in 2 (benchmarks/lease_trial.py).
#              Files: env.txt train_step.log augment.log packing.log trial_curves.csv trial.json lease.log
#   --trial    1, then 4 in compiled+graph, kNN only (no final probe), its state saved to $LEASE_STATE
#              every 5 epochs: the same command again, at once on the still-warm machine, resumes it
#              there. Once the trial is finished (or skipped, or failed), 5. the streaming loader's GPU
#              JPEG decode vs torchvision's DataLoader (benchmarks/streaming.py --device cuda), then
#              6. the data-parallel machinery on one GPU (benchmarks/data_parallel.py), both issue 27,
#              each capped at 90 s. Files: env.txt trial_curves.csv trial.json streaming.log
#              data_parallel.log lease.log. LEASE_SKIP_TRIAL=1 skips 4; LEASE_SKIP_TRIAL=fresh skips it
#              where no state is there (a call that landed on a fresh machine: a new trial would waste it).
#   --compare  1, then C. eager vs compiled+graph through the trial loop (issue 24's seed-noise check):
#              the moco_v2 `ori` trial for LEASE_COMPARE_EPOCHS (15) epochs at seeds 0 and 1 in each
#              mode, one line per trial in compare.jsonl, |eager - graph| against the seed spread in
#              lease.log; then, each if it fits, S. supervised through the trial loop in compiled+graph
#              (supervised.log) and P. packing k = 1, 4 with eager (levers) steps (packing.log).
#              LEASE_SKIP_ARMS=1 runs only S and P. Files: env.txt compare.jsonl supervised.log packing.log
#              lease.log.
# The device tool returns at most 8 files from $OUT; each mode writes at most 7. How a lease uses them:
# docs/results/gpu.md, "Next lease". On the device machine, from the repository root, with CIFAR-10
# carried as .lease/cifar10-jpeg.tgz: bash benchmarks/gpu_lease.sh [--trial | --compare]
# --dry-run (before or after the mode) runs the same phases on a CPU with tiny settings and digits; in
# --trial each call trains at most one epoch of a 2-epoch trial, so two calls in a row rehearse the resume.
# Seconds: LEASE_TOTAL_S (default 560 full, 585 --trial/--compare: what this call may use; set it below
# the device time left), LEASE_BENCH_S (240), LEASE_PACK_S (100). LEASE_STATE: /tmp/lease_state.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=full; DRY=0
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    --trial | --compare)
      [[ $MODE != full ]] && { echo "gpu_lease.sh: one mode at a time; valid: --trial or --compare" >&2; exit 2; }
      MODE=${arg#--} ;;
    *) echo "gpu_lease.sh: unknown argument $arg; valid: --trial, --compare, --dry-run" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEFAULT_TOTAL=560; [[ $MODE != full ]] && DEFAULT_TOTAL=585
TOTAL=${LEASE_TOTAL_S:-$DEFAULT_TOTAL}; BENCH=${LEASE_BENCH_S:-240}; PACK=${LEASE_PACK_S:-100}; AUG=60
STATE=${LEASE_STATE:-/tmp/lease_state}
RESUMABLE=75  # benchmarks/lease_trial.py: stopped before its last epoch, the next call resumes it
START=$(date +%s)
left() { echo $(( TOTAL - ($(date +%s) - START) )); }
log() { echo "[lease $(( $(date +%s) - START ))s] $*" | tee -a "$OUT/lease.log"; }
# cap S: S, or the time left less 5 s where that is less
cap() { local t=$(( $(left) - 5 )); echo $(( t < $1 ? t : $1 )); }
# phase TITLE FILE SECONDS CMD...: CMD for at most SECONDS (interrupted, then killed 5 s later), if 30 s or
# more; its output to $OUT/FILE, its last lines to lease.log. A slow phase cannot eat the next one's time.
phase() {
  local title=$1 file=$2 seconds=$3; shift 3
  if (( seconds < 30 )); then log "$title: skipped, $(left)s left"; return; fi
  log "$title (${seconds}s at most)"
  timeout -k 5 -s INT "$seconds" "$@" > "$OUT/$file" 2>&1
  log "${file%.*} exit $?"; grep -v '^{' "$OUT/$file" | tail -4 | tee -a "$OUT/lease.log"
}

log "1. environment (mode $MODE, dry run: $DRY)"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  nproc; uname -r
  $PY - <<'PYEOF'
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
PYEOF
} > "$OUT/env.txt" 2>&1
tee -a "$OUT/lease.log" < "$OUT/env.txt"

if (( DRY )); then
  SMALL=(--width 0.0625 --batch 8 --image-size 16)
  BENCH_ARGS=(--methods supervised moco_v2 --modes eager levers --steps 1 "${SMALL[@]}")
  PACK_ARGS=(--ks 1 2 --seconds 0.5 --warmup 1 --chunk 1 "${SMALL[@]}")
  AUG_ARGS=(--steps 1 "${SMALL[@]}")
  DATASET=digits
  TINY=(--set model.width=0.0625 --set optim.batch_size=32 --set data.train_per_class=20 --set data.test_per_class=10
        --set eval.eval_every=1 --set eval.probe=false --set optim.epochs=2)
  MOCO_SET=("${TINY[@]}" --set method.queue_size=64)
  GRAPH=levers  # compile and graphs need CUDA
  DP_ARGS=(--width 0.0625 --batch 8 --steps 2 --rounds 1)
  STREAM_ARGS=(--images 64 --large 16 --repeats 1 --batch-size 32)  # ../shared/data/cifar10-jpeg
  TRIAL_LIMIT=(--max-epochs 1 --set system.checkpoint_every=1)  # two calls split the 2 epochs
  TOTAL=${LEASE_TOTAL_S:-600}; BENCH=200; PACK=200; AUG=200  # generous: a busy CI core, not the work, sets the time
else
  BENCH_ARGS=(--methods all --compile-methods moco_v2 supervised --budget-s $(( BENCH - 60 )))
  PACK_ARGS=(--ks 1 2 4 --seconds 15)
  AUG_ARGS=()
  DATASET=imagefolder:/tmp/data/cifar10-jpeg
  TINY=(); MOCO_SET=()
  GRAPH=compiled+graph
  DP_ARGS=()
  STREAM_ARGS=(--device cuda --root /tmp/data/cifar10-jpeg --workers 8 --images 10000 --large 1000 --repeats 2)
  TRIAL_LIMIT=()
  if [[ -f .lease/cifar10-jpeg.tgz ]]; then
    mkdir -p /tmp/data && tar xzf .lease/cifar10-jpeg.tgz -C /tmp/data && log "CIFAR-10 unpacked to /tmp/data"
  else
    log "no .lease/cifar10-jpeg.tgz: the trial phases will fail (see docs/results/gpu.md)"
  fi
fi

if [[ $MODE == full ]]; then
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

# trial TITLE ARGS...: lease_trial.py in all the time left but 15 s (if a minute is), output to lease.log;
# sets TRIAL_RC (RESUMABLE: stopped by its budget before the last epoch).
trial() {
  local title=$1; shift
  local budget=$(( $(left) - 15 ))
  if (( budget < 60 )); then log "$title: skipped, ${budget}s left for it"; TRIAL_RC=$RESUMABLE; return; fi
  log "$title (budget ${budget}s)"
  timeout --preserve-status -k 5 -s INT $(( budget + 10 )) $PY benchmarks/lease_trial.py --dataset "$DATASET" --budget-s "$budget" "$@" \
    >> "$OUT/lease.log" 2>&1
  TRIAL_RC=$?
  if (( TRIAL_RC == RESUMABLE )); then log "trial stopped before its last epoch (exit $RESUMABLE)"
  else log "trial exit $TRIAL_RC"; fi
}

if [[ $MODE == full ]]; then
  trial "4. moco_v2 ori trial of the gpu preset" --out "$OUT" --levers-from "$OUT/train_step.log" "${MOCO_SET[@]}"
fi

if [[ $MODE == trial ]]; then
  mkdir -p "$STATE"
  SKIP=${LEASE_SKIP_TRIAL:-0}
  TRIAL_RC=0
  if [[ $SKIP == 1 || ( $SKIP == fresh && ! -f $STATE/trial.pt ) ]]; then
    log "4. trial skipped (LEASE_SKIP_TRIAL=$SKIP; state: $(ls "$STATE" 2>/dev/null | tr '\n' ' '))"
  else
    trial "4. moco_v2 ori trial of the gpu preset in $GRAPH, state in $STATE" --out "$OUT" --mode "$GRAPH" \
      --state "$STATE/trial.pt" --set eval.probe=false "${MOCO_SET[@]}" "${TRIAL_LIMIT[@]}"
  fi
  if (( TRIAL_RC == RESUMABLE )); then
    log "5-6. wait for the finished trial: run the same command again (at once: the machine stays warm 30 s)"
  else  # streaming first: it has never run on a GPU, and it risks no NCCL hang
    phase "5. streaming with GPU JPEG decode vs torchvision's DataLoader (benchmarks/streaming.py)" streaming.log \
      "$(cap 90)" $PY benchmarks/streaming.py "${STREAM_ARGS[@]}"
    phase "6. data-parallel overhead on one device (benchmarks/data_parallel.py)" data_parallel.log \
      "$(cap 90)" $PY benchmarks/data_parallel.py "${DP_ARGS[@]}"
  fi
fi

if [[ $MODE == compare ]]; then
  ARMS=$(mktemp -d)  # each trial's own files stay here: compare.jsonl carries what comes back
  EPOCHS=${LEASE_COMPARE_EPOCHS:-15}; (( DRY )) && EPOCHS=2  # 15: four trials in ~420 s (est., docs/results/gpu.md)
  if [[ ${LEASE_SKIP_ARMS:-0} == 1 ]]; then
    log "C. eager vs $GRAPH skipped (LEASE_SKIP_ARMS=1)"
  else  # the cheap graph arms early: a cut then still leaves a pair and one spread
    for arm in eager:0 "$GRAPH":0 "$GRAPH":1 eager:1; do
      trial "C. moco_v2 ori, $EPOCHS epochs, ${arm%:*} seed ${arm#*:}" --mode "${arm%:*}" --seed "${arm#*:}" \
        --out "$ARMS/${arm/:/-}" --rows "$OUT/compare.jsonl" --set eval.probe=false "${MOCO_SET[@]}" \
        --set optim.epochs="$EPOCHS"
    done
  fi
  S=$(cap 90); (( S < 60 )) && S=0  # under a minute the compile leaves too few epochs to time
  phase "S. supervised through the trial loop in $GRAPH" supervised.log "$S" $PY benchmarks/lease_trial.py \
    --dataset "$DATASET" --method supervised --mode "$GRAPH" --budget-s $(( S - 20 )) --out "$ARMS/supervised" \
    --rows "$OUT/compare.jsonl" --set eval.probe=false "${TINY[@]}"
  P_ARGS=(--ks 1 4 --mode levers --seconds 8)
  (( DRY )) && P_ARGS=(--ks 1 --seconds 0.5 --warmup 1 --chunk 1 "${SMALL[@]}")  # k > 1: the full mode's dry run
  phase "P. packing, eager (levers) steps" packing.log "$(cap 75)" $PY benchmarks/packing.py "${P_ARGS[@]}"
fi
log "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
