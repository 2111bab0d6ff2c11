#!/usr/bin/env bash
# One target per paper table/figure, plus the CPU demo and the tests.
#   bash launch.sh demo        the whole pipeline on a laptop (fresh venv included)
#   bash launch.sh test        the test suite (fresh venv included)
#   bash launch.sh TARGET      a paper result: table1..table5, fig5, fig6, fig7_8, fig9, fig10, fig11
#
# Every target writes its table or plot to out/<target>/. Two scales:
#   SCALE=paper (default)  8 GPUs per node, 38B configs under config/, the paper's data (paths below)
#   SCALE=demo             CPU, the tiny model on the synthetic task; reuses out/demo (builds what is missing)
#   SCALE=ci               the demo with fewer steps (tests/test_demo.py); DEMO=out/ci
# Environment (paper scale; defaults in brackets):
#   NPROC [8]  TORCHRUN ["torchrun --nproc_per_node=$NPROC"; multi-node: add --nnodes/--rdzv-* here]
#   MODEL [checkpoints/Skywork-R1V3-38B]  the released model (Tables 1, 4, 5, Fig. 9)
#   BASE_MODEL [checkpoints/InternVL-38B] the cold-start base (§3.2)
#   COLDSTART_DATA [data/coldstart.jsonl]  RL_DATA [../shared/data/mm-eureka-k12/k12.json]
#   RL_VAL [data/rl_val.jsonl]  HARD_DATA [data/hard.jsonl]  CONNECTOR_DATA [data/multi_domain_10k.jsonl]
#   DISTILLED_DATA [data/distilled_math.jsonl]  BENCH_DIR [benchmarks] (VLMEvalKit TSVs: MMMU_DEV_VAL.tsv, ...)
#   SFT_CKPT [best of out/sft_38b]  RL_CKPT [last of out/grpo_38b]  VERIFIER_URL [none: rule reward only]
#   DRY_RUN=1 prints the paper-scale commands instead of running them.
# Demo: SEED [0] (DEMO [out/demo, out/demo_seedN for SEED=N]), OMP_NUM_THREADS [1], WANDB_MODE [disabled].
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

target=${1:-help}
SCALE=${SCALE:-paper}
case "$SCALE" in paper|demo|ci) ;; *) echo "SCALE=$SCALE: expected paper, demo or ci" >&2; exit 2 ;; esac

# -----------------------------------------------------------------------------
# helpers

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

acc_table() {  # acc_table OUT.md TITLE LABEL=EVAL_DIR...: one row per eval.py out_dir, a column per benchmark run
  "$PY" - "$@" <<'EOF'
import json, sys
from pathlib import Path
out, title, pairs = sys.argv[1], sys.argv[2], [a.split("=", 1) for a in sys.argv[3:]]
rows, cols = [], []
for label, d in pairs:
    runs = json.loads((Path(d) / "summary.json").read_text())["runs"]
    rows.append((label, runs))
    cols += sorted((k for k in runs if k not in cols), key=lambda k: (k.split("/")[0] != "test", k))
name = lambda k: k.replace("/think/full", "")
lines = [f"## {title}", "", "| | " + " | ".join(name(c) for c in cols) + " | tokens |",
         "|---" * (len(cols) + 2) + "|"]
for label, runs in rows:
    cells = [f"{100 * runs[c]['accuracy']:.1f} ± {100 * runs[c]['std']:.1f}" if c in runs else "-" for c in cols]
    tokens = sum(r["avg_tokens"] for r in runs.values()) / len(runs)
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {tokens:.0f} |")
k = {r["k"] for _, runs in rows for r in runs.values()}
lines += ["", f"accuracy (%) = avg@{'/'.join(map(str, sorted(k)))} at T = 1.0 ± std over the k runs"]
Path(out).parent.mkdir(parents=True, exist_ok=True)
Path(out).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
}

