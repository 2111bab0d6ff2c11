#!/usr/bin/env bash
# The CPU demo: the paper's recipe on a tiny model (model.tiny_config) and a synthetic visual task (synthetic.py).
#   bash demo.sh [demo]        data -> init -> captions -> cold-start SFT -> GRPO -> connector-only -> eval
#   bash demo.sh TARGET        a paper target at demo scale: coldstart, grpo, connector, table1..table5, fig5..fig11
#   bash demo.sh paper_demo    every target (or TARGETS="table2 fig9 ...") over SEEDS [0 1 2] (JOBS [3] seeds at
#                              a time), then report.py's out/paper_demo/report.md (SCALE=ci: out/ci_paper_demo);
#                              finished stages are reused
# (`bash launch.sh demo` and `SCALE=demo bash launch.sh TARGET` run these.) Every stage is a directory under $DEMO
# that is marked done when its command finishes; finished stages are skipped on the next run (rm -rf to redo one).
#   SCALE=demo (default)   out/demo (out/demo_seedN for SEED=N)
#   SCALE=ci               the same stages and configs, fewer steps and items (tests/test_demo.py); out/ci
# Environment: SEED [0], DEMO [see above], OUT_ROOT [out: targets write OUT_ROOT/TARGET], OMP_NUM_THREADS [1],
# WANDB_MODE [disabled], VENV [.venv].
set -euo pipefail
source "$(dirname "$0")/launch.sh"  # cd to the repo; setup, x, last_ckpt, all_ckpts, acc_table, plot_curves
target=${1:-demo}
DEMO_TARGETS=(table1 table2 table3 table4 table5 fig5 fig6 fig7_8 fig9 fig10 fig11)
case "$target" in demo|coldstart|grpo|connector|table[1-5]|fig5|fig6|fig7_8|fig9|fig10|fig11|paper_demo|all_targets) ;;
  *) sed -n '2,12p' "$0"; exit 0 ;;
esac
[ "$SCALE" != paper ] || SCALE=demo
setup
export WANDB_MODE=${WANDB_MODE:-disabled}
# one thread per process: measured faster than 2 on a shared 2-core box (tiny matmuls, thread sync dominates)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-${OMP_NUM_THREADS:-1}}
export PYTHONUNBUFFERED=1

SEED=${SEED:-0}
if [ "$SCALE" = ci ]; then DEMO=${DEMO:-out/ci}; else DEMO=${DEMO:-out/demo$([ "$SEED" = 0 ] || echo "_seed$SEED")}; fi
D=$DEMO/data
T=${OUT_ROOT:-out}   # each target's table and plot: $T/TARGET/
# SCALE=ci: the same stages and configs, fewer steps and items (tests/test_demo.py)
if [ "$SCALE" = ci ]; then
  DATA_ARGS=(--n_train=600 --n_val=64 --n_test=100 --n_ood=100 --n_sft=600 --n_sft_val=32 --n_caption=1000)
  CAPTION_ARGS=(--max_steps=200); SFT_ARGS=(--max_steps=150); GRPO_ARGS=(--steps=40 --save_every=20)
  CONNECTOR_ARGS=(--max_steps=6); EVAL_ARGS=(--max_items=100 --k=2)
  VAL_EVAL_ARGS=(--k=2); HARD_ARGS=(--n_train=200 --n_test=50); GRPO_MAIN_ARGS=(); REJECT_ARGS=()
  TABLE3_SFT_ARGS=()
else  # the main GRPO run saves every 10 steps: 8 checkpoints for Figs. 5 and 10 (saved by the demo too, so that
  # fig5 and fig10 reuse its GRPO stage; the demo itself reads only the last), each scoring 200 val questions
  # x 6 samples (the fewest critical tokens in a checkpoint, over seeds: 55-119 at x 2, 510-552 at x 10 (seeds 0
  # and 2); Fig. 5 wants >= 200). Its step-40 checkpoint is where Fig. 7's curriculum arm starts (curriculum_arm);
  # so is step 3 of PAPER_DEMO_CI's 6 (saved every 3)
  DATA_ARGS=(); CAPTION_ARGS=(); SFT_ARGS=(); GRPO_ARGS=(); CONNECTOR_ARGS=(); EVAL_ARGS=()
  VAL_EVAL_ARGS=(--k=6); HARD_ARGS=(); GRPO_MAIN_ARGS=(--save_every=10); REJECT_ARGS=(); TABLE3_SFT_ARGS=()
