#!/usr/bin/env bash
# The CPU demo: the paper's recipe on a tiny model (model.tiny_config) and a synthetic visual task (synthetic.py).
#   bash demo.sh [demo]        data -> init -> captions -> cold-start SFT -> GRPO -> connector-only -> eval -> entropy
#   bash demo.sh TARGET        a paper target at demo scale: coldstart, grpo, connector, table1..table5, fig5..fig11
# (`bash launch.sh demo` and `SCALE=demo bash launch.sh TARGET` run these.) Every stage is a directory under $DEMO
# that is marked done when its command finishes; finished stages are skipped on the next run (rm -rf to redo one).
#   SCALE=demo (default)   out/demo (out/demo_seedN for SEED=N)
#   SCALE=ci               the same stages and configs, fewer steps and items (tests/test_demo.py); out/ci
# Environment: SEED [0], DEMO [see above], OMP_NUM_THREADS [1], WANDB_MODE [disabled], VENV [.venv].
set -euo pipefail
source "$(dirname "$0")/launch.sh"  # cd to the repo; setup, x, last_ckpt, all_ckpts, acc_table, plot_curves
target=${1:-demo}
case "$target" in demo|coldstart|grpo|connector|table[1-5]|fig5|fig6|fig7_8|fig9|fig10|fig11) ;;
  *) sed -n '2,9p' "$0"; exit 0 ;;
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
# SCALE=ci: the same stages and configs, fewer steps and items (tests/test_demo.py)
if [ "$SCALE" = ci ]; then
  DATA_ARGS=(--n_train=600 --n_val=64 --n_test=100 --n_ood=100 --n_sft=600 --n_sft_val=32 --n_caption=1000)
  CAPTION_ARGS=(--max_steps=200); SFT_ARGS=(--max_steps=150); GRPO_ARGS=(--steps=40 --save_every=20)
  CONNECTOR_ARGS=(--max_steps=6); EVAL_ARGS=(--max_items=100 --k=2); ENTROPY_ARGS=(--num_prompts 8)
else
  DATA_ARGS=(); CAPTION_ARGS=(); SFT_ARGS=(); GRPO_ARGS=(); CONNECTOR_ARGS=(); EVAL_ARGS=(); ENTROPY_ARGS=()
fi

# the task, pinned here so that a change of synthetic.py's defaults cannot silently change the demo
TASK_ARGS=(--image_size=112 --grid=2 --min_shapes=1 --max_shapes=4 --answer_values="(0, 1, 2, 3)" --mc_fraction=0.5
  --question_types="('count_shape', 'count_color', 'sum_colors')" --ood_types="('difference',)"
  --detour_fraction=0.3 --noise_fraction=0.0 --caption_kinds="('list',)")

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
    --data="$D/train.jsonl" --out_dir="$DEMO/grpo" --seed="$SEED" "${GRPO_ARGS[@]}"
}

demo_connector() {  # connector-only tuning after RL (§3.4)
  demo_grpo
  stage "$DEMO/connector" "$PY" connector_tune.py config/demo_connector.py --checkpoint="$(last_ckpt "$DEMO/grpo")" \
    --data="$D/sft.jsonl" --val_data="$D/sft_val.jsonl" --out_dir="$DEMO/connector" --seed="$SEED" \
    "${CONNECTOR_ARGS[@]}"
}

