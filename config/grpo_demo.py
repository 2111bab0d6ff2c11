# Demo stage: GRPO of the tiny model on the synthetic task (CPU), after the demo's SFT (config/demo_sft.py).
#   python grpo.py config/grpo_demo.py --init_from=out/demo/sft/step_000300 --data=out/demo/data/train.jsonl
# Same recipe as config/grpo_38b.py at toy scale: fewer prompts and rollouts, short answers, a higher lr.
# A tiny model's RL is fragile: at a constant 5e-4 the policy collapses within 10 steps (format lost, answers
# run to the length limit), at 2e-4 it improves for ~70 steps and then drifts; so warmup, then cosine decay.
data = "out/demo/data/train.jsonl"
init_from = "out/demo/sft/step_000300"
out_dir = "out/demo/grpo"
steps = 80
prompts_per_step = 16
rollouts_per_prompt = 4                # more prompts, smaller groups: +13 vs +8 points at 8 x 8 (same cost)
response_length_schedule = [(0, 128)]
max_prompt_tokens = 512
lr = 2e-4
lr_schedule = "cosine"
warmup_steps = 10
min_lr_ratio = 0.1
micro_batch_size = 16
micro_batch_tokens = 2048             # packed rows of <= 2048 tokens (bench/bench_train.py: 0.79x the padded time)
rollout_backend = "builtin"
rollout_batch_size = 64
dtype = "float32"
reward_workers = 0                 # in-process Math-Verify: fewer processes on 2 cores
save_every = 20
keep_last = 10                     # every checkpoint stays, for entropy-based selection (§5.1)
run_name = "demo_grpo"