fi
if [ "${PAPER_DEMO_CI:-0}" = 1 ]; then   # tests/test_demo.py's SCALE=ci paper_demo: every pipeline, tiny settings
  DATA_ARGS=(--n_train=64 --n_val=16 --n_test=16 --n_ood=16 --n_sft=64 --n_sft_val=8 --n_caption=64)
  CAPTION_ARGS=(--max_steps=4); SFT_ARGS=(--max_steps=4 --eval_every=2); GRPO_ARGS=(--steps=6 --save_every=3
    --prompts_per_step=4 --rollouts_per_prompt=2 --response_length_schedule="[(0, 24)]")
  CONNECTOR_ARGS=(--max_steps=2); EVAL_ARGS=(--max_items=8 --k=2 --max_new_tokens=24)
  VAL_EVAL_ARGS=(--max_items=8 --k=1 --max_new_tokens=24)
  HARD_ARGS=(--n_train=16 --n_test=8)
  # an untrained model is rarely right: sample more and keep every correct response, SFT on as few as one
  REJECT_ARGS=(--k=16 --max_per_question=0 --max_new_tokens=96); TABLE3_SFT_ARGS=(--global_batch_size=1
    --micro_batch_size=1)
fi

# the task, pinned here so that a change of synthetic.py's defaults cannot silently change the demo
# (README "Paper claims at demo scale" says why each lever is there: blind and nothink traces, "answer" captions,
# the RL boards' smaller shapes, detours for the critical tokens)
TASK_ARGS=(--image_size=112 --grid=2 --min_shapes=1 --max_shapes=4 --answer_values="(0, 1, 2, 3)" --mc_fraction=0.5
  --question_types="('count_shape', 'count_color', 'sum_colors')" --ood_types="('difference',)"
  --detour_fraction=0.6 --noise_fraction=0.0 --blind_fraction=0.05 --nothink_fraction=0.1 --nothink_instruction=True
  --caption_kinds="('list', 'list', 'list', 'answer')" --rl_scale="(0.45, 0.6)")

# -----------------------------------------------------------------------------
# stages

stage() {  # stage DIR CMD...: run CMD unless DIR/.done exists; a half-finished DIR is redone from scratch
  local dir=$1; shift
  [ ! -f "$dir/.done" ] || return 0   # done already (rm -rf DIR to redo it)
  rm -rf "$dir"
  echo "== $dir"
  local t0=$SECONDS
  "$@"
  mkdir -p "$dir" && touch "$dir/.done"
  echo "== $dir: $((SECONDS - t0)) s"
}

demo_data() {  # synthetic train/val/test/ood records, teacher traces, captions, tokenizer corpus
  stage "$D" "$PY" synthetic.py --out="$D" --seed="$SEED" --n_train=2000 --n_val=200 --n_test=200 --n_ood=200 \
    --n_sft=2000 --n_sft_val=100 --n_caption=2000 "${TASK_ARGS[@]}" "${DATA_ARGS[@]}"
}

init_tiny() {  # model.py --init_tiny reads one text per line: unpack the JSON-string corpus first
  "$PY" -c 'import json, sys; open(sys.argv[2], "w").write("".join(json.loads(l) + "\n" for l in open(sys.argv[1])))' \
    "$D/tokenizer_corpus.jsonl" "$DEMO/corpus.txt"
  "$PY" model.py --init_tiny "$DEMO/init" --corpus "$DEMO/corpus.txt" --seed "$SEED" \
    --overrides '{"vision": {"initializer_range": 0.2}}'
}

demo_init() {  # a fresh tiny model (tiny_config: 112 px boards, as synthetic.py draws them), its BPE fit on the
  # synthetic corpus. The ViT's init std is 0.2, not 0.02: with 0.02, 300 caption steps left colour and shape
  # at chance; with 0.2 they reach ~98% per cell (measured on val boards)
  demo_data
  stage "$DEMO/init" init_tiny
}