plot_curves() {  # plot_curves OUT.png METRIC,METRIC... LABEL=metrics.jsonl...: training curves side by side
  "$PY" - "$@" <<'EOF'
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, metrics, runs = sys.argv[1], sys.argv[2].split(","), [a.split("=", 1) for a in sys.argv[3:]]
fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
for label, path in runs:
    rows = [json.loads(line) for line in open(path)]
    for ax, m in zip(axes[0], metrics):
        pts = [(r["step"], r[m]) for r in rows if isinstance(r.get(m), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
for ax, m in zip(axes[0], metrics):
    ax.set_title(m); ax.set_xlabel("step"); ax.legend(fontsize=7)
fig.tight_layout(); fig.savefig(out, dpi=110)
print(f"wrote {out}")
EOF
}

# -----------------------------------------------------------------------------
# demo scale: the tiny model on the synthetic task (synthetic.py), CPU only

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

demo_env() {
  export WANDB_MODE=${WANDB_MODE:-disabled}
  # one thread per process: measured faster than 2 on a shared 2-core box (tiny matmuls, thread sync dominates)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-${OMP_NUM_THREADS:-1}}
  export PYTHONUNBUFFERED=1
}

# the task, pinned here so that a change of synthetic.py's defaults cannot silently change the demo
TASK_ARGS=(--image_size=112 --grid=2 --min_shapes=1 --max_shapes=4 --answer_values="(0, 1, 2, 3)" --mc_fraction=0.5
  --question_types="('count_shape', 'count_color', 'sum_colors')" --ood_types="('difference',)"
  --detour_fraction=0.3 --noise_fraction=0.0 --caption_kinds="('list',)")

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
  "$PY" - "$DEMO" >> "$DEMO/results.md" <<'EOF'
import json, sys
from pathlib import Path
demo = Path(sys.argv[1])
acc = lambda stage: json.loads((demo / "eval" / stage / "summary.json").read_text())["runs"]["test/think/full"]["accuracy"]
entropy = json.loads((demo / "entropy" / "entropy_table.json").read_text())
best = entropy["checkpoints"][0]
corr = entropy["correlation"] or {}
fmt = lambda v: "-" if v is None else f"{v:.3f}"
print(f"\nGRPO - cold-start SFT on test: {100 * (acc('grpo') - acc('sft')):+.1f} points\n")
print(f"Entropy-based selection over the GRPO checkpoints (§5.1): {best['name']}, critical-token entropy "
      f"{fmt(best['critical_entropy_mean'])} nats, val accuracy {fmt(best['accuracy'])}; Pearson(entropy, val "
      f"accuracy) over {len(entropy['checkpoints'])} checkpoints {fmt(corr.get('pearson'))} "
      f"({demo / 'entropy' / 'entropy.png'})")
EOF
  tail -n 4 "$DEMO/results.md"
  echo "demo: $((SECONDS - t0)) s for the stages, $SECONDS s in all (venv setup included) -> $DEMO/results.md"
}

# -----------------------------------------------------------------------------
# paper scale: 38B on GPUs

NPROC=${NPROC:-8}
TORCHRUN=${TORCHRUN:-torchrun --nproc_per_node=$NPROC}
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
VERIFIER=(); [ -z "${VERIFIER_URL:-}" ] || VERIFIER=(--verifier_url="$VERIFIER_URL")

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
  x $TORCHRUN grpo.py config/grpo_38b.py --init_from="$init" --data="$RL_DATA" --out_dir="$out" "${VERIFIER[@]}" "$@"
}

# -----------------------------------------------------------------------------
# targets

