"""
Host syncs per training forward, counted on CPU: the proxy for a GPU stall. On a GPU every device-to-host read
(.item(), .tolist(), bool()/int()/float() of a tensor, nonzero, boolean-mask indexing) waits for the whole queue
of kernels before it; one inside each decoder layer stalls the GPU once per layer, and again in the
activation-checkpoint recompute of each layer during backward. This counts those calls (each such torch.Tensor
method is wrapped with a counter) in model.forward of one packed GRPO micro-batch (grpo.py's training forward:
data.collate_responses, images included), and in its backward with activation checkpointing
(train_utils.checkpoint_block on every ViT and LLM block, as --activation_checkpointing=True does).

    python bench/bench_host_syncs.py [--layers=24] [--sequences=8] [--shared_prefix=True]

Counts do not depend on the machine: run it on any checkout to compare (it needs only model.py, data.py,
train_utils.py).
"""
import collections
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import configurator  # noqa: E402
import data  # noqa: E402
import chat  # noqa: E402
import model as M  # noqa: E402
import train_utils as tu  # noqa: E402

# calls that read a tensor's value on the host (on CUDA: a cudaStreamSynchronize or a blocking copy)
SYNC_METHODS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "masked_select",
                "unique", "cpu", "numpy"}


@dataclass
class Args:
    layers: int = 24              # LLM decoder layers (InternVL3-1B has 24): the per-layer syncs scale with it
    sequences: int = 8            # rollouts in the micro-batch: 2 prompts (one with an image) x sequences/2
    shared_prefix: bool = True    # also count the shared-prefix forward (when this checkout has it)


class SyncCounter:
    """Counts the calls of SYNC_METHODS (and tensor[bool mask]) while active, by wrapping those torch.Tensor
    methods: a TorchFunctionMode is not seen by the recompute that autograd runs during backward."""

    def __enter__(self):
        self.counts, self.saved = collections.Counter(), {}
        for name in SYNC_METHODS | {"__getitem__"}:
            self.saved[name] = method = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self.counting(name, method))
        return self

    def counting(self, name, method):
        def wrapper(t, *args, **kwargs):
            if name != "__getitem__" or (isinstance(args[0], torch.Tensor) and args[0].dtype == torch.bool):
                self.counts[name] += 1
            return method(t, *args, **kwargs)
        return wrapper

    def __exit__(self, *exc):
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)


def micro_batch(tok, cfg, n):
    """n rollouts of two prompts (the first with an image), responses of 5..12 tokens."""
    g = torch.Generator().manual_seed(0)
    prompts = []
    for images, question in ((1, "How many circles?"), (0, "What is 2 + 1?")):
        text = chat.build_prompt([{"role": "user", "content": chat.expand_image_tokens(
            "<image>\n" * images + question, [1] * images, cfg.num_image_token)}], tokenizer=tok)
        pixels = torch.randn(1, 3, cfg.force_image_size, cfg.force_image_size, generator=g) if images else None
        prompts.append((tok(text, add_special_tokens=False)["input_ids"], pixels))
    return [{"prompt_ids": ids, "pixel_values": pixels,
             "response_ids": torch.randint(10, len(tok) - 10, (5 + i % 8,), generator=g).tolist()}
            for ids, pixels in prompts for i in range(n // 2)]


def count(net, samples, shared_prefix):
    kwargs = {"shared_prefix": True} if shared_prefix else {}
    batch, _, _ = data.collate_responses(samples, 0, net.config.force_image_size, True, **kwargs)
    extra = {"prefix_layout": batch["prefix_layout"]} if shared_prefix else {}
    with SyncCounter() as fwd:
        hidden = net(batch["input_ids"], pixel_values=batch["pixel_values"], image_flags=batch["image_flags"],
                     position_ids=batch["position_ids"], return_hidden=True, **extra)
    loss = hidden.square().mean()
    with SyncCounter() as bwd:
        loss.backward()
    return fwd.counts, bwd.counts, batch["input_ids"].shape[1]


def main(args):
    torch.set_num_threads(1)
    tok = chat.build_tiny_tokenizer()
    cfg = M.tiny_config(vocab_size=len(tok), llm={"num_hidden_layers": args.layers})
    torch.manual_seed(0)
    net = M.build_model(cfg).eval()
    net.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    for block in tu.transformer_blocks(net):   # what activation_checkpointing=True wraps
        tu.checkpoint_block(block)
    samples = micro_batch(tok, cfg, args.sequences)
    modes = [False] + [True] * (args.shared_prefix and "shared_prefix" in data.collate_responses.__code__.co_varnames)
    print(f"host syncs of one packed micro-batch ({args.sequences} rollouts of 2 prompts, {args.layers} LLM layers, "
          f"activation checkpointing)")
    print(f"| forward | tokens | syncs in forward | syncs in backward (recompute) | by call (forward / backward) |")
    print("|---|---|---|---|---|")
    for shared in modes:
        fwd, bwd, tokens = count(net, samples, shared)
        calls = ", ".join(f"{k} {fwd[k]}/{bwd[k]}" for k in sorted(set(fwd) | set(bwd)))
        print(f"| {'shared prefix' if shared else 'per sequence'} | {tokens} | {sum(fwd.values())} | "
              f"{sum(bwd.values())} | {calls} |")


if __name__ == "__main__":
    main(configurator.parse_config(Args))