demo_caption() {  # alignment: every module learns to read the board (sft.py on captions)
  demo_init
  stage "$DEMO/caption" "$PY" sft.py config/demo_caption.py --checkpoint="$DEMO/init" --data="$D/caption.jsonl" \
    --out_dir="$DEMO/caption" --seed="$SEED" "${CAPTION_ARGS[@]}"
}

demo_sft() {  # cold-start SFT on the teacher's <think> traces, stopped early (§3.2)
  demo_caption
  stage "$DEMO/sft" "$PY" sft.py config/demo_sft.py --checkpoint="$(last_ckpt "$DEMO/caption")" \
    --data="$D/sft.jsonl" --val_data="$D/sft_val.jsonl" --out_dir="$DEMO/sft" --seed="$SEED" "${SFT_ARGS[@]}"
}

demo_grpo() {  # GRPO from the cold-start checkpoint (§3.3), built-in sampler
  demo_sft
  stage "$DEMO/grpo" "$PY" grpo.py config/grpo_demo.py --init_from="$(last_ckpt "$DEMO/sft")" \
    --data="$D/train.jsonl" --out_dir="$DEMO/grpo" --seed="$SEED" "${GRPO_ARGS[@]}" "${GRPO_MAIN_ARGS[@]}"
}

demo_connector() {  # connector-only tuning after RL (§3.4)
  demo_grpo
  stage "$DEMO/connector" "$PY" connector_tune.py config/demo_connector.py --checkpoint="$(last_ckpt "$DEMO/grpo")" \
    --data="$D/sft.jsonl" --val_data="$D/sft_val.jsonl" --out_dir="$DEMO/connector" --seed="$SEED" \
    "${CONNECTOR_ARGS[@]}"
}

demo_eval() {  # demo_eval NAME CKPT [BENCHMARK.jsonl...] [--key=value...] [+EVAL/BENCH/RUN...]: eval.py at T = 1,
  # avg@k -> $DEMO/eval/NAME. +EVAL/BENCH/RUN: that run of an earlier eval of the same checkpoint and settings is
  # copied in and read back instead of generated again (each (item, sample) has its own seed: the same responses)
  local name=$1 ckpt=$2 a list; shift 2
  local benches=() extra=() reuse=()
  for a in "$@"; do case "$a" in --*) extra+=("$a") ;; +*) reuse+=("${a#+}") ;; *) benches+=("$a") ;; esac; done
  [ ${#benches[@]} -gt 0 ] || benches=("$D/test.jsonl" "$D/ood.jsonl")
  list=$(printf "'%s'," "${benches[@]}")
  stage "$DEMO/eval/$name" copy_runs "$DEMO/eval/$name" "${reuse[*]}" "$PY" eval.py config/demo_eval.py \
    --checkpoint="$ckpt" --benchmarks="[${list%,}]" --out_dir="$DEMO/eval/$name" --seed="$SEED" "${EVAL_ARGS[@]}" \
    "${extra[@]}"
}

copy_runs() {  # copy_runs OUT "EVAL/BENCH/RUN..." CMD...: each run of a finished eval copied to OUT/BENCH/RUN,
  # then CMD; a run not there (a target run alone) is generated by CMD
  local out=$1 r; shift
  for r in $1; do
    [ -f "$DEMO/eval/${r%%/*}/.done" ] || continue
    mkdir -p "$out/${r#*/}" && cp "$DEMO/eval/$r/generations.jsonl" "$out/${r#*/}/"
  done
  shift; "$@"
}

demo_entropy() {  # critical-token entropy over the GRPO checkpoints, with their val accuracy (§5.1): the val
  # responses of each checkpoint's eval are scored token by token by the checkpoint that wrote them
  demo_grpo
  local ckpts=() accs=() gens=() c
  for c in $(all_ckpts "$DEMO/grpo"); do
    demo_eval "val_$(basename "$c")" "$c" "$D/val.jsonl" "${VAL_EVAL_ARGS[@]}"
    ckpts+=("$c"); accs+=("$DEMO/eval/val_$(basename "$c")/summary.json")
    gens+=("$c=$DEMO/eval/val_$(basename "$c")/val/think_full/generations.jsonl")
  done
  stage "$DEMO/entropy" entropy_of "$DEMO/entropy" "${ckpts[*]}" "${accs[*]}" "${gens[@]}"
}

entropy_of() {  # entropy_of OUT "CKPT..." "ACC..." CKPT=GENERATIONS... [--key=value...]: entropy.py on the tagged
  # responses
  local out=$1 ckpts=($2) accs=($3) g extra=(); shift 3
  mkdir -p "$out"
  for g in "$@"; do  # each row names the checkpoint that wrote it (entropy.rows_for_checkpoint)
    case "$g" in --*) extra+=("$g"); continue ;; esac
    "$PY" -c 'import json, sys
for line in open(sys.argv[2]): print(json.dumps(dict(json.loads(line), checkpoint=sys.argv[1])))' "${g%%=*}" "${g#*=}"
  done > "$out/generations_in.jsonl"
  "$PY" entropy.py --checkpoints "${ckpts[@]}" ${accs[0]:+--accuracies "${accs[@]}"} --data "$D/val.jsonl" \
    --generations "$out/generations_in.jsonl" --out "$out" --seed "$SEED" "${extra[@]}"
}