case "$target" in
  setup)
    setup
    ;;
  test)
    setup
    WANDB_MODE=${WANDB_MODE:-disabled} "$PY" -m pytest -q tests
    ;;

  demo)  # data -> init -> captions -> cold-start SFT -> GRPO -> connector-only -> eval -> entropy selection
    setup; demo_env
    [ "$SCALE" != paper ] || SCALE=demo
    demo
    ;;

  coldstart)  # the main pipeline, step 1: cold-start SFT of the base model (§3.2)
    if [ "$SCALE" = paper ]; then
      x $TORCHRUN sft.py config/sft_38b.py --checkpoint="$BASE_MODEL" --data="$COLDSTART_DATA" --out_dir=out/sft_38b
    else setup; demo_env; demo_sft; fi
    ;;
  grpo)  # step 2: GRPO from the cold-start checkpoint (§3.3)
    if [ "$SCALE" = paper ]; then paper_grpo out/grpo_38b "$(paper_sft_ckpt)"
    else setup; demo_env; demo_grpo; fi
    ;;
  connector)  # step 3: connector-only tuning after RL (§3.4)
    if [ "$SCALE" = paper ]; then
      x $TORCHRUN connector_tune.py config/connector_tune_38b.py --checkpoint="$(paper_rl_ckpt)" \
        --data="$CONNECTOR_DATA" --out_dir=out/connector_tune_38b
    else setup; demo_env; demo_connector; fi
    ;;

  table1)  # Table 1: the eval suite, T = 1.0, 16k tokens, avg@5
    if [ "$SCALE" = paper ]; then
      shopt -s nullglob
      benches=("$BENCH_DIR"/*.tsv)
      [ ${#benches[@]} -gt 0 ] || { [ "${DRY_RUN:-0}" = 1 ] && benches=("$MMMU" "$MATHVISTA"); } ||
        { echo "no *.tsv in BENCH_DIR=$BENCH_DIR" >&2; exit 1; }
      for b in "${benches[@]}"; do paper_eval out/table1 "$MODEL" "$b"; done
      [ "${DRY_RUN:-0}" = 1 ] || cp out/table1/summary.md out/table1/table1.md
    else
      setup; demo_env; demo_connector
      rm -rf out/table1
      x "$PY" eval.py config/demo_eval.py --checkpoint="$(last_ckpt "$DEMO/connector")" --k=5 \
        --benchmarks="['$D/test.jsonl','$D/ood.jsonl','$D/val.jsonl']" --out_dir=out/table1 "${EVAL_ARGS[@]}"
      cp out/table1/summary.md out/table1/table1.md
    fi
    echo "-> out/table1/table1.md"
    ;;

  table2)  # Table 2: tuning connector / connector+LLM / connector+ViT+LLM after RL (MMMU)
    if [ "$SCALE" = paper ]; then
      rl=$(paper_rl_ckpt)
      paper_eval out/table2/eval_rl "$rl" "$MMMU"
      for v in connector connector+llm connector+vision+llm; do
        x $TORCHRUN connector_tune.py config/connector_tune_38b.py --checkpoint="$rl" --data="$CONNECTOR_DATA" \
          --variant="$v" --out_dir="out/table2/$v"
        paper_eval "out/table2/eval_$v" "$(sft_best "out/table2/$v")" "$MMMU"
      done
      [ "${DRY_RUN:-0}" = 1 ] || acc_table out/table2/table2.md "Table 2: tuning after RL (MMMU)" \
        "RL stage (baseline)=out/table2/eval_rl" "connector-only=out/table2/eval_connector" \
        "connector + LLM=out/table2/eval_connector+llm" "connector + ViT + LLM=out/table2/eval_connector+vision+llm"
    else
      setup; demo_env; demo_connector
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
    fi
    ;;

  table3)  # Table 3: RL vs SFT on the same (math) data, in-domain vs out-of-domain
    if [ "$SCALE" = paper ]; then
      sft0=$(paper_sft_ckpt)
      # the SFT arm's data: reasoning traces distilled from the RL model on the RL questions (§6.1)
      [ -f "$DISTILLED_DATA" ] || x "$PY" reject.py --checkpoint="$MODEL" --data="$RL_DATA" \
        --out="$DISTILLED_DATA" --k=8 --backend=vllm --tensor_parallel_size="$NPROC" "${VERIFIER[@]}"
      x $TORCHRUN sft.py config/sft_38b.py --checkpoint="$sft0" --data="$DISTILLED_DATA" --out_dir=out/table3/sft
      for arm in "baseline=$sft0" "rl=$(paper_rl_ckpt)" "sft=$(sft_best out/table3/sft)"; do
        paper_eval "out/table3/eval_${arm%%=*}" "${arm#*=}" "$MATHVISTA"
        paper_eval "out/table3/eval_${arm%%=*}" "${arm#*=}" "$MMMU"
      done
      [ "${DRY_RUN:-0}" = 1 ] || acc_table out/table3/table3.md \
        "Table 3: RL vs SFT (in-domain MathVista, out-of-domain MMMU)" "baseline (cold start)=out/table3/eval_baseline" \
        "RL=out/table3/eval_rl" "SFT=out/table3/eval_sft"
    else
      setup; demo_env; demo_grpo
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
      acc_table out/table3/table3.md "Table 3 (demo): RL vs SFT on the same data (test = in-domain, ood = unseen question type)" \
        "baseline (cold start)=$DEMO/eval/sft" "RL=$DEMO/eval/grpo" "SFT=$DEMO/eval/table3_sft"
    fi
    ;;

  table4)  # Table 4: slow thinking vs NoThink vs NoWait (accuracy and tokens)
    if [ "$SCALE" = paper ]; then
      paper_eval out/table4 "$MODEL" "$MMMU" --mode=think,nothink,nowait
    else
      setup; demo_env; demo_connector; rm -rf out/table4
      x "$PY" eval.py config/demo_eval.py --checkpoint="$(last_ckpt "$DEMO/connector")" --mode=think,nothink,nowait \
        --benchmarks="['$D/test.jsonl']" --out_dir=out/table4 "${EVAL_ARGS[@]}"
    fi
    [ "${DRY_RUN:-0}" = 1 ] || cp out/table4/summary.md out/table4/table4.md
    ;;

  table5)  # Table 5: accuracy with / without "I can't see the image" in the CoT
    if [ "$SCALE" = paper ]; then
      paper_eval out/table5 "$MODEL" "$MMMU"
    else
      setup; demo_env; demo_connector; rm -rf out/table5
      x "$PY" eval.py config/demo_eval.py --checkpoint="$(last_ckpt "$DEMO/connector")" \
        --benchmarks="['$D/test.jsonl','$D/ood.jsonl']" --out_dir=out/table5 "${EVAL_ARGS[@]}"
    fi
    [ "${DRY_RUN:-0}" = 1 ] || cp out/table5/summary.md out/table5/table5.md
    ;;

  fig5)  # Fig. 5: critical-token entropy vs accuracy over the GRPO checkpoints (checkpoint selection, §5.1)
    if [ "$SCALE" = paper ]; then
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
    else
      setup; demo_env; demo_entropy
      rm -rf out/fig5; mkdir -p out/fig5
      cp "$DEMO/entropy/entropy.png" "$DEMO/entropy/entropy_table.json" out/fig5/
      echo "-> out/fig5/entropy.png (left panel: Fig. 5), out/fig5/entropy_table.json"
    fi
    ;;

  fig6)  # Fig. 6: GRPO with every module trainable vs frozen ViT vs frozen connector
    if [ "$SCALE" = paper ]; then
      paper_grpo out/fig6/connector_llm "$(paper_sft_ckpt)" --trainable="['connector','llm']" --run_name=fig6_frozen_vit
      paper_grpo out/fig6/vision_llm "$(paper_sft_ckpt)" --trainable="['vision','llm']" --run_name=fig6_frozen_connector
      runs=("all trainable=out/grpo_38b/metrics.jsonl" "frozen ViT=out/fig6/connector_llm/metrics.jsonl"
            "frozen connector=out/fig6/vision_llm/metrics.jsonl")
      for arm in connector_llm vision_llm; do
        paper_eval "out/fig6/eval_$arm" "$(last_ckpt "out/fig6/$arm")" "$MATHVISTA"
      done
    else
      setup; demo_env; demo_grpo
      for arm in connector,llm vision,llm; do
        stage "$DEMO/fig6/${arm/,/_}" "$PY" grpo.py config/grpo_demo.py --init_from="$(last_ckpt "$DEMO/sft")" \
          --data="$D/train.jsonl" --out_dir="$DEMO/fig6/${arm/,/_}" --trainable="['${arm/,/\',\'}']" \
          --seed="$SEED" "${GRPO_ARGS[@]}"
        demo_eval "fig6_${arm/,/_}" "$(last_ckpt "$DEMO/fig6/${arm/,/_}")"
      done
      demo_eval grpo "$(last_ckpt "$DEMO/grpo")"
      runs=("all trainable=$DEMO/grpo/metrics.jsonl" "frozen ViT=$DEMO/fig6/connector_llm/metrics.jsonl"
            "frozen connector=$DEMO/fig6/vision_llm/metrics.jsonl")
      acc_table out/fig6/fig6.md "Fig. 6 (demo): module activation in GRPO, final checkpoints" \
        "all trainable=$DEMO/eval/grpo" "frozen ViT=$DEMO/eval/fig6_connector_llm" \
        "frozen connector=$DEMO/eval/fig6_vision_llm"
    fi
    [ "${DRY_RUN:-0}" = 1 ] || { mkdir -p out/fig6; plot_curves out/fig6/fig6.png \
      reward/mean,train/grad_norm,response/len_mean,entropy/mean "${runs[@]}"; }
    ;;

  fig7_8)  # Figs. 7-8: curriculum (normal -> hard) and learning rate 1e-5 vs 1e-6
    if [ "$SCALE" = paper ]; then
      paper_grpo out/fig7_8/curriculum "$(paper_sft_ckpt)" --curriculum="[('$RL_DATA', 0), ('$HARD_DATA', ${SWITCH_STEP:-150})]" \
        --run_name=fig7_curriculum
      paper_grpo out/fig7_8/lr1e-6 "$(paper_sft_ckpt)" --lr=1e-6 --run_name=fig7_lr1e-6
      runs=("normal, lr 1e-5=out/grpo_38b/metrics.jsonl" "curriculum, lr 1e-5=out/fig7_8/curriculum/metrics.jsonl"
            "normal, lr 1e-6=out/fig7_8/lr1e-6/metrics.jsonl")
      for arm in curriculum lr1e-6; do
        paper_eval "out/fig7_8/eval_$arm" "$(last_ckpt "out/fig7_8/$arm")" "$RL_VAL"
      done
    else
      setup; demo_env; demo_grpo
      # "hard problems": two-colour sums only, the hardest in-domain question type
      stage "$DEMO/data_hard" "$PY" synthetic.py --out="$DEMO/data_hard" --seed="$SEED" "${TASK_ARGS[@]}" --question_types=sum_colors \
        --n_train=1000 --n_val=0 --n_test=200 --n_ood=0 --n_sft=0 --n_sft_val=0 --n_caption=0
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
      runs=("normal, demo lr=$DEMO/grpo/metrics.jsonl" "curriculum, demo lr=$DEMO/fig7_8/curriculum/metrics.jsonl"
            "normal, lr / 10=$DEMO/fig7_8/low_lr/metrics.jsonl")
      acc_table out/fig7_8/fig7_8.md "Figs. 7-8 (demo): curriculum and learning rate, final checkpoints (test = normal, hard = sum_colors)" \
        "normal, demo lr=$DEMO/eval/fig7_grpo" "curriculum, demo lr=$DEMO/eval/fig7_curriculum" \
        "normal, lr / 10=$DEMO/eval/fig7_low_lr"
    fi
    [ "${DRY_RUN:-0}" = 1 ] || { mkdir -p out/fig7_8; plot_curves out/fig7_8/fig7_8.png \
      reward/mean,reward/accuracy,entropy/mean,train/grad_norm "${runs[@]}"; }
    ;;

  fig9)  # Fig. 9: accuracy vs thinking budget
    if [ "$SCALE" = paper ]; then
      paper_eval out/fig9 "$MODEL" "$MMMU" --budgets="[1024, 2048, 4096, 8192, 16384]"
    else
      setup; demo_env; demo_connector; rm -rf out/fig9
      x "$PY" eval.py config/demo_eval.py --checkpoint="$(last_ckpt "$DEMO/connector")" --budgets="[16, 32, 48, 64, 128]" \
        --answer_max_tokens=16 --benchmarks="['$D/test.jsonl']" --out_dir=out/fig9 "${EVAL_ARGS[@]}"
    fi
    [ "${DRY_RUN:-0}" = 1 ] || cp out/fig9/summary.md out/fig9/fig9.md
    ;;

  fig10)  # Fig. 10: token-entropy distribution (mean, share > 6.8) at successive GRPO steps
    if [ "$SCALE" = paper ]; then
      # the responses: vLLM samples on RL_VAL per checkpoint (fig5 writes the same ones; they are reused)
      ckpts=($(all_ckpts out/grpo_38b))
      mkdir -p out/fig10
      [ "${DRY_RUN:-0}" = 1 ] || : > out/fig10/generations.jsonl
      for c in "${ckpts[@]}"; do
        n=$(basename "$c")
        [ -f "out/fig5/val_$n/summary.json" ] || paper_eval "out/fig5/val_$n" "$c" "$RL_VAL" --k=1
        [ "${DRY_RUN:-0}" = 1 ] || cat out/fig5/val_"$n"/*/think_full/generations.jsonl >> out/fig10/generations.jsonl
      done
      x "$PY" entropy.py --checkpoints "${ckpts[@]}" --data "$RL_VAL" --generations out/fig10/generations.jsonl \
        --device cuda --dtype bfloat16 --out out/fig10
      [ "${DRY_RUN:-0}" = 1 ] || plot_curves out/fig10/fig10_training.png entropy/mean,entropy/high_frac,entropy/critical \
        "GRPO=out/grpo_38b/metrics.jsonl"
    else
      setup; demo_env; demo_grpo
      rm -rf out/fig10
      x "$PY" entropy.py --checkpoints "$(last_ckpt "$DEMO/sft")" $(all_ckpts "$DEMO/grpo") --data "$D/val.jsonl" \
        --num_prompts 32 --max_new_tokens 160 --seed "$SEED" --out out/fig10 "${ENTROPY_ARGS[@]}"
      plot_curves out/fig10/fig10_training.png entropy/mean,entropy/high_frac,entropy/critical \
        "GRPO=$DEMO/grpo/metrics.jsonl"
    fi
    ;;

  fig11)  # Fig. 11: cold start vs self-incentive prompt (GRPO from the model without cold-start SFT)
    prompt="You are a helpful assistant. Think before you answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{}."
    if [ "$SCALE" = paper ]; then
      paper_grpo out/fig11/self_incentive "$BASE_MODEL" --mode=nothink --system_prompt="$prompt" \
        --run_name=fig11_self_incentive
      runs=("cold start=out/grpo_38b/metrics.jsonl" "self-incentive prompt=out/fig11/self_incentive/metrics.jsonl")
    else
      setup; demo_env; demo_grpo
      stage "$DEMO/fig11/self_incentive" "$PY" grpo.py config/grpo_demo.py --init_from="$(last_ckpt "$DEMO/caption")" \
        --data="$D/train.jsonl" --mode=nothink --system_prompt="$prompt" --out_dir="$DEMO/fig11/self_incentive" \
        --seed="$SEED" "${GRPO_ARGS[@]}"
      runs=("cold start=$DEMO/grpo/metrics.jsonl" "self-incentive prompt=$DEMO/fig11/self_incentive/metrics.jsonl")
    fi
    [ "${DRY_RUN:-0}" = 1 ] || { mkdir -p out/fig11; plot_curves out/fig11/fig11.png \
      response/len_mean,reward/mean,reward/format,entropy/critical "${runs[@]}"; }
    ;;

  *)
    sed -n '2,19p' "$0"
    ;;
esac
