# Demo stage 4: connector-only tuning after RL (paper §3.4; connector_tune.py): only mlp1 trains, on the
# teacher traces (the demo's stand-in for the paper's 10k multi-domain samples), with early stopping.
#   python connector_tune.py config/demo_connector.py --checkpoint=out/demo/grpo/step_NNNNNN --data=...
variant = "connector"
out_dir = "out/demo/connector"
max_steps = 30
global_batch_size = 32
micro_batch_size = 32
lr = 1e-4
warmup_ratio = 0.1
weight_decay = 0.0
max_seq_len = 512
val_fraction = 0.0
eval_every = 10
patience = 2
save_dtype = "float32"
keep_last = 1
log_every = 10
wandb = True                     # only under WANDB_MODE=offline or online: demo.sh defaults to disabled
run_name = "demo_connector"