demo_eval() {  # demo_eval NAME CKPT [BENCHMARK.jsonl...] [--key=value...]: eval.py at T = 1, avg@k -> $DEMO/eval/NAME
  local name=$1 ckpt=$2 a list; shift 2
  local benches=() extra=()
  for a in "$@"; do case "$a" in --*) extra+=("$a") ;; *) benches+=("$a") ;; esac; done
  [ ${#benches[@]} -gt 0 ] || benches=("$D/test.jsonl" "$D/ood.jsonl")
  list=$(printf "'%s'," "${benches[@]}")
  stage "$DEMO/eval/$name" "$PY" eval.py config/demo_eval.py --checkpoint="$ckpt" --benchmarks="[${list%,}]" \
    --out_dir="$DEMO/eval/$name" --seed="$SEED" "${EVAL_ARGS[@]}" "${extra[@]}"
}

demo_entropy() {  # critical-token entropy over the GRPO checkpoints, with their val accuracy (§5.1)
  demo_grpo
  local ckpts=() accs=() c
  for c in $(all_ckpts "$DEMO/grpo"); do
    demo_eval "val_$(basename "$c")" "$c" "$D/val.jsonl" --k=2
    ckpts+=("$c"); accs+=("$DEMO/eval/val_$(basename "$c")/summary.json")
  done
  stage "$DEMO/entropy" "$PY" entropy.py --checkpoints "${ckpts[@]}" --accuracies "${accs[@]}" \
    --data "$D/val.jsonl" --out "$DEMO/entropy" --num_prompts 32 --max_new_tokens 160 --seed "$SEED" \
    "${ENTROPY_ARGS[@]}"
}

demo() {
  local t0=$SECONDS
  demo_connector
  demo_eval caption "$(last_ckpt "$DEMO/caption")"
  demo_eval sft "$(last_ckpt "$DEMO/sft")"
  demo_eval grpo "$(last_ckpt "$DEMO/grpo")"
  demo_eval connector "$(last_ckpt "$DEMO/connector")"
  demo_entropy
  acc_table "$DEMO/results.md" "Demo (seed $SEED): held-out accuracy after each stage" \
    "alignment (captions)=$DEMO/eval/caption" "cold-start SFT=$DEMO/eval/sft" "GRPO=$DEMO/eval/grpo" \
    "connector-only tuning=$DEMO/eval/connector"
  "$PY" tables.py demo_summary "$DEMO" >> "$DEMO/results.md"
  tail -n 4 "$DEMO/results.md"
  echo "demo: $((SECONDS - t0)) s for the stages, $SECONDS s in all (venv setup included) -> $DEMO/results.md"
}

# -----------------------------------------------------------------------------
# targets: the paper's, on the demo (each reuses $DEMO's stages and writes out/TARGET/ as launch.sh does)

case "$target" in
  demo) demo ;;
  coldstart) demo_sft ;;
  grpo) demo_grpo ;;
  connector) demo_connector ;;

  table1)  # Table 1: the eval suite (test, ood, val), T = 1.0, avg@5
    demo_connector
    rm -rf out/table1
    x "$PY" eval.py config/demo_eval.py --checkpoint="$(last_ckpt "$DEMO/connector")" --k=5 \
      --benchmarks="['$D/test.jsonl','$D/ood.jsonl','$D/val.jsonl']" --out_dir=out/table1 "${EVAL_ARGS[@]}"
    cp out/table1/summary.md out/table1/table1.md
    echo "-> out/table1/table1.md"
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
    acc_table out/table2/table2.md "Table 2 (demo): tuning after RL" "RL stage (baseline)=$DEMO/eval/grpo" \
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
      --batch_size=64 --backend=builtin --reward_workers=0 --seed="$SEED"
    stage "$DEMO/table3/sft" "$PY" sft.py config/demo_sft.py --checkpoint="$(last_ckpt "$DEMO/sft")" \
      --data="$DEMO/table3/distill/distilled.jsonl" --val_data="$D/sft_val.jsonl" --out_dir="$DEMO/table3/sft" \
      --lr=1e-3 --max_steps=100 --seed="$SEED"
    demo_eval table3_sft "$(last_ckpt "$DEMO/table3/sft")"
    acc_table out/table3/table3.md \
      "Table 3 (demo): RL vs SFT on the same data (test = in-domain, ood = unseen question type)" \
      "baseline (cold start)=$DEMO/eval/sft" "RL=$DEMO/eval/grpo" "SFT=$DEMO/eval/table3_sft"
    ;;

  table4)  # Table 4: slow thinking vs NoThink vs NoWait (accuracy and tokens)
    demo_connector; rm -rf out/table4
    x "$PY" eval.py config/demo_eval.py --checkpoint="$(last_ckpt "$DEMO/connector")" --mode=think,nothink,nowait \
      --benchmarks="['$D/test.jsonl']" --out_dir=out/table4 "${EVAL_ARGS[@]}"
    cp out/table4/summary.md out/table4/table4.md
    ;;

  table5)  # Table 5: accuracy with / without "I can't see the image" in the CoT
    demo_connector; rm -rf out/table5
    x "$PY" eval.py config/demo_eval.py --checkpoint="$(last_ckpt "$DEMO/connector")" \
      --benchmarks="['$D/test.jsonl','$D/ood.jsonl']" --out_dir=out/table5 "${EVAL_ARGS[@]}"
    cp out/table5/summary.md out/table5/table5.md
    ;;

  fig5)  # Fig. 5: critical-token entropy vs val accuracy over the GRPO checkpoints (§5.1)
    demo_entropy
    rm -rf out/fig5; mkdir -p out/fig5
    cp "$DEMO/entropy/entropy.png" "$DEMO/entropy/entropy_table.json" out/fig5/
    echo "-> out/fig5/entropy.png (left panel: Fig. 5), out/fig5/entropy_table.json"
    ;;

  fig6)  # Fig. 6: GRPO with every module trainable vs frozen ViT vs frozen connector
    demo_grpo
    for arm in connector,llm vision,llm; do
      stage "$DEMO/fig6/${arm/,/_}" "$PY" grpo.py config/grpo_demo.py --init_from="$(last_ckpt "$DEMO/sft")" \
        --data="$D/train.jsonl" --out_dir="$DEMO/fig6/${arm/,/_}" --trainable="['${arm/,/\',\'}']" \
        --seed="$SEED" "${GRPO_ARGS[@]}"
      demo_eval "fig6_${arm/,/_}" "$(last_ckpt "$DEMO/fig6/${arm/,/_}")"
    done
    demo_eval grpo "$(last_ckpt "$DEMO/grpo")"
    acc_table out/fig6/fig6.md "Fig. 6 (demo): module activation in GRPO, final checkpoints" \
      "all trainable=$DEMO/eval/grpo" "frozen ViT=$DEMO/eval/fig6_connector_llm" \
      "frozen connector=$DEMO/eval/fig6_vision_llm"
    plot_curves out/fig6/fig6.png reward/mean,train/grad_norm,response/len_mean,entropy/mean \
      "all trainable=$DEMO/grpo/metrics.jsonl" "frozen ViT=$DEMO/fig6/connector_llm/metrics.jsonl" \
      "frozen connector=$DEMO/fig6/vision_llm/metrics.jsonl"
    ;;

  fig7_8)  # Figs. 7-8: curriculum (normal -> hard) and learning rate: the demo lr vs lr / 10
    demo_grpo
    # "hard problems": two-colour sums only, the hardest in-domain question type
    stage "$DEMO/data_hard" "$PY" synthetic.py --out="$DEMO/data_hard" --seed="$SEED" "${TASK_ARGS[@]}" \
      --question_types=sum_colors --n_train=1000 --n_val=0 --n_test=200 --n_ood=0 --n_sft=0 --n_sft_val=0 \
      --n_caption=0
    steps=$("$PY" -c 'import sys, train_utils as tu, grpo; print(tu.parse_config(grpo.Config, sys.argv[1:]).steps)' \
      config/grpo_demo.py "${GRPO_ARGS[@]}")
    lr=$("$PY" -c 'import sys, train_utils as tu, grpo; print(tu.parse_config(grpo.Config, sys.argv[1:]).lr / 10)' \
      config/grpo_demo.py "${GRPO_ARGS[@]}")
    stage "$DEMO/fig7_8/curriculum" "$PY" grpo.py config/grpo_demo.py --init_from="$(last_ckpt "$DEMO/sft")" \
      --curriculum="[('$D/train.jsonl', 0), ('$DEMO/data_hard/train.jsonl', $((steps / 2)))]" \
      --out_dir="$DEMO/fig7_8/curriculum" --seed="$SEED" "${GRPO_ARGS[@]}"
    stage "$DEMO/fig7_8/low_lr" "$PY" grpo.py config/grpo_demo.py --init_from="$(last_ckpt "$DEMO/sft")" \
      --data="$D/train.jsonl" --lr="$lr" --out_dir="$DEMO/fig7_8/low_lr" --seed="$SEED" "${GRPO_ARGS[@]}"
    hard=("$D/test.jsonl" "$DEMO/data_hard/test.jsonl")
    demo_eval fig7_grpo "$(last_ckpt "$DEMO/grpo")" "${hard[@]}"
    demo_eval fig7_curriculum "$(last_ckpt "$DEMO/fig7_8/curriculum")" "${hard[@]}"
    demo_eval fig7_low_lr "$(last_ckpt "$DEMO/fig7_8/low_lr")" "${hard[@]}"
    acc_table out/fig7_8/fig7_8.md \
      "Figs. 7-8 (demo): curriculum and learning rate, final checkpoints (test = normal, hard = sum_colors)" \
      "normal, demo lr=$DEMO/eval/fig7_grpo" "curriculum, demo lr=$DEMO/eval/fig7_curriculum" \
      "normal, lr / 10=$DEMO/eval/fig7_low_lr"
    plot_curves out/fig7_8/fig7_8.png reward/mean,reward/accuracy,entropy/mean,train/grad_norm \
      "normal, demo lr=$DEMO/grpo/metrics.jsonl" "curriculum, demo lr=$DEMO/fig7_8/curriculum/metrics.jsonl" \
      "normal, lr / 10=$DEMO/fig7_8/low_lr/metrics.jsonl"
    ;;

  fig9)  # Fig. 9: accuracy vs thinking budget
    demo_connector; rm -rf out/fig9
    x "$PY" eval.py config/demo_eval.py --checkpoint="$(last_ckpt "$DEMO/connector")" \
      --budgets="[16, 32, 48, 64, 128]" --answer_max_tokens=16 --benchmarks="['$D/test.jsonl']" --out_dir=out/fig9 \
      "${EVAL_ARGS[@]}"
    cp out/fig9/summary.md out/fig9/fig9.md
    ;;

  fig10)  # Fig. 10: token-entropy distribution (mean, share > 6.8) at successive GRPO steps
    demo_grpo
    rm -rf out/fig10
    x "$PY" entropy.py --checkpoints "$(last_ckpt "$DEMO/sft")" $(all_ckpts "$DEMO/grpo") --data "$D/val.jsonl" \
      --num_prompts 32 --max_new_tokens 160 --seed "$SEED" --out out/fig10 "${ENTROPY_ARGS[@]}"
    plot_curves out/fig10/fig10_training.png entropy/mean,entropy/high_frac,entropy/critical \
      "GRPO=$DEMO/grpo/metrics.jsonl"
    ;;

  fig11)  # Fig. 11: cold start vs self-incentive prompt (GRPO from the aligned model, without cold-start SFT)
    demo_grpo
    stage "$DEMO/fig11/self_incentive" "$PY" grpo.py config/grpo_demo.py --init_from="$(last_ckpt "$DEMO/caption")" \
      --data="$D/train.jsonl" --mode=nothink --system_prompt="$SELF_INCENTIVE_PROMPT" \
      --out_dir="$DEMO/fig11/self_incentive" --seed="$SEED" "${GRPO_ARGS[@]}"
    plot_curves out/fig11/fig11.png response/len_mean,reward/mean,reward/format,entropy/critical \
      "cold start=$DEMO/grpo/metrics.jsonl" "self-incentive prompt=$DEMO/fig11/self_incentive/metrics.jsonl"
    ;;
esac