demo() {
  local t0=$SECONDS
  demo_connector
  demo_eval caption "$(last_ckpt "$DEMO/caption")"
  demo_eval sft "$(last_ckpt "$DEMO/sft")"
  demo_eval grpo "$(last_ckpt "$DEMO/grpo")"
  demo_eval connector "$(last_ckpt "$DEMO/connector")"
  # no entropy-based selection here: its val evals of every GRPO checkpoint cost more than the rest of the evals
  # together, and only Figs. 5 and 10 (paper_demo, or `bash demo.sh fig5`) read them
  acc_table "$DEMO/results.md" "Demo (seed $SEED): held-out accuracy after each stage" \
    "alignment (captions)=$DEMO/eval/caption" "cold-start SFT=$DEMO/eval/sft" "GRPO=$DEMO/eval/grpo" \
    "connector-only tuning=$DEMO/eval/connector"
  "$PY" tables.py demo_summary "$DEMO" >> "$DEMO/results.md"
  tail -n 4 "$DEMO/results.md"
  echo "demo: $((SECONDS - t0)) s for the stages, $SECONDS s in all (venv setup included) -> $DEMO/results.md"
}

grpo_arm() {  # grpo_arm NAME INIT [grpo.py args...]: a GRPO ablation arm under $DEMO/NAME, from INIT
  local name=$1 init=$2; shift 2
  stage "$DEMO/$name" "$PY" grpo.py config/grpo_demo.py --init_from="$init" --data="$D/train.jsonl" \
    --out_dir="$DEMO/$name" --seed="$SEED" "${GRPO_ARGS[@]}" "$@"
}

curriculum_arm() {  # curriculum_arm SWITCH_STEP [grpo.py args...]: Fig. 7's arm from a copy of the main GRPO run at
  # its switch step (checkpoint and metrics.jsonl; the resume keeps the rows up to it), from scratch when the main
  # run saved no checkpoint there
  local out=$DEMO/fig7_8/curriculum main; main=$DEMO/grpo/step_$(printf %06d "$1"); shift
  mkdir -p "$out"
  if [ -d "$main" ]; then cp -r "$main" "$out/"; cp "$DEMO/grpo/metrics.jsonl" "$out/"; fi
  "$PY" grpo.py config/grpo_demo.py --init_from="$(last_ckpt "$DEMO/sft")" --data="$D/train.jsonl" \
    --out_dir="$out" --seed="$SEED" "${GRPO_ARGS[@]}" --resume=True "$@"
}

