"""
Data for every stage (sft.py, grpo.py, eval.py, entropy.py): question records, images, prompts,
SFT chat samples with label masking, collation (right-padded, packed, left-padded) and a
deterministic resumable data order. Reads top to bottom:

  1. records      read_records (records.py) / load_image / check_images; image_to_pixel_values (InternVL tiling)
  2. prompts      format_question (records.py) / encode_prompt  (RL rollouts, eval, rejection sampling) /
                 read_prompt_records (grpo.py: every prompt encoded at startup, the over-long ones dropped)
  3. chat (SFT)   read_chat_jsonl / tokenize_chat            (loss on assistant tokens only)
  4. collation    collate_right_padded / token_budget_groups / pack_samples / collate_responses /
                 collate_left_padded
  5. data order   epoch_order / shard_indices / next_batch   (state = (epoch, offset) -> exact resume)

Formats (image paths are relative to the data file's directory; absolute paths are kept):
  records JSONL   {"id", "images": [paths], "question", "answer", "options"?: {"A": text, ...}}
  K12 json        [{"id", "question", "answer", "image_path"}, ...]     (../shared/data/mm-eureka-k12)
  chat JSONL      {"messages": [{"role": "system"|"user"|"assistant", "content": str}], "images": [paths]}
                  with one "<image>" marker (in user turns) per image.
"""

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from PIL import Image

import chat
# the records, the JSONL reader/writer and the question text live in records.py (no torch, for light readers);
# data.X names them for every training and eval script
from records import (DEFAULT_INSTRUCTION, IMAGE_MARKER, NOTHINK_INSTRUCTION, Record, format_question,  # noqa: F401
                     read_jsonl, read_records, read_utf8, write_jsonl)

IM_END = "<|im_end|>"   # ends every turn (ChatML); an SFT label span ends with it
IGNORE_INDEX = -100                               # label of tokens without loss (torch cross_entropy default)

# -----------------------------------------------------------------------------
# 1. records


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy (InternVL converts every image to RGB). High-bit-depth grayscale is scaled to 8 bits first:
    PIL's convert clips it at 255, so a 16-bit PNG (mode I;16, values 0..65535) became all white. Integer modes
    (I;16*, I) are read as 16-bit (x 255/65535, clipped); float (F) as 0..1 when its values are, else as 16-bit."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)   # PIL's array interface: uint16 (either byte order), int32, f4
        if image.mode == "F" and values.size and np.nanmax(values) <= 1.0:
            scale = 255.0
        else:
            scale = 255.0 / 65535.0
        image = Image.fromarray(np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(path, where: str | None = None) -> Image.Image:
    """RGB PIL image (to_rgb). Errors name the path (and the record)."""
    context = f" (record {where})" if where else ""
    try:
        with Image.open(path) as image:
            return to_rgb(image)   # decodes now, so a truncated file fails here, not later
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}{context}") from None
    except Exception as e:   # PIL raises many types (UnidentifiedImageError, OSError, DecompressionBombError, ...)
        raise ValueError(f"cannot read image {path}{context}: {type(e).__name__}: {e}") from e


