"""
Connector-only tuning after RL (paper §3.4, §5.6): retrain only `mlp1` on multi-domain data to rebalance the
knowledge that math-only RL skewed. Vision and LLM stay bit-identical. The loop is sft.py's train(); this
file holds only what differs: the paper's defaults and Table 2's variants.

    torchrun --nproc_per_node=8 connector_tune.py config/connector_tune_38b.py --checkpoint=RL_CKPT --data=mm10k.jsonl
    ... --variant=connector+llm            Table 2, third column  (MMMU 73.2)
    ... --variant=connector+vision+llm     Table 2, fourth column (MMMU 69.7)

Table 2 (MMMU): RL baseline 74.5 | connector 76.0 | connector+LLM 73.2 | connector+ViT+LLM 69.7.
"""
import sys
from dataclasses import dataclass

import sft

# Table 2 columns -> trainable modules (model.MODULE_PREFIXES)
TABLE2_VARIANTS = {"connector": ["connector"], "connector+llm": ["connector", "llm"],
                   "connector+vision+llm": ["vision", "connector", "llm"]}


@dataclass
class Config(sft.Config):
    # §3.4 implementation details: 2 epochs, global batch 64, lr 1e-5, cosine with warmup ratio 0.03,
    # max length 16384, early stopping on the validation loss
    epochs: float = 2.0
    global_batch_size: int = 64
    lr: float = 1e-5
    schedule: str = "cosine"
    warmup_ratio: float = 0.03
    max_seq_len: int = 16384
    # early stopping: the paper gives no split, interval or patience; these are ours
    val_fraction: float = 0.02           # 200 of the 10k samples, when --val_data is not given
    eval_every: int = 20                 # of ~312 steps (10k / 64 x 2 epochs)
    patience: int = 3
    variant: str = "connector"           # Table 2 column: connector | connector+llm | connector+vision+llm
    trainable: list[str] | None = None   # set from variant; giving both must agree
    out_dir: str = "out/connector_tune"
    wandb_project: str = "r1v3-connector-tune"

    def __post_init__(self):
        if self.variant not in TABLE2_VARIANTS:
            raise ValueError(f"--variant={self.variant!r}: expected one of {list(TABLE2_VARIANTS)}")
        modules = TABLE2_VARIANTS[self.variant]
        if self.trainable is not None and sorted(self.trainable) != sorted(modules):
            raise ValueError(f"--trainable={self.trainable} contradicts --variant={self.variant} ({modules}); "
                             f"pick the Table 2 variant with --variant only")
        self.trainable = list(modules)


def main(argv=None):
    return sft.main(argv, config_cls=Config)


if __name__ == "__main__":
    sys.exit(main())
