# Demo stage 2: cold-start SFT on the scripted teacher's <think> traces (paper §3.2; sft.py on sft.jsonl).
# Stopped early on purpose (max_steps well before convergence) so that GRPO has room to improve.
#   python sft.py config/demo_sft.py --checkpoint=out/demo/caption/step_000300 --data=out/demo/data/sft.jsonl
out_dir = "out/demo/sft"
trainable = ["vision", "connector", "llm"]
max_steps = 300
global_batch_size = 16
micro_batch_size = 16
lr = 2e-3
schedule = "cosine"
warmup_ratio = 0.07
min_lr_ratio = 0.1
weight_decay = 0.0
betas = (0.9, 0.95)
max_seq_len = 512
eval_every = 100
save_dtype = "float32"
keep_last = 1
log_every = 25
wandb = True                     # only under WANDB_MODE=offline or online: demo.sh defaults to disabled
run_name = "demo_sft"
