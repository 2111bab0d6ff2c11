# Evaluation of a 38B checkpoint (paper §4, Table 1): VLMEvalKit TSVs, T = 1.0, 16,384 new tokens, avg@5.
#   python eval.py config/eval_38b.py --checkpoint=CKPT --benchmarks="['MMMU_DEV_VAL.tsv']" --split=validation
# One process drives a tensor-parallel vLLM engine over the node's 8 GPUs (no torchrun).
# Table 4: --mode=think,nothink,nowait; Fig. 9: --budgets="[1024, 2048, 4096, 8192, 16384]"; Table 5 is always
# computed. With an LLM verifier (MathVista answer extraction, open answers): --verifier_url=http://HOST:8000.
k = 5
temperature = 1.0
top_p = 1.0
max_new_tokens = 16384
answer_max_tokens = 1024           # after a forced </think> (Fig. 9 budgets)
backend = "vllm"
tensor_parallel_size = 8
gpu_memory_utilization = 0.9
max_model_len = 32768              # prompt (up to 7 images x 12 tiles x 256 tokens on MMMU) + 16k generation
max_images = 8
vllm_chunk = 256
wandb_project = "r1v3-eval"