def check_images(records, decode: bool = False) -> None:
    """Pre-flight before a long run: every image exists (and decodes, when decode=True).
    Works for Records and chat samples (dicts with "images" and "where")."""
    problems = []
    for r in records:
        images, where = (r.images, r.where) if isinstance(r, Record) else (r["images"], r.get("where", "?"))
        for image in images:
            if not Path(image).is_file():
                problems.append(f"{where}: image not found: {image}")
            elif decode:
                try:
                    load_image(image)
                except ValueError as e:
                    problems.append(f"{where}: {e}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise FileNotFoundError(f"{len(problems)} bad image(s):\n  {shown}{more}")


# images: InternVL dynamic tiling with PIL + numpy (no torchvision)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_diff, best = float("inf"), (1, 1)
    area = width * height
    for ratio in target_ratios:
        diff = abs(aspect_ratio - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff, best = diff, ratio
        elif diff == best_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
            best = ratio  # ties go to the larger grid when the image is big enough to fill it
    return best


def dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=True):
    width, height = image.size
    ratios = sorted({(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                     if min_num <= i * j <= max_num}, key=lambda r: r[0] * r[1])
    cols, rows = find_closest_aspect_ratio(width / height, ratios, width, height, image_size)
    resized = image.resize((image_size * cols, image_size * rows), resample=3)  # 3 = BICUBIC
    tiles = [resized.crop(((i % cols) * image_size, (i // cols) * image_size,
                           (i % cols + 1) * image_size, (i // cols + 1) * image_size)) for i in range(cols * rows)]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size), resample=3))
    return tiles


def image_to_pixel_values(image, config):  # -> [n_tiles,3,S,S]
    s = config.force_image_size
    image = to_rgb(image)
    if config.dynamic_image_size:
        tiles = dynamic_preprocess(image, config.min_dynamic_patch, config.max_dynamic_patch, s, config.use_thumbnail)
    else:
        tiles = [image]
    arr = np.stack([np.asarray(t.resize((s, s), resample=3) if t.size != (s, s) else t, dtype=np.float32)
                    for t in tiles]) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


# -----------------------------------------------------------------------------
# 2. prompts


def load_pixel_values(paths, config, max_tiles: int | None = None, where: str | None = None):
    """Images -> (pixel_values [sum(num_tiles),3,S,S] or None, num_tiles per image, PIL images).
    max_tiles overrides config.max_dynamic_patch (fewer tiles, shorter prompts)."""
    if max_tiles is not None:
        config = replace(config, max_dynamic_patch=max_tiles)
    images = [load_image(p, where) for p in paths]
    tiles = [image_to_pixel_values(image, config) for image in images]   # each [n_i,3,S,S]
    pixel_values = torch.cat(tiles) if tiles else None
    return pixel_values, [t.shape[0] for t in tiles], images


@lru_cache(maxsize=8)
def max_token_chars(tokenizer) -> int:
    """The longest vocabulary entry, in characters (added tokens included). No token covers more text than its
    entry spells (byte-level BPE: one entry character per byte, and a text character is >= 1 byte), so a text of
    n characters has at least n / max_token_chars tokens; encode_prompt allows a factor 2 for normalisers."""
    return max(len(token) for token in tokenizer.get_vocab())


def encode_prompt(tokenizer, config, record: Record, mode: str = "think", system: str | None = None,
                  max_prompt_tokens: int | None = None, max_tiles: int | None = None,
                  instruction: str | None = DEFAULT_INSTRUCTION) -> dict | None:
    """Generation prompt for one record, or None when longer than max_prompt_tokens (the caller counts
    skips or raises, by its own flag). Returns
      input_ids     list[int], image tokens expanded (<img><IMG_CONTEXT>*256*tiles</img>), for model.py
      pixel_values  [n_tiles,3,S,S] or None;  num_tiles: list[int] per image
      prompt        the prompt text (chat.build_prompt: the checkpoint's chat template, else ChatML) with
                    <image> placeholders unexpanded, and images (PIL): for vLLM, whose processor does the
                    same expansion from the same config."""
    user = format_question(record, instruction)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    pixel_values, num_tiles, images = load_pixel_values(record.images, config, max_tiles, record.where)
    prompt = chat.build_prompt(messages, mode=mode, add_generation_prompt=True, tokenizer=tokenizer)
    expanded = chat.expand_image_tokens(prompt, num_tiles, config.num_image_token)
    # a cheap bound first: tokenising one 100 MB question took 267 s and 18.7 GB before the length check
    if max_prompt_tokens is not None and len(expanded) > 2 * max_prompt_tokens * max_token_chars(tokenizer):
        return None
    input_ids = tokenizer.encode(expanded, add_special_tokens=False)
    if max_prompt_tokens is not None and len(input_ids) > max_prompt_tokens:
        return None
    return {"input_ids": input_ids, "pixel_values": pixel_values, "num_tiles": num_tiles,
            "prompt": prompt, "images": images}


def read_prompt_records(path, encode, dist, max_prompt_tokens, skip_long=True, min_records=1):
    """The records of a data file whose prompts fit (grpo.py's stages), each prompt encoded once now, so that a
    bad record fails at startup and not mid-run (a bad image names its path); the ranks of dist share the work.
    encode(record) -> encode_prompt's dict, or None when longer than max_prompt_tokens. Longer prompts are
    dropped and counted (skip_long), else an error naming the first. -> (kept records, number dropped)"""
    records = read_records(path)
    if not records:
        raise ValueError(f"{path}: no records")
    too_long = [r.id for r in records[dist.rank::dist.world_size] if encode(r) is None]
    if dist.world_size > 1:
        gathered = [None] * dist.world_size
        tdist.all_gather_object(gathered, too_long)
        too_long = [i for part in gathered for i in part]
    if too_long and not skip_long:
        where = next(r.where for r in records if r.id == too_long[0])
        raise ValueError(f"{where}: prompt of record {too_long[0]!r} is longer than "
                         f"max_prompt_tokens={max_prompt_tokens} ({len(too_long)} such records "
                         f"in {path}); raise it or set skip_long_prompts=True")
    kept = [r for r in records if r.id not in set(too_long)]
    if len(kept) < min_records:
        raise ValueError(f"{path}: {len(kept)} usable records (of {len(records)}) < "
                         f"prompts_per_step {min_records}")
    if dist.is_main:
        first = next((f", the first at {r.where}" for r in records if r.id in set(too_long)), "")
        print(f"{path}: {len(kept)} records, {len(set(too_long))} skipped "
              f"(prompt > {max_prompt_tokens} tokens{first})")
    return kept, len(set(too_long))

# -----------------------------------------------------------------------------
# 3. SFT chat data


def read_chat_jsonl(path) -> list[dict]:
    """-> [{"messages", "images" (absolute paths), "id", "where"}]. Errors cite file:line.
    Roles: an optional system turn, then user/assistant alternating, ending with an assistant turn.
    <image> markers may only appear in user turns, one per image; a sample with images and no marker at
    all gets "<image>\\n" per image prepended to its first user turn (InternVL's convention)."""
    path = Path(path)
    samples = []
    for where, item in read_jsonl(path):
        if not isinstance(item, dict):
            raise ValueError(f"{where}: a sample must be a JSON object, got {type(item).__name__}")

        messages = item.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: 'messages' must be a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or \
                    m.get("role") not in ("system", "user", "assistant"):
                raise ValueError(f"{where}: messages[{i}] must be {{'role': system|user|assistant, "
                                 f"'content': str}}, got {m!r:.120}")
        roles = [m["role"] for m in messages]
        turns = roles[1:] if roles[0] == "system" else roles
        expected = ["user", "assistant"] * (len(turns) // 2)
        if not turns or turns != expected:
            raise ValueError(f"{where}: roles must be [system], then user/assistant alternating and ending "
                             f"with assistant, got {roles}")

        images = item.get("images", [])
        if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
            raise ValueError(f"{where}: 'images' must be a list of path strings, got {images!r:.120}")
        images = [str(path.parent / p) for p in images]
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        counts = [m["content"].count(IMAGE_MARKER) for m in messages]
        if any(c for c, m in zip(counts, messages) if m["role"] != "user"):
            raise ValueError(f"{where}: {IMAGE_MARKER} markers are only allowed in user turns")
        if sum(counts) == 0 and images:
            first_user = roles.index("user")
            messages[first_user]["content"] = (IMAGE_MARKER + "\n") * len(images) + messages[first_user]["content"]
        elif sum(counts) != len(images):
            raise ValueError(f"{where}: {sum(counts)} {IMAGE_MARKER} markers but {len(images)} images")
        samples.append({"messages": messages, "images": images, "id": str(item.get("id", where)), "where": where})
    return samples


def tokenize_chat(tokenizer, config, sample: dict, max_len: int | None = None, overflow: str = "truncate",
                  max_tiles: int | None = None) -> dict | None:
    """One chat sample -> {"input_ids", "labels", "pixel_values", "num_tiles", "truncated"}, or None.

    Loss on assistant tokens only (InternVL internvl2_5 rule). The conversation is rendered by chat.build_prompt
    (the checkpoint's chat template, else ChatML) and each assistant turn is cut out of it as
        generation prompt without "<think>\\n" ("...<|im_start|>assistant\\n")  -100
        | content (think included) + "<|im_end|>"  labelled  |  the rest ("\\n", the next turns)  -100
    so a template's default system turn is in the input, unlabelled. A template that does not write an assistant
    turn verbatim after its generation prompt (e.g. one that drops the think part of past turns) is an error.
    labels are aligned with input_ids (labels[t] = input_ids[t] or -100); the loss shifts them.

    Each of these pieces is tokenised on its own, so label boundaries are exact by construction (as
    InternVL's preprocess does turn by turn). Special tokens split the text identically either way; the one
    boundary without a special token is "assistant\\n" | content. There the result equals tokenising the
    whole text unless the content starts with whitespace that the BPE pre-tokenizer would merge with
    that "\\n"; even then ours is the tokenisation the model sees at generation time, where the prompt ends in
    "assistant\\n" (tests/test_data.py checks the equality on a multi-turn example).

    Over max_len: overflow="truncate" cuts the tail (never through an image: a partly kept image is dropped
    with its tiles), "skip" returns None, "error" raises. None also when truncation leaves no labelled token.
    """
    if overflow not in ("truncate", "skip", "error"):
        raise ValueError(f"overflow={overflow!r}, expected 'truncate', 'skip' or 'error'")
    pixel_values, num_tiles, _ = load_pixel_values(sample["images"], config, max_tiles, sample.get("where"))

    messages, where = sample["messages"], sample.get("where")
    pieces, done = [], ""   # (text, labelled); done: the text rendered so far
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = chat.build_prompt(messages[:i], mode="nothink", tokenizer=tokenizer)   # ends "assistant\n"
        full = chat.build_prompt(messages[:i + 1], add_generation_prompt=False, tokenizer=tokenizer)
        end = full.find(IM_END, len(head)) + len(IM_END)
        if not (head.startswith(done) and full.startswith(head) and full[len(head):end] == m["content"] + IM_END):
            raise ValueError(f"{where}: the chat template does not write assistant turn {i} verbatim after its "
                             f"generation prompt (e.g. it drops past think blocks); the SFT labels need it verbatim")
        pieces += [(head[len(done):], False), (full[len(head):end], True)]
        done = full[:end]
    whole = chat.build_prompt(messages, add_generation_prompt=False, tokenizer=tokenizer)
    if not whole.startswith(done):
        raise ValueError(f"{where}: the chat template renders the conversation differently from its prefixes")
    pieces.append((whole[len(done):], False))   # "\n" after the last assistant turn

    segments = []   # (text with images expanded, labelled)
    image_index = 0
    for text, labelled in pieces:
        n_images = text.count(IMAGE_MARKER)
        if n_images:
            text = chat.expand_image_tokens(text, num_tiles[image_index:image_index + n_images],
                                            config.num_image_token)
            image_index += n_images
        segments.append((text, labelled))
    if image_index != len(num_tiles):
        raise ValueError(f"{where}: {image_index} {IMAGE_MARKER} markers but {len(num_tiles)} images")

    input_ids, labels = [], []
    for (_, labelled), ids in zip(segments, tokenizer([s for s, _ in segments], add_special_tokens=False)["input_ids"]):
        input_ids += ids
        labels += ids if labelled else [IGNORE_INDEX] * len(ids)

    truncated = False
    if max_len is not None and len(input_ids) > max_len:
        if overflow == "skip":
            return None
        if overflow == "error":
            raise ValueError(f"{sample.get('where')}: {len(input_ids)} tokens > max_len {max_len}")
        cut, kept_images = max_len, 0
        img_start, img_end = (tokenizer.convert_tokens_to_ids(t) for t in (chat.IMG_START_TOKEN, chat.IMG_END_TOKEN))
        starts = [i for i, t in enumerate(input_ids) if t == img_start]
        ends = [i for i, t in enumerate(input_ids) if t == img_end]
        for start, end in zip(starts, ends):
            if end >= max_len:     # this image would be cut: drop it and everything after
                cut = start
                break
            kept_images += 1
        input_ids, labels, truncated = input_ids[:cut], labels[:cut], True
        num_tiles = num_tiles[:kept_images]
        pixel_values = pixel_values[:sum(num_tiles)] if kept_images else None
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": input_ids, "labels": labels, "pixel_values": pixel_values, "num_tiles": num_tiles,
            "truncated": truncated}


# -----------------------------------------------------------------------------
# 4. collation
# pixel_values of a batch are concatenated in sample order, which is the order of the <IMG_CONTEXT> runs
# in the row-major flattened input_ids, as model.forward expects.


def _concat_images(samples, image_size: int | None):
    """-> pixel_values [N,3,S,S], image_flags [N]. A batch without images gets one zero dummy tile with
    flag 0 when image_size is given, so every FSDP rank runs the ViT (its all-gathers must match)."""
    tiles = [s["pixel_values"] for s in samples if s.get("pixel_values") is not None and len(s["pixel_values"])]
    if tiles:
        pixel_values = torch.cat(tiles)
        return pixel_values, torch.ones(pixel_values.shape[0], dtype=torch.long)
    if image_size is None:
        return None, None
    return torch.zeros(1, 3, image_size, image_size), torch.zeros(1, dtype=torch.long)


def collate_right_padded(samples, pad_id: int, image_size: int | None) -> dict:
    """Training batch. samples: dicts with input_ids (+ labels, pixel_values). Returns
    input_ids [B,T] (pad_id on the right), labels [B,T] (-100 on pad; only when every sample has labels),
    attention_mask [B,T] (1 = real token), pixel_values [N,3,S,S], image_flags [N].
    image_size: model_config.force_image_size for the dummy tile of image-free batches (None = no dummy)."""
    T = max(len(s["input_ids"]) for s in samples)
    B = len(samples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    has_labels = all("labels" in s for s in samples)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        input_ids[i, :n] = torch.as_tensor(s["input_ids"])
        attention_mask[i, :n] = 1
        if has_labels:
            labels[i, :n] = torch.as_tensor(s["labels"])
    pixel_values, image_flags = _concat_images(samples, image_size)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "pixel_values": pixel_values, "image_flags": image_flags}
    if has_labels:
        batch["labels"] = labels
    return batch


def token_budget_groups(lengths, max_tokens: int) -> list[list[int]]:
    """Micro-batches by token budget, not sequence count: indices (in order) go next-fit into groups of at most
    max_tokens tokens; a sequence longer than the budget gets a group of its own. Data order is kept, so the
    grouping is a pure function of the lengths (exact resume, same groups on every run)."""
    if max_tokens <= 0:
        raise ValueError(f"token budget must be > 0, got {max_tokens}")
    groups, used = [], max_tokens
    for i, n in enumerate(lengths):
        if used + n > max_tokens:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += n
    return groups


def pack_samples(samples, max_len: int, pad_id: int = 0, image_size: int | None = None) -> dict:
    """Packing: samples (in order) go into rows of at most max_len tokens, a new row whenever the next sample
    does not fit (next-fit keeps the data order, hence exact resume). max_len >= the samples' total gives one
    row without any padding (the padding-free micro-batch of sft.py and grpo.py). Returns
      input_ids [R,T]          (T = longest row; pad after it)
      labels [R,T]             only when every sample has labels; -100 on pad and on each sample's first token,
                               so no loss crosses a sample boundary
      position_ids [R,T]       restarting at 0 for each sample (0 on pad)
      seq_lens                 list per row of the sample lengths
      pixel_values, image_flags as collate_right_padded (sample order = order of the <IMG_CONTEXT> runs).
    Give the model position_ids and NO attention_mask: model.forward then keeps the samples apart wherever
    position ids restart, with one causal attention per sample (model.packed_sdpa_attention, or flash-attention
    varlen), never a dense mask. Pad positions all have position 0, so each is a sequence of its own."""
    rows, row, used = [], [], 0
    for s in samples:
        n = len(s["input_ids"])
        if n > max_len:
            raise ValueError(f"sample of {n} tokens > pack max_len {max_len}: truncate or skip it first")
        if used + n > max_len:
            rows.append(row)
            row, used = [], 0
        row.append(s)
        used += n
    rows.append(row)

    R, T = len(rows), max(sum(len(s["input_ids"]) for s in row) for row in rows)
    has_labels = all("labels" in s for s in samples)
    input_ids = torch.full((R, T), pad_id, dtype=torch.long)
    labels = torch.full((R, T), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(R, T, dtype=torch.long)
    seq_lens = []
    for r, row in enumerate(rows):
        t = 0
        for s in row:
            n = len(s["input_ids"])
            input_ids[r, t:t + n] = torch.as_tensor(s["input_ids"])
            if has_labels:
                labels[r, t:t + n] = torch.as_tensor(s["labels"])
                labels[r, t] = IGNORE_INDEX
            position_ids[r, t:t + n] = torch.arange(n)
            t += n
        seq_lens.append([len(s["input_ids"]) for s in row])
    pixel_values, image_flags = _concat_images(samples, image_size)
    batch = {"input_ids": input_ids, "position_ids": position_ids, "seq_lens": seq_lens,
             "pixel_values": pixel_values, "image_flags": image_flags}
    if has_labels:
        batch["labels"] = labels
    return batch


def same_prompt(a, b) -> bool:
    """Two rollouts of one prompt: equal prompt ids and the very same image tensor (or none), as grpo.py's
    sample_groups hands every rollout of a group its prompt's."""
    return a["prompt_ids"] == b["prompt_ids"] and a["pixel_values"] is b["pixel_values"]


def collate_responses(samples, pad_id: int, image_size: int | None, packing: bool = True,
                      shared_prefix: bool = False):
    """Teacher-forced scoring of responses (grpo.py): samples {prompt_ids, response_ids, pixel_values}
    -> (batch, rows, cols). batch: prompt + response of each sample, packed into one row [1, sum of
    lengths] without padding (pack_samples) or right-padded [B, T] (collate_right_padded); rows, cols
    [N] (N = all response tokens, in order): the hidden state that predicts each response token, at
    start + P + t - 1 for token t of a sequence of prompt length P starting at column `start`.
    shared_prefix (with packing): consecutive samples of the same prompt (same_prompt) share one copy of it, a
    segment [prompt | response_1 | ... | response_k] whose responses all continue the prompt's positions;
    batch["prefix_layout"] lists the segments as (start, P, [L_1..L_k]) for model.forward. A response's first
    token is predicted by the prompt's last column, the same column for every response of the segment."""
    lengths = [len(s["response_ids"]) for s in samples]
    if packing and shared_prefix:
        segments = []   # (first sample, [its prompt's samples])
        for s in samples:
            if segments and same_prompt(segments[-1][0], s):
                segments[-1][1].append(s)
            else:
                segments.append((s, [s]))
        ids, positions, layout, cols = [], [], [], []
        for first, members in segments:
            start, prompt_len = len(ids), len(first["prompt_ids"])
            ids += first["prompt_ids"]
            positions += range(prompt_len)
            for s in members:
                at, n = len(ids), len(s["response_ids"])
                cols += ([start + prompt_len - 1] if n else []) + list(range(at, at + n - 1))
                ids += s["response_ids"]
                positions += range(prompt_len, prompt_len + n)
            layout.append((start, prompt_len, [len(s["response_ids"]) for s in members if s["response_ids"]]))
        pixel_values, image_flags = _concat_images([first for first, _ in segments], image_size)
        batch = {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([positions]),
                 "pixel_values": pixel_values, "image_flags": image_flags, "prefix_layout": layout}
        return batch, torch.zeros(len(cols), dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    seqs = [{"input_ids": s["prompt_ids"] + s["response_ids"], "pixel_values": s["pixel_values"]}
            for s in samples]
    if packing:
        batch = pack_samples(seqs, sum(len(s["input_ids"]) for s in seqs), pad_id, image_size)
        starts = [0] + torch.tensor([len(s["input_ids"]) for s in seqs]).cumsum(0).tolist()[:-1]
        rows = [0] * sum(lengths)   # all in row 0
    else:
        batch = collate_right_padded(seqs, pad_id, image_size)
        starts = [0] * len(seqs)
        rows = [i for i, n in enumerate(lengths) for _ in range(n)]
    cols = [start + len(s["prompt_ids"]) - 1 + t for start, s in zip(starts, samples)
            for t in range(len(s["response_ids"]))]
    return batch, torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def collate_left_padded(prompts, pad_id: int, image_size: int | None = None) -> dict:
    """Generation / scoring prompts (encode_prompt outputs, or plain lists of ids), left padded so every
    row's last prompt token sits at T-1. Returns input_ids [B,T], attention_mask [B,T], position_ids [B,T]
    (0 at each row's first real token), pixel_values, image_flags, prompt_lens."""
    prompts = [p if isinstance(p, dict) else {"input_ids": p} for p in prompts]
    T = max(len(p["input_ids"]) for p in prompts)
    input_ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        n = len(p["input_ids"])
        input_ids[i, T - n:] = torch.as_tensor(p["input_ids"])
        attention_mask[i, T - n:] = 1
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    pixel_values, image_flags = _concat_images(prompts, image_size)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
            "pixel_values": pixel_values, "image_flags": image_flags,
            "prompt_lens": [len(p["input_ids"]) for p in prompts]}


# -----------------------------------------------------------------------------
# 5. data order: a pure function of (seed, epoch), so a run resumes at exactly the same data position


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(np.random.default_rng([seed, epoch]).permutation(n).tolist())


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Shuffled indices 0..n-1 for this epoch; the same on every rank and every run."""
    return list(_permutation(n, seed, epoch))


def shard_indices(indices, rank: int, world: int) -> list[int]:
    """This rank's share of a global batch: strided, so all ranks together cover it exactly once."""
    return list(indices[rank::world])


def next_batch(n: int, batch_size: int, seed: int, state: tuple[int, int]) -> tuple[list[int], tuple[int, int]]:
    """Global batch at data position state = (epoch, offset) -> (indices, next state). An epoch's tail shorter
    than batch_size is dropped so every step sees a full global batch (the update does not depend on where
    an epoch ends). Save the returned state in the checkpoint to resume exactly."""
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size {batch_size} must be in 1..{n} (the dataset size)")
    epoch, offset = state
    if offset + batch_size > n:
        epoch, offset = epoch + 1, 0
    return list(_permutation(n, seed, epoch)[offset:offset + batch_size]), (epoch, offset + batch_size)