paper_demo() {  # every target (or TARGETS) over SEEDS, JOBS seeds at a time, with progress and ETA; then report.py
  local pd=${PAPER_DEMO:-out/$([ "$SCALE" = ci ] && echo ci_)paper_demo} seeds=(${SEEDS:-0 1 2}) jobs=${JOBS:-3}
  local t0=$SECONDS s pids=() running
  for s in ${TARGETS:-}; do  # a misspelt target would print demo.sh's usage and count as done
    [[ " ${DEMO_TARGETS[*]} " == *" $s "* ]] ||
      { echo "paper_demo: TARGETS: no target '$s' (${DEMO_TARGETS[*]})"; return 2; }
  done
  mkdir -p "$pd"; : > "$pd/started"   # a seed's progress file older than this is an earlier run's
  echo "paper_demo: seeds ${seeds[*]}, $jobs at a time, targets ${TARGETS:-all}, under $pd (each seed's log:" \
    "$pd/seedN/log.txt)"
  for s in "${seeds[@]}"; do
    while running=$(jobs -pr | wc -l); [ "$running" -ge "$jobs" ]; do
      paper_demo_progress "$pd" "$t0" "${seeds[@]}"; sleep 20
    done
    mkdir -p "$pd/seed$s"
    SEED=$s DEMO=$pd/seed$s OUT_ROOT=$pd/seed$s/targets bash "$0" all_targets > "$pd/seed$s/log.txt" 2>&1 &
    pids+=($!)
  done
  while [ "$(jobs -pr | wc -l)" -gt 0 ]; do paper_demo_progress "$pd" "$t0" "${seeds[@]}"; sleep 20; done
  local failed=0 p
  for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
  [ "$failed" = 0 ] || echo "paper_demo: $failed seed(s) failed: $pd/seed*/log.txt (report.md lists what is missing)"
  "$PY" report.py "$pd" --seeds "${seeds[@]}" ${TARGETS:+--targets $TARGETS} --wall_s $((SECONDS - t0))
  echo "paper_demo: $((SECONDS - t0)) s -> $pd/report.md"
  [ "$failed" = 0 ]
}

