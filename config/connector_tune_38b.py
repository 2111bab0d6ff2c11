# Connector-only tuning of the 38B model after RL (paper §3.4, §5.6, Table 2) on the 10k multi-domain samples.
#   torchrun --nproc_per_node=8 connector_tune.py config/connector_tune_38b.py --checkpoint=RL_CKPT \
#       --data=multi_domain_10k.jsonl [--variant=connector+llm | --variant=connector+vision+llm]
# connector_tune.Config already has the paper's defaults: 2 epochs, batch 64, lr 1e-5, cosine,
# warmup 0.03, max length 16384, early stopping. Only the run settings are here.
# Memory (connector only): fp32 frozen weights are 154 GB, about 19 GB per GPU over 8, and mlp1's Adam
# state is tiny. Backward still runs through the whole LLM to reach mlp1, so activation checkpointing is on.
# The Table 2 variants with the LLM trainable need the 2-node layout of config/sft_38b.py.
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
out_dir = "out/connector_tune_38b"
