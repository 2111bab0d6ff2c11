# Demo stage 1: alignment / caption pretraining of the fresh tiny model (sft.py on synthetic caption.jsonl).
# A tiny random model has never seen an image: before it can reason about the board it must learn to read it,
# so every module trains on cell-by-cell descriptions first (InternVL's pretraining stage, at toy scale).
#   python sft.py config/demo_caption.py --checkpoint=out/demo/init --data=out/demo/data/caption.jsonl
out_dir = "out/demo/caption"
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
save_dtype = "float32"       # a tiny model: keep exact weights between stages
keep_last = 1
log_every = 25
wandb = True                     # only under WANDB_MODE=offline or online: demo.sh defaults to disabled
run_name = "demo_caption"
