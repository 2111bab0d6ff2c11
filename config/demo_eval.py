# Demo evaluation (eval.py) of a tiny checkpoint on the synthetic held-out splits, as Table 1 is run:
# temperature 1.0, avg@k, on CPU with the built-in sampler.
#   python eval.py config/demo_eval.py --checkpoint=DIR --benchmarks="['out/demo/data/test.jsonl']"
k = 4
temperature = 1.0
max_new_tokens = 160             # teacher traces are ~60-90 tokens
max_items = 200
batch_size = 100
backend = "builtin"
device = "cpu"
dtype = "float32"
wandb = True                     # only under WANDB_MODE=offline or online: demo.sh defaults to disabled
reward_workers = 0                # in-process Math-Verify: no pool start-up per eval on 2 cores
