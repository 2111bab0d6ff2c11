# Demo stage: GRPO of the tiny model on the synthetic task (CPU), after the demo's SFT (config/demo_sft.py).
#   python grpo.py config/grpo_demo.py --init_from=out/demo/sft/step_000150 --data=out/demo/data/train.jsonl
# Same recipe as config/grpo_38b.py at toy scale: fewer prompts and rollouts, short answers, a higher lr.
data = "out/demo/data/train.jsonl"
init_from = "out/demo/sft/step_000150"
out_dir = "out/demo/grpo"
steps = 60
prompts_per_step = 8
rollouts_per_prompt = 8
response_length_schedule = [(0, 96), (40, 128)]
max_prompt_tokens = 512
lr = 1e-4
micro_batch_size = 16
rollout_backend = "builtin"
rollout_batch_size = 64
dtype = "float32"
reward_workers = 0                 # in-process Math-Verify: fewer processes on 2 cores
save_every = 20
keep_last = 2
run_name = "demo_grpo"
