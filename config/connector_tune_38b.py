# Connector-only tuning of the 38B model after RL (paper §3.4, §5.6, Table 2) on the 10k multi-domain samples.
#   torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
#       connector_tune.py config/connector_tune_38b.py --checkpoint=RL_CKPT \
#       --data=multi_domain_10k.jsonl [--variant=connector+llm | --variant=connector+vision+llm]
# connector_tune.Config already has the paper's defaults: 2 epochs, batch 64, lr 1e-5, cosine,
# warmup 0.03, max length 16384, early stopping. Only the run settings are here.
# Memory plan per 80 GB GPU (python connector_tune.py config/connector_tune_38b.py --plan --plan_gpus=N
# --checkpoint=config/skywork-r1v3-38b.json): connector only, 43.1 GiB peak on one node (N = 8): the fp32 frozen
# weights are 17.9 GiB per GPU, mlp1's Adam state is tiny, and backward still runs through the whole LLM to reach
# mlp1, so activation checkpointing is on. The Table 2 variants with the LLM trainable do not fit one node
# (8 GPUs: 97.4 and 105.2 GiB; 16 GPUs: 65.5 and 69.4 GiB, of 71.3 GiB usable), hence launch.sh's 2 nodes.
variant = "connector"
micro_batch_size = 1
packing = True
val_fraction = 0.02
eval_every = 20
patience = 3
keep_last = 2
save_dtype = "bfloat16"
compute_dtype = "bfloat16"
activation_checkpointing = True
loss_chunk_tokens = 1024     # lm_head + log-softmax rows at a time: 4096 would not fit the LLM variants on 16 GPUs
out_dir = "out/connector_tune_38b"
