# Cold-start SFT of the 38B model (paper §2, §3.2), also the SFT arm of Table 3 (§6.1, math data).
#   torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
#       sft.py config/sft_38b.py --checkpoint=InternVL-38B_DIR --data=coldstart.jsonl
# coldstart.jsonl: `python reject.py ...` (about 12k kept of 20k questions in the paper).
# §3.4 and §6.1 state the batch, lr and schedule below. The cold-start run's own values are not given,
# so it uses the same ones.
# Memory plan per 80 GB GPU (memory_plan.py; python sft.py config/sft_38b.py --plan --plan_gpus=N
# --checkpoint=config/skywork-r1v3-38b.json): all 38B parameters trainable is fp32 master + grad + Adam =
# 16 B/param, 615 GB. N = 16: 35.8 GiB of it per GPU + 10.7 FSDP2 gathered + 23.0 activations (checkpointed, one
# packed 16,384-token row) = 69.4 GiB peak of 71.3 usable. N = 8 (one node) does not fit, so 2 nodes of 8 GPUs.
global_batch_size = 64
micro_batch_size = 1
lr = 1e-5
schedule = "cosine"
warmup_ratio = 0.03
epochs = 2.0                 # not given in the paper
max_seq_len = 16384
overflow = "truncate"
packing = True               # one padding-free row of max_seq_len tokens per forward; CoT traces are 2-8k
trainable = ["vision", "connector", "llm"]
val_fraction = 0.02
eval_every = 20
patience = 0                 # track and keep the best checkpoint, but never stop early
save_every = 50
keep_last = 2
save_dtype = "bfloat16"      # as released; resume stays exact through the fp32 master shards
compute_dtype = "bfloat16"
activation_checkpointing = True
loss_chunk_tokens = 1024     # lm_head + log-softmax rows at a time: 4096 would not fit 16 x 80 GB by the memory plan
out_dir = "out/sft_38b"
wandb_project = "r1v3-sft"