paper_demo_progress() {  # PD T0 SEED...: one line: the share of the seeds' work done (a seed not started yet in
  # this run counts as none done, whatever an earlier run left), elapsed, ETA from that share
  local pd=$1 t0=$2 done_=0 per_seed=0 s d n; shift 2
  for s in "$@"; do
    [ "$pd/seed$s/progress" -nt "$pd/started" ] || continue
    read -r d n < "$pd/seed$s/progress" || continue   # a seed is rewriting it this instant: count it next time
    done_=$((done_ + d)); per_seed=$n   # every seed runs the same units
  done
  local total=$((per_seed * $#)) el=$((SECONDS - t0)) eta="?"
  [ "$done_" = 0 ] || eta=$(( el * (total - done_) / done_ ))
  echo "paper_demo: $(( total ? 100 * done_ / total : 0 ))% done, ${el}s elapsed, ETA ~${eta}s ($(date -u +%H:%M:%S))"
}

all_targets() {  # one seed: the demo, then every paper target (each its own process, so that one failing target
  # is reported and the others still run), counting progress into $DEMO/progress as "done total" in units of one
  # target; the demo weighs 6 (about 35% of a seed's time when it still ran fig5's val evals and entropy: 24-26
  # of 69-72 min, paper_demo at main 36ab814; it now runs less and fig5 more, a rough weight either way)
  local demo_units=6 t t1 failed=() targets=(${TARGETS:-${DEMO_TARGETS[*]}})
  local i=0 n=$((demo_units + ${#targets[@]}))
  mkdir -p "$DEMO"; echo "0 $n" > "$DEMO/progress"
  demo; i=$demo_units; echo "$i $n" > "$DEMO/progress"
  for t in "${targets[@]}"; do
    t1=$SECONDS
    echo "=== target $t (seed $SEED)"
    if SEED=$SEED DEMO=$DEMO OUT_ROOT=$T bash "$0" "$t"; then
      echo "=== target $t (seed $SEED): $((SECONDS - t1)) s"
    else
      failed+=("$t"); echo "=== target $t (seed $SEED): FAILED after $((SECONDS - t1)) s"
    fi
    i=$((i + 1)); echo "$i $n" > "$DEMO/progress"
  done
  [ ${#failed[@]} = 0 ] || { echo "seed $SEED: failed targets: ${failed[*]}"; return 1; }
}

# -----------------------------------------------------------------------------
# targets: the paper's, on the demo (each reuses $DEMO's stages and writes $T/TARGET/ as launch.sh does out/TARGET)

run_target() {
case "$1" in
  demo) demo ;;
  coldstart) demo_sft ;;
  grpo) demo_grpo ;;
  connector) demo_connector ;;
  paper_demo) paper_demo ;;
  all_targets) all_targets ;;

  table1)  # Table 1: the eval suite (test, ood, val), T = 1.0, avg@k, of the final (connector-tuned) checkpoint
    demo_connector
    demo_eval connector "$(last_ckpt "$DEMO/connector")"
    demo_eval table1_val "$(last_ckpt "$DEMO/connector")" "$D/val.jsonl"
    acc_table "$T/table1/table1.md" "Table 1 (demo): the eval suite, connector-tuned checkpoint" \
      "connector/$(basename "$(last_ckpt "$DEMO/connector")") test, ood=$DEMO/eval/connector" \
      "connector/$(basename "$(last_ckpt "$DEMO/connector")") val=$DEMO/eval/table1_val"
    ;;

  table2)  # Table 2: tuning connector / connector+LLM / connector+ViT+LLM after RL
    demo_connector
    demo_eval grpo "$(last_ckpt "$DEMO/grpo")"
    demo_eval connector "$(last_ckpt "$DEMO/connector")"
    for v in connector+llm connector+vision+llm; do
      stage "$DEMO/table2/$v" "$PY" connector_tune.py config/demo_connector.py --variant="$v" \
        --checkpoint="$(last_ckpt "$DEMO/grpo")" --data="$D/sft.jsonl" --val_data="$D/sft_val.jsonl" \
        --out_dir="$DEMO/table2/$v" --seed="$SEED" "${CONNECTOR_ARGS[@]}"
      demo_eval "table2_$v" "$(last_ckpt "$DEMO/table2/$v")"
    done
    acc_table "$T/table2/table2.md" "Table 2 (demo): tuning after RL" "RL stage (baseline)=$DEMO/eval/grpo" \
      "connector-only=$DEMO/eval/connector" "connector + LLM=$DEMO/eval/table2_connector+llm" \
      "connector + ViT + LLM=$DEMO/eval/table2_connector+vision+llm"
    ;;

  table3)  # Table 3: RL vs SFT on the same data, in-domain (test) vs out-of-domain (ood)
    demo_grpo
    demo_eval sft "$(last_ckpt "$DEMO/sft")"
    demo_eval grpo "$(last_ckpt "$DEMO/grpo")"
    # the SFT arm: correct traces rejection-sampled from the RL model on the RL questions, then SFT from the
    # cold-start checkpoint with the cold-start recipe
    head -n 500 "$D/train.jsonl" > "$D/train_500.jsonl"   # image paths are relative to the data dir
    stage "$DEMO/table3/distill" "$PY" reject.py --checkpoint="$(last_ckpt "$DEMO/grpo")" \
      --data="$D/train_500.jsonl" --out="$DEMO/table3/distill/distilled.jsonl" --k=4 --max_new_tokens=160 \
      --batch_size=64 --backend=builtin --reward_workers=0 --seed="$SEED" "${REJECT_ARGS[@]}"
    stage "$DEMO/table3/sft" "$PY" sft.py config/demo_sft.py --checkpoint="$(last_ckpt "$DEMO/sft")" \
      --data="$DEMO/table3/distill/distilled.jsonl" --val_data="$D/sft_val.jsonl" --out_dir="$DEMO/table3/sft" \
      --lr=1e-3 --max_steps=100 --seed="$SEED" "${SFT_ARGS[@]}" "${TABLE3_SFT_ARGS[@]}"
    demo_eval table3_sft "$(last_ckpt "$DEMO/table3/sft")"
    acc_table "$T/table3/table3.md" \
      "Table 3 (demo): RL vs SFT on the same data (test = in-domain, ood = unseen question type)" \
      "baseline (cold start)=$DEMO/eval/sft" "RL=$DEMO/eval/grpo" "SFT=$DEMO/eval/table3_sft"
    ;;

  table4)  # Table 4: slow thinking vs NoThink vs NoWait (accuracy and tokens), final checkpoint
    demo_connector
    # its think run is the final checkpoint's eval's first run (demo, table1, table5): copied, not sampled again
    demo_eval table4 "$(last_ckpt "$DEMO/connector")" "$D/test.jsonl" --mode=think,nothink,nowait \
      --nothink_instruction=True +connector/test/think_full
    mkdir -p "$T/table4"; cp "$DEMO/eval/table4/summary.md" "$T/table4/table4.md"
    ;;

  table5)  # Table 5: accuracy with / without "I can't see the image" in the CoT (the final checkpoint's eval)
    demo_connector
    demo_eval connector "$(last_ckpt "$DEMO/connector")"
    mkdir -p "$T/table5"; cp "$DEMO/eval/connector/summary.md" "$T/table5/table5.md"
    ;;

  fig5)  # Fig. 5: critical-token entropy vs val accuracy over the GRPO checkpoints (§5.1)
    demo_entropy
    mkdir -p "$T/fig5"
    cp "$DEMO/entropy/entropy.png" "$DEMO/entropy/entropy_table.json" "$T/fig5/"
    echo "-> $T/fig5/entropy.png (left panel: Fig. 5), $T/fig5/entropy_table.json"
    ;;

  fig6)  # Fig. 6: GRPO with every module trainable vs frozen ViT vs frozen connector
    demo_grpo
    for arm in connector,llm vision,llm; do
      grpo_arm "fig6/${arm/,/_}" "$(last_ckpt "$DEMO/sft")" --trainable="['${arm/,/\',\'}']"
      demo_eval "fig6_${arm/,/_}" "$(last_ckpt "$DEMO/fig6/${arm/,/_}")"
    done
    demo_eval grpo "$(last_ckpt "$DEMO/grpo")"
    acc_table "$T/fig6/fig6.md" "Fig. 6 (demo): module activation in GRPO, final checkpoints" \
      "all trainable=$DEMO/eval/grpo" "frozen ViT=$DEMO/eval/fig6_connector_llm" \
      "frozen connector=$DEMO/eval/fig6_vision_llm"
    plot_curves "$T/fig6/fig6.png" reward/mean,train/grad_norm,response/len_mean,entropy/mean \
      "all trainable=$DEMO/grpo/metrics.jsonl" "frozen ViT=$DEMO/fig6/connector_llm/metrics.jsonl" \
      "frozen connector=$DEMO/fig6/vision_llm/metrics.jsonl"
    ;;

  fig7_8)  # Figs. 7-8: curriculum (normal -> hard) and learning rate: the demo lr vs lr / 10
    demo_grpo
    # "hard problems": two-colour sums on dense boards (3-4 shapes, answers 3 or 4: a count of 4 is never a normal
    # answer), so the hard stage shifts the answer prior as well as the difficulty; with sums over the normal mix's
    # boards the curriculum cost nothing (design.md). Its test split is copied to hard.jsonl: eval.py names a
    # benchmark by its file name, and two files named test.jsonl are refused
    stage "$DEMO/data_hard" hard_data
    steps_lr=$("$PY" -c 'import sys, configurator as c, grpo; cfg = c.parse_config(grpo.Config, sys.argv[1:])
print(cfg.steps, cfg.lr / 10)' config/grpo_demo.py "${GRPO_ARGS[@]}")   # one process: importing grpo costs seconds
    read -r steps lr <<< "$steps_lr"
    # up to its switch step the curriculum arm is the main run, bit for bit (tests/test_grpo.py): it resumes from
    # the main run's checkpoint there
    stage "$DEMO/fig7_8/curriculum" curriculum_arm $((steps / 2)) \
      --curriculum="[('$D/train.jsonl', 0), ('$DEMO/data_hard/train.jsonl', $((steps / 2)))]"
    # the lr claim is about steps 21-40, after the 10-step warmup (report.py): the lr / 10 arm runs the first 40
    # steps of the same schedule only
    grpo_arm fig7_8/low_lr "$(last_ckpt "$DEMO/sft")" --lr="$lr" --steps=$((steps < 40 ? steps : 40)) \
      --schedule_steps="$steps"
    hard=("$D/test.jsonl" "$DEMO/data_hard/hard.jsonl")
    demo_eval fig7_grpo "$(last_ckpt "$DEMO/grpo")" "${hard[@]}" +grpo/test/think_full   # the demo's GRPO eval's
    demo_eval fig7_curriculum "$(last_ckpt "$DEMO/fig7_8/curriculum")" "${hard[@]}"
    demo_eval fig7_low_lr "$(last_ckpt "$DEMO/fig7_8/low_lr")" "${hard[@]}"
    acc_table "$T/fig7_8/fig7_8.md" \
      "Figs. 7-8 (demo): curriculum and learning rate, final checkpoints (test = normal, hard = sums on dense boards)" \
      "normal, demo lr=$DEMO/eval/fig7_grpo" "curriculum, demo lr=$DEMO/eval/fig7_curriculum" \
      "normal, lr / 10, step 40=$DEMO/eval/fig7_low_lr"
    plot_curves "$T/fig7_8/fig7_8.png" reward/mean,reward/accuracy,entropy/mean,train/grad_norm \
      "normal, demo lr=$DEMO/grpo/metrics.jsonl" "curriculum, demo lr=$DEMO/fig7_8/curriculum/metrics.jsonl" \
      "normal, lr / 10, steps 1-40=$DEMO/fig7_8/low_lr/metrics.jsonl"
    ;;

  fig9)  # Fig. 9: accuracy vs thinking budget (final checkpoint; a budget cuts the thinking, then 16 answer tokens)
    demo_connector
    demo_eval fig9 "$(last_ckpt "$DEMO/connector")" "$D/test.jsonl" --budgets="[16, 32, 48, 64, 128]" \
      --answer_max_tokens=16 --max_items=100
    mkdir -p "$T/fig9"; cp "$DEMO/eval/fig9/summary.md" "$T/fig9/fig9.md"
    ;;

  fig10)  # Fig. 10: token-entropy distribution (mean, share above the vocabulary-scaled 6.8) over GRPO
    demo_entropy
    # the cold-start checkpoint's own val responses, then the GRPO checkpoints' (demo_entropy's)
    local c ckpts=("$(last_ckpt "$DEMO/sft")") gens=()
    demo_eval val_sft "${ckpts[0]}" "$D/val.jsonl" "${VAL_EVAL_ARGS[@]}"
    gens+=("${ckpts[0]}=$DEMO/eval/val_sft/val/think_full/generations.jsonl")
    for c in $(all_ckpts "$DEMO/grpo"); do
      ckpts+=("$c"); gens+=("$c=$DEMO/eval/val_$(basename "$c")/val/think_full/generations.jsonl")
    done
    # the GRPO checkpoints' scores are Fig. 5's (entropy.py --reuse: the same responses, records and settings)
    stage "$DEMO/fig10" entropy_of "$DEMO/fig10" "${ckpts[*]}" "" "${gens[@]}" \
      --reuse="$DEMO/entropy/entropy_table.json"
    mkdir -p "$T/fig10"; cp "$DEMO/fig10/entropy.png" "$DEMO/fig10/entropy_table.json" "$T/fig10/"
    plot_curves "$T/fig10/fig10_training.png" entropy/mean,entropy/high_frac,entropy/critical \
      "GRPO=$DEMO/grpo/metrics.jsonl"
    ;;

  fig11)  # Fig. 11: cold start vs self-incentive prompt (GRPO from the aligned model, without cold-start SFT)
    demo_grpo
    grpo_arm fig11/self_incentive "$(last_ckpt "$DEMO/caption")" --mode=nothink \
      --system_prompt="$SELF_INCENTIVE_PROMPT"
    plot_curves "$T/fig11/fig11.png" response/len_mean,reward/mean,reward/format,entropy/critical \
      "cold start=$DEMO/grpo/metrics.jsonl" "self-incentive prompt=$DEMO/fig11/self_incentive/metrics.jsonl"
    ;;
esac
}

hard_data() {
  "$PY" synthetic.py --out="$DEMO/data_hard" --seed="$SEED" "${TASK_ARGS[@]}" --question_types=sum_colors \
    --min_shapes=3 --answer_values="(3, 4)" --write_tokenizer_corpus=False --n_train=1000 --n_val=0 --n_test=200 \
    --n_ood=0 --n_sft=0 --n_sft_val=0 --n_caption=0 "${HARD_ARGS[@]}"
  cp "$DEMO/data_hard/test.jsonl" "$DEMO/data_hard/hard.jsonl"
}

run_target "$target"; exit  # on one line: bash has read it all before it runs (demo.sh can be edited meanwhile)
