"""
Peak memory of model.load_model against the size of the weights it loads, measured in the same run.
The model is built on the meta device and filled shard by shard, so the peak should stay near one copy.
  python bench/bench_load.py [--hidden=1024] [--layers=8] [--shard_mb=64]
"""
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import configurator  # noqa: E402
import model as M  # noqa: E402

CHILD = """
import sys, torch
sys.path.insert(0, {root!r})
import model as M
from safetensors.torch import load_file
def status(key):  # KiB; VmHWM is the peak resident set, file-backed (mmap) pages included
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0])
base = status("VmRSS")
if {method!r} == "meta":
    m = M.load_model({path!r})
else:  # the naive loader: a randomly initialised model, then the whole state dict, then load_state_dict
    m = M.build_model(M.ModelConfig.from_json({path!r} + "/config.json"))
    sd = {{}}
    for f in sorted(__import__("glob").glob({path!r} + "/*.safetensors")):
        sd.update(load_file(f))
    m.load_state_dict(sd)
total = sum(float(p.sum()) for p in m.parameters())  # touch every page: mmap-backed tensors count from here
print(base, status("VmHWM"), sum(p.numel() * p.element_size() for p in m.parameters()))
"""


@dataclass
class Args:
    hidden: int = 1024
    layers: int = 8
    shard_mb: int = 64


def main():
    args = configurator.parse_config(Args)
    hidden, layers, shard_mb = args.hidden, args.layers, args.shard_mb
    cfg = M.tiny_config(vocab_size=32000, vision=dict(hidden_size=hidden // 2, num_hidden_layers=layers,
                        num_attention_heads=8, intermediate_size=2 * hidden),
                        llm=dict(hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                                 num_attention_heads=8, num_key_value_heads=4))
    with tempfile.TemporaryDirectory() as d:
        model = M.build_model(cfg)
        M.save_model(Path(d) / "ck", model.state_dict(), cfg, max_shard_bytes=shard_mb * 2 ** 20)
        del model
        shards = len(list((Path(d) / "ck").glob("*.safetensors")))
        peaks = {}
        for method in ("meta", "naive"):
            out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), path=str(Path(d) / "ck"),
                                                                     method=method)],
                                 capture_output=True, text=True, check=True).stdout.split()
            base_kb, peak_kb, weight_bytes = map(int, out)
            peaks[method] = (peak_kb - base_kb) * 1024
    print(f"weights: {weight_bytes / 2**20:.0f} MiB in {shards} shards")
    for method, extra in peaks.items():
        print(f"{method:>6} loader: peak RSS added {extra / 2**20:6.0f} MiB = {extra / weight_bytes:.2f}x the weights")
    print(f"naive / meta peak: {peaks['naive'] / peaks['meta']:.2f}x")


if __name__ == "__main__":
    main()
