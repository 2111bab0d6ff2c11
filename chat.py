"""
The chat format of R1V3 / InternVL: its special tokens, the ChatML chat template, the tokenizer (a released
checkpoint's, or a tiny byte-level BPE fit in milliseconds for the CPU demo), the one prompt renderer
(`build_prompt`, think / nothink / nowait) and the expansion of each <image> into its image-context tokens.

Every prompt of sft.py (through data.py), grpo.py, reject.py, eval.py and entropy.py is rendered here, so training,
sampling and evaluation see the same text. The model itself (weights, forward, load/save) is in model.py.
"""
import tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN = "<img>", "</img>", "<IMG_CONTEXT>"
THINK_START, THINK_END = "<think>", "</think>"

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN]
DEFAULT_CORPUS = [
    "<|im_start|>user\n<image>\nHow many circles are there? Answer with a number.<|im_end|>\n",
    "<|im_start|>assistant\n<think>\nI see 2 red circles and 1 blue square. Wait, let me check again. "
    "Alternatively, count by colour. Hmm, 2 + 1 = 3.\n</think>\n\nThe answer is \\boxed{3}.<|im_end|>\n",
    "A. 1\nB. 2\nC. 3\nD. 4\n0 1 2 3 4 5 6 7 8 9 10 + - * / = ( ) { } $ \\frac \\boxed The final answer is",
]


def build_tiny_tokenizer(corpus=None, vocab_size=1024):
    """Byte-level BPE with the R1V3 special tokens and chat template, trained in milliseconds."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                             show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus or DEFAULT_CORPUS) * 4, trainer)
    # <think> tags are plain added tokens (not special), so decode(skip_special_tokens=True) keeps them
    tok.add_tokens([tokenizers.AddedToken(THINK_START, normalized=False),
                    tokenizers.AddedToken(THINK_END, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:], chat_template=CHAT_TEMPLATE)


def load_tokenizer(path):
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer warns that config.json is not a tokenizer's model type
    try:   # trust_remote_code=False: with auto_map in config.json, None asks "Do you wish to run the custom
        # code?" and waits 15 s (transformers dynamic_module_utils.py:754-771); False raises at once and
        # AutoTokenizer falls back to the plain config (tokenization_auto.py:805-812). The tokenizer needs no code.
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(level)


def build_prompt(messages, mode="think", add_generation_prompt=True, *, tokenizer):
    """The one prompt renderer: every prompt of grpo.py, sft.py (data.py), eval.py and entropy.py comes from here.
    With the checkpoint's own chat template when its tokenizer has one (tokenizer.apply_chat_template: a released
    checkpoint ships it in tokenizer_config.json and may add a default system turn), else R1V3 ChatML
    "<|im_start|>{role}\\n{content}<|im_end|>\\n" with no system turn (tokenizer=None: always ChatML).
    Think as the release does it (SkyworkAI/Skywork-R1V issue #40: the template's generation prompt is
    "{{- '<|im_start|>assistant\\n<think>\\n' }}", and no-think is that line without "<think>\\n"): think and
    nowait end the generation prompt with "<think>\\n" (added when the template lacks it), nothink without it
    (removed when the template has it). nowait thinks; its "Wait"-type tokens are banned at sampling time."""
    if mode not in ("think", "nothink", "nowait"):
        raise ValueError(f"mode {mode!r} not in think/nothink/nowait")
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    else:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n" if add_generation_prompt else ""
    if add_generation_prompt:
        text = text.removesuffix(THINK_START + "\n") + ("" if mode == "nothink" else THINK_START + "\n")
    return text


def expand_image_tokens(text, num_tiles, num_image_token):
    """Each <image> -> <img> + <IMG_CONTEXT> x (num_image_token * tiles) + </img>."""
    if num_tiles and "<image>" not in text:
        text = "<image>\n" * len(num_tiles) + text
    if text.count("<image>") != len(num_tiles):
        raise ValueError(f"{text.count('<image>')} <image> markers but {len(num_tiles)} images")
    parts = text.split("<image>")
    out = [parts[0]]
    for tiles, part in zip(num_tiles, parts[1:]):
        out.append(IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (num_image_token * tiles) + IMG_END_TOKEN + part)
    return "".join(out)
