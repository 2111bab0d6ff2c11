"""The config class that every checkpoint model.py writes names in its config.json's auto_map, copied into the
checkpoint next to config.json. The project never imports it: model.ModelConfig reads config.json itself. It is
for the readers that go through transformers' AutoConfig with trust_remote_code, above all vLLM, which registers
neither internvl_chat nor skywork_chat and so loads the config through the checkpoint's remote code
(vllm/transformers_utils/config.py:398-404 in vLLM 0.32.0); its own InternVL / SkyworkR1V model and processor
classes then read the fields below (vllm/model_executor/models/internvl.py:327-373, 598-668).

A released checkpoint keeps its own configuration_*.py (model.save_model copies it); this one is written where
there is none (model.py --init_tiny, a config built in memory)."""
from transformers import AutoConfig, PreTrainedConfig


class InternVisionConfig(PreTrainedConfig):
    """config.json's vision_config, every field an attribute (image_size, patch_size, hidden_size, ...)."""
    model_type = "intern_vit_6b"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)   # unknown keys become attributes (PreTrainedConfig.__post_init__)


class InternVLChatConfig(PreTrainedConfig):
    """vision_config -> InternVisionConfig; llm_config -> the transformers config of its model_type (Qwen2Config
    for every checkpoint here), which vLLM also exposes as text_config (transformers_utils/config.py:744-751).
    The top-level fields (force_image_size, downsample_ratio, ps_version, select_layer, dynamic_image_size,
    min/max_dynamic_patch, use_thumbnail, template, ...) become attributes as they are."""
    model_type = "internvl_chat"

    def __init__(self, vision_config=None, llm_config=None, **kwargs):
        super().__init__(**kwargs)
        self.vision_config = InternVisionConfig(**(vision_config or {}))
        llm = dict(llm_config or {"model_type": "qwen2"})
        llm.pop("transformers_version", None)
        self.llm_config = AutoConfig.for_model(llm.pop("model_type"), **llm)

    def to_dict(self):
        d = super().to_dict()
        d["vision_config"], d["llm_config"] = self.vision_config.to_dict(), self.llm_config.to_dict()
        return d
