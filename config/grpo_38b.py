# GRPO of the 38B model after cold-start SFT (paper §3.3): the settings the paper states, the rest marked.
#   torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
#       grpo.py config/grpo_38b.py --init_from=out/sft_38b/step_NNNNNN --verifier_url=http://VERIFIER_HOST:8000
# Ablations: --trainable=vision,llm (§5.2, frozen connector), --lr=1e-6 (§5.4), --clip_eps_high=0.28 and
# --dynamic_sampling=True (§5.5), --curriculum="[('normal.jsonl', 0), ('hard.jsonl', 200)]" (§5.3).
# Memory plan per 80 GB GPU (memory_plan.py; python grpo.py config/grpo_38b.py --plan --plan_gpus=N
# --init_from=config/skywork-r1v3-38b.json): every module trainable is fp32 master + grad + Adam = 16 B/param,
# 615 GB of sharded state. N = 16: 35.8 GiB of it per GPU + 10.7 FSDP2 gathered + 19.1 activations (checkpointed,
# one 12,288-token sequence) = 65.6 GiB training peak; sampling 54.5 GiB (vLLM awake: 0.35 x 79.2 GiB = its TP-8
# slice of the bf16 weights, 8.9 GiB, + an 18.8 GiB KV cache; it sleeps while the policy trains); 71.3 GiB usable.
# N = 8 (one node) does not fit: 101.3 GiB training peak. Hence 2 nodes of 8 GPUs, one vLLM engine (TP 8) per node.
data = "../shared/data/mm-eureka-k12/k12.json"   # the paper's RL data is K12-style math; replace with the full set
out_dir = "out/grpo_38b"
steps = 300                        # not given in the paper
# §3.3: 1,024 rollouts per episode = 32 prompts x 32 samples, one mini-batch, one gradient step, clip 0.2, no KL
prompts_per_step = 32
rollouts_per_prompt = 32
temperature = 1.0
mini_batches = 1                   # so the ratio is exactly 1: no old-log-prob pass
ppo_epochs = 1
clip_eps_low = 0.2
clip_eps_high = 0.2
kl_beta = 0.0
loss_agg = "seq-mean-token-mean"   # eq. 7's 1/|y| per sequence
lr = 1e-5                          # §3.3 (§5.4 discusses 1e-6)
lr_schedule = "constant"           # not given in the paper
trainable = ["vision", "connector", "llm"]   # §3.3 / §5.2: all modules trainable
# §3.3: context and output grow "from 4,096 to 8,192"; the step of the switch is not given
max_prompt_tokens = 4096
response_length_schedule = [(0, 4096), (150, 8192)]
# engines
rollout_backend = "vllm"
vllm_tensor_parallel_size = 8
vllm_gpu_memory_utilization = 0.35
micro_batch_size = 1               # one 4k-12k token sequence per forward on each GPU
dtype = "bfloat16"
activation_checkpointing = True
logprob_chunk_size = 1024
reward_workers = 2                 # Math-Verify processes per rank
save_every = 25
keep_last = 3
wandb_project = "skywork-r1v3-grpo"
run_name = "grpo_38b"
