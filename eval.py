"""
Evaluation: benchmarks from local files, slow thinking / NoThink / NoWait, thinking budgets, avg@k,
the hallucination split. Every table of the paper is one of these runs:

  Table 1   16 benchmarks, temperature 1.0, 16,384 tokens, avg@5 (--protocol=paper, the default)
            python eval.py --checkpoint=CKPT --benchmarks=MMMU_DEV_VAL.tsv,MathVista_MINI.tsv --split=validation
            --protocol=released: the released evaluation config instead (greedy, 1 sample, 16,384 tokens)
  Table 4   think vs nothink vs nowait (accuracy + avg tokens):   ... --mode=think,nothink,nowait
  Fig. 9    thinking budgets 1K..16K:                             ... --budgets="[1024,2048,4096,8192,16384]"
  Table 5   "I can't see the image" in the CoT: count, accuracy with/without (always computed; phrases configurable)

  python eval.py --mmmu_outputs DIR --json OUT    scores the official MMMU example-output layout
                                                  (DIR/<Subject>/output.json) with the official rules.
  python eval.py --out_dir=DIR --score_only=True  re-scores existing generations (no model needed).

Reads top to bottom: config, items + readers, prompts, scoring (MMMU official, Skywork's boxed rule,
VLMEvalKit can_infer, MathVista, rewards.py for the rest), analyses, generation (over sampling.py), main.

Files (one run = one benchmark x mode x budget): OUT/<benchmark>/<mode>_<budget>/generations.jsonl
(resumable: (id, sample) pairs already there are skipped), scores.jsonl, summary.json; and OUT/summary.json
+ OUT/summary.md with every run found under OUT (so separate invocations fill the same tables).

Modes (paper §6.2). think: the generation prompt ends with "<think>\\n". nothink: it does not.
nowait: the think prompt, with every token that spells "Wait", "Alternatively" or "Hmm" (any capitalisation,
with/without a leading space or punctuation) masked out of the logits. NoWait keeps the think block: the
paper's NoWait answers average 1040 tokens against 263 for NoThink (Table 4), so it still reasons.

Thinking-budget rule (Fig. 9), applied per sample in think/nowait mode when `budgets` is set:
  1. sample at most B tokens, stopping at <|im_end|> or at "</think>";
  2. if it stopped at <|im_end|>, that is the response;
  3. otherwise (it closed its think block, or it used up B tokens) append "\\n</think>\\n\\n" when the block
     is still open, and sample at most `answer_max_tokens` more tokens, stopping at <|im_end|>.
  The token count reported includes the forced tokens. Without `budgets` there is no forcing: a single
  generation of at most `max_new_tokens` (the paper's 16,384 generation budget, §4).

Prompts: each benchmark's released prompt (build_user_text), rendered with the checkpoint's own chat template
(model.build_prompt). summary.json records the sampling protocol, and under "deviations" the ones below plus
those of the settings (setting_deviations: sampling, nowait, system turn, MMMU image placement).

Deviations from the reference scorers (stated again in summary.json under "deviations"):
  * MathVista post_check: VLMEvalKit compares str(None) with the gold for text/list answers, so those are
    always wrong; we compare the extracted answer (text: stripped string equality; list: element-wise).
  * MathVista extraction without a configured LLM verifier uses rewards.extract_answer (rule-based) instead
    of the GPT extractor.
  * MMMU open questions: parse_open_response's de-duplication keeps first-seen order (the official code
    uses set(), whose order varies between runs); the set of predictions and the verdict are unchanged.
"""

import ast
import base64
import csv
import io
import json
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

# -----------------------------------------------------------------------------
# config


@dataclass
class EvalConfig:
    checkpoint: str = ""                 # model.py checkpoint dir (config.json + safetensors + tokenizer)
    benchmarks: list = field(default_factory=list)   # .tsv (VLMEvalKit), .parquet or a dir of shards (HF hub),
    #                                                  .jsonl (ours), .json (K12); the file stem names the benchmark
    split: str = ""                      # keep rows whose `split` column equals this (MMMU_DEV_VAL: "validation")
    max_items: int = 0                   # 0 = all; else the first N items of each benchmark (smoke tests)
    mode: str = "think"                  # think | nothink | nowait, or a comma list ("think,nothink,nowait")
    protocol: str = "paper"              # sampling preset (PROTOCOLS) for k, temperature, top_p, max_new_tokens;
    #                                      flags and config files override single values (then "custom")
    k: int = 5                           # samples per question -> avg@k with its std (Table 1: avg@5)
    temperature: float = 1.0             # §4: decoding temperature 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16384          # §4: generation budget 16,384
    budgets: list = field(default_factory=list)      # thinking budgets (Fig. 9), e.g. [1024, 2048, 4096, 8192, 16384]
    answer_max_tokens: int = 1024        # tokens allowed after a forced "</think>" (budget rule above)
    batch_size: int = 8                  # builtin backend: rows (question x sample) per generate call
    vllm_chunk: int = 256                # vLLM: questions per llm.generate call (resume granularity)
    backend: str = "auto"                # auto (vllm if importable and a GPU is there, else builtin) | vllm | builtin
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 32768
    max_images: int = 8                  # vLLM limit_mm_per_prompt (MMMU has up to 7 images per question)
    dtype: str = "auto"                  # auto: bfloat16 on GPU, float32 on CPU
    device: str = "auto"
    system_prompt: str = ""              # "" = the benchmark's released one (MMK12) or none; applies to all
    mmmu_images: str = "front"           # MMMU <image k>: front (the released pipeline) | inplace (build_user_text)
    seed: int = 0
    nowait_words: list = field(default_factory=lambda: ["Wait", "Alternatively", "Hmm"])  # §6.2
    hallucination_phrases: list = field(default_factory=lambda: list(HALLUCINATION_PHRASES))  # Table 5
    verifier_url: str = ""               # OpenAI-compatible endpoint (rewards.VerifierClient); "" = rules only
    verifier_model: str = ""
    out_dir: str = "out/eval"
    score_only: bool = False             # re-score what is in out_dir, generate nothing
    wandb: bool = True                   # honours WANDB_MODE (disabled/offline)
    wandb_project: str = "r1v3-eval"
    run_name: str = ""


# sampling presets. paper: §4, temperature 1.0, 16,384 tokens, avg@5. released: SkyworkAI/Skywork-R1V
# eval/vlmevalkit/vlmeval/config.py L509-517 "R1V3-alpha" = LMDeployAPI(temperature=0, max_tokens=16384), which
# sends n=1 and no top_p (vlmeval/api/lmdeploy.py L298-304; vLLM's default 1.0): greedy, one sample.
PROTOCOLS = {"paper": dict(temperature=1.0, top_p=1.0, k=5, max_new_tokens=16384),
             "released": dict(temperature=0.0, top_p=1.0, k=1, max_new_tokens=16384)}


def sampling_of(cfg):
    """The settings a protocol fixes, as this invocation has them."""
    return {key: getattr(cfg, key) for key in PROTOCOLS["paper"]}


def protocol_of(sampling):
    """The name of the preset that these sampling settings equal, else "custom" (None: "unknown")."""
    if sampling is None:
        return "unknown"
    return next((name for name, preset in PROTOCOLS.items() if preset == sampling), "custom")


# Table 5: "I can't see the image" and its relatives, matched case-insensitively as substrings
# (curly apostrophes are straightened first). Chinese forms cover 图 / 图片 / 图像 by being prefixes.
HALLUCINATION_PHRASES = [
    "can't see the image", "cannot see the image", "can not see the image", "unable to see the image",
    "can't see the picture", "cannot see the picture", "can't see the figure", "cannot see the figure",
    "can't see the diagram", "cannot see the diagram", "can't see images", "cannot see images",
    "can't see any image", "cannot see any image", "don't see the image", "do not see the image",
    "can't view the image", "cannot view the image", "unable to view the image",
    "can't access the image", "cannot access the image", "don't have access to the image",
    "do not have access to the image", "no image is provided", "no image provided", "image is not provided",
    "without seeing the image", "can't actually see", "cannot actually see",
    "看不到图", "看不见图", "无法看到图", "无法看见图", "无法查看图", "没有看到图", "看不到这张图", "无法看到这张图",
]
MODES = ("think", "nothink", "nowait")
FORCED_THINK_END = "\n</think>\n\n"

# -----------------------------------------------------------------------------
# items and readers: every layout becomes a list of EvalItem


@dataclass
class EvalItem:
    id: str
    question: str                 # the question text, <image k> markers kept (MMMU)
    answer: object                # gold: letter for multiple choice, else text (MMMU open: str or list)
    images: list                  # PIL images (decoded from TSV/parquet) or paths
    options: dict                 # {"A": text, ...}, {} when not multiple choice
    benchmark: str                # name that picks the prompt and the scorer (file stem or hub layout)
    subject: str = ""             # MMMU subject / MathVista task / TSV category
    extra: dict = field(default_factory=dict)   # every other column (hint, split, question_type, choices, ...)


def read_benchmark(path) -> list[EvalItem]:
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        return read_hub_parquet(path)
    if path.suffix == ".tsv":
        return read_vlmevalkit_tsv(path)
    if path.suffix in (".jsonl", ".json"):
        return read_records_file(path)
    raise ValueError(f"{path}: unknown benchmark layout (want .tsv, .parquet or a dir of them, .jsonl, .json)")


def decode_image(data, where):
    from PIL import Image
    try:
        raw = base64.b64decode(data, validate=False) if isinstance(data, str) else data
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image
    except Exception as e:
        raise ValueError(f"{where}: cannot decode image: {type(e).__name__}: {e}") from None


def read_vlmevalkit_tsv(path) -> list[EvalItem]:
    """VLMEvalKit TSV (MMMU_DEV_VAL, MathVista_MINI, MathVerse, MathVision, LogicVista, WeMath, MMStar, ...).
    `image` is base64, a list literal of base64 strings, or (<= 64 chars) the `index` of the row whose image
    to reuse; `image_path` (paths next to the file) is used when there is no `image` column.
    Empty cells are missing values (pandas writes NaN as ""), so unused option columns are dropped."""
    path = Path(path)
    csv.field_size_limit(2 ** 31 - 1)   # base64 images are far over csv's 128 KB default
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows = []
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise ValueError(f"{path}:{reader.line_num}: row has {len(row)} cells, header has "
                                     f"{len(reader.fieldnames)}")
                rows.append((reader.line_num, row))
    except UnicodeDecodeError:   # the decoder reports a byte offset in a chunk: find the line
        import data
        data.read_utf8(path)   # raises ValueError("FILE:LINE: not UTF-8 ...")
        raise
    columns = reader.fieldnames or []
    for col in ("index", "question", "answer"):   # test splits without answers cannot be scored
        if col not in columns:
            raise ValueError(f"{path}: no {col!r} column (columns: {columns})")
    image_of = {row["index"]: row.get("image", "") for _, row in rows}
    benchmark = path.stem
    items = []
    for line, row in rows:
        where = f"{path}:{line} (index {row['index']})"
        if "image" in row:
            data = row["image"]
            if len(data) <= 64:   # a reference: reuse the image of the row with that index
                if data not in image_of or len(image_of[data]) <= 64:
                    raise ValueError(f"{where}: image {data!r} is not the index of a row with an image")
                data = image_of[data]
            blobs = ast.literal_eval(data) if data.startswith("[") and data.endswith("]") else [data]
            images = [decode_image(b, where) for b in blobs]
        elif "image_path" in row and row["image_path"]:
            p = row["image_path"]
            paths = ast.literal_eval(p) if p.startswith("[") and p.endswith("]") else [p]
            images = [str(path.parent / q) for q in paths]
        else:
            images = []
        options = {c: row[c] for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if row.get(c, "") != ""}
        skip = set(options) | {"image", "image_path", "question", "answer"}
        extra = {k: v for k, v in row.items() if k not in skip and v != ""}
        item_id = row.get("id") or row["index"]
        subject = mmmu_subject(item_id) if is_mmmu(benchmark) else row.get("category", "")
        items.append(EvalItem(id=str(item_id), question=row["question"], answer=row["answer"], images=images,
                              options=options, benchmark=benchmark, subject=subject, extra=extra))
    return items


def read_hub_parquet(path) -> list[EvalItem]:
    """MMMU/MMMU and AI4Math/MathVista as stored on the HF hub (a .parquet file or a dir of shards).
    MMMU: id, question, options (list literal string), explanation, image_1..image_7 ({bytes, path} or null),
          img_type, answer, topic_difficulty, question_type (multiple-choice|open), subfield.
    MathVista: pid, question, image (path), decoded_image ({bytes, path}), choices (list or null), unit,
          precision, answer, question_type (multi_choice|free_form), answer_type (integer|float|text|list),
          metadata (struct: task, category, skills, ...), query (the official prompt with its hint)."""
    import pyarrow.parquet as pq
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no .parquet files")
    rows = []
    for f in files:
        rows += [(f, n, r) for n, r in enumerate(pq.read_table(f).to_pylist())]
    columns = set(rows[0][2]) if rows else set()

    def image_from(cell, f, where):
        if cell is None:
            return None
        if cell.get("bytes"):
            return decode_image(cell["bytes"], where)
        if cell.get("path"):
            return str(f.parent / cell["path"])
        return None

    items = []
    if {"id", "question", "options", "answer", "image_1"} <= columns:   # MMMU
        for f, n, r in rows:
            where = f"{f}: row {n} (id {r['id']})"
            try:
                choices = ast.literal_eval(r["options"]) if r["options"] else []
            except (ValueError, SyntaxError):
                raise ValueError(f"{where}: options is not a list literal: {r['options']!r:.100}") from None
            images = [image_from(r.get(f"image_{i}"), f, where) for i in range(1, 8)]
            # <image k> refers to image_k, so keep the positions (None for absent slots) until the prompt is built
            while images and images[-1] is None:
                images.pop()
            extra = {k: v for k, v in r.items() if not k.startswith("image_") and k not in ("id", "question", "answer")}
            items.append(EvalItem(id=r["id"], question=r["question"], answer=r["answer"], images=images,
                                  options={chr(65 + i): str(c) for i, c in enumerate(choices)},
                                  benchmark="MMMU", subject=mmmu_subject(r["id"]), extra=extra))
    elif {"pid", "query", "answer", "question_type", "answer_type"} <= columns:   # MathVista
        for f, n, r in rows:
            where = f"{f}: row {n} (pid {r['pid']})"
            image = image_from(r.get("decoded_image"), f, where)
            if image is None and r.get("image"):
                image = str(f.parent / r["image"])
            choices = list(r.get("choices") or [])
            extra = {k: v for k, v in r.items() if k not in ("pid", "decoded_image", "answer")}
            if r["question_type"] == "multi_choice":
                if r["answer"] not in choices:
                    raise ValueError(f"{where}: answer {r['answer']!r} is not one of the choices {choices}")
                extra["answer_option"] = chr(65 + choices.index(r["answer"]))
            meta = r.get("metadata") or {}
            items.append(EvalItem(id=str(r["pid"]), question=r["query"], answer=r["answer"],
                                  images=[image] if image is not None else [],
                                  options={chr(65 + i): c for i, c in enumerate(choices)}, benchmark="MathVista",
                                  subject=meta.get("task", "") or meta.get("category", ""), extra=extra))
    else:
        raise ValueError(f"{path}: parquet columns {sorted(columns)} are neither the MMMU nor the MathVista layout")
    return items


def read_records_file(path) -> list[EvalItem]:
    """Our JSONL records and the K12 json, through data.py (same checks and error messages as training)."""
    import data
    items = []
    for r in data.read_records(path):
        items.append(EvalItem(id=r.id, question=r.question, answer=r.answer, images=list(r.images),
                              options=dict(r.options or {}), benchmark=Path(path).stem,
                              subject=str(r.meta.get("subject", r.meta.get("category", ""))),
                              extra={**r.meta, "where": r.where, "source": r.source, "format": "records"}))
    return items


def load_rgb(image):
    from PIL import Image
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    import data
    return data.load_image(image)


def is_mmmu(benchmark):
    return benchmark.lower().startswith("mmmu") and "pro" not in benchmark.lower()


def mmmu_subject(item_id):   # "validation_Art_Theory_12" -> "Art_Theory"
    m = re.match(r"^(?:dev|validation|test)_(.+)_\d+$", str(item_id))
    return m.group(1) if m else ""


def scorer_family(benchmark):
    if is_mmmu(benchmark):
        return "mmmu"
    if "mathvista" in benchmark.lower():
        return "mathvista"
    return "rule"

# -----------------------------------------------------------------------------
# prompts: each benchmark's default prompt, as the paper's VLMEvalKit run sent it (Skywork's model entry sets
# no custom prompt, so the dataset defaults are used verbatim). Sources quoted: SkyworkAI/Skywork-R1V @ b806cef,
# eval/vlmevalkit/vlmeval/dataset/{image_mcq,image_vqa}.py and eval/MMK12/evaluate.py.

# eval/vlmevalkit/vlmeval/dataset/image_mcq.py L1522-1524 (VisuLogic.build_prompt), appended to the question
VISULOGIC_SUFFIX = ("\nSolve the complex visual logical reasoning problem through step-by-step reasoning."
                    "Think about the reasoning process first "
                    "and answer the question following this format: Answer: \\boxed{$LETTER}")
# eval/MMK12/evaluate.py L35 (SYSTEM_PROMPT_32B, the system turn of every MMK12 item, L91-104), verbatim: the
# Python literal "\\\\boxed" is the two characters "\\" then "boxed", and "Th answer" is their typo
MMK12_SYSTEM_PROMPT = "Solve the question. The user asks a question, and you solves it. You first thinks about the reasoning process in the mind and then provides the user with the answer. The answer is in latex format and wrapped in $...$. The final answer must be wrapped using the \\\\boxed{} command. Th answer should be enclosed within <answer> </answer> tags, i.e., Since $1+1=2$, so the answer is $2$. <answer> The answer is $\\\\boxed{2}$ </answer>, which means the final answer assistant's output should start with <answer> and end with </answer>."  # noqa: E501


def build_user_text(item: EvalItem, mmmu_images: str = "front"):
    """-> (user text with one "<image>" per image, images in that order). Images go first ("<image>\\n" each,
    as vLLM's OpenAI server places them) unless said otherwise.
    VLMEvalKit MCQ datasets (MMMU, MMStar, ... and any TSV with option columns; image_mcq.py L174-208):
        "Hint: {hint}\\n" (if any) "Question: {q}\\n" "Options:\\nA. ..\\nB. ..\\n"
        "Please select the correct answer from the options above. \\n"   (MMMU open questions: no options part)
      WeMath (L1259-1294): the same without the "Please select" line; WeMath_COT adds "\\n{requirement}".
      MMMU "<image k>" markers (split_MMMU L411-431: the text is cut at each marker, image k goes between):
        front    the released pipeline: LMDeployAPI sends the pieces as OpenAI content parts and vLLM's server
                 (0.8.3, chat_utils._get_full_multimodal_text_prompt) joins the text parts with "\\n" and puts
                 every image placeholder first: "<image>\\n" * n + "\\n".join(text pieces)
        inplace  image k replaces its marker (the EMMA / InternVL chat() convention)
      Either way the images are the referenced ones in marker order (unreferenced ones dropped, as there).
    VisuLogic (L1510-1524): question + VISULOGIC_SUFFIX. MathVerse (image_vqa.py L362-377): `question`, or
    `query_cot` when the benchmark name has "cot" (MathVerse_MINI_Vision_Only_cot).
    MathVista hub parquet: the official `query`. Other TSVs (MathVista_MINI, MathVision, LogicVista): `question`.
    MMK12 (evaluate.py L100-104, any benchmark named *mmk12*): the question (its system turn: build_messages).
    Our JSONL / K12: data.format_question (question, options, the boxed instruction used in training)."""
    if mmmu_images not in ("front", "inplace"):
        raise ValueError(f"mmmu_images={mmmu_images!r}, expected 'front' or 'inplace'")
    name = item.benchmark.lower()
    if item.extra.get("format") == "records" and "mmk12" not in name:
        import data
        record = data.Record(id=item.id, question=item.question, answer=str(item.answer),
                             images=list(item.images), options=item.options or None, source=item.benchmark)
        return data.format_question(record), list(item.images)

    if name.startswith("mathverse"):
        column = "query_cot" if "cot" in item.benchmark else "question"   # VLMEvalKit: 'cot' in dataset_name
        text = item.question if column == "question" else item.extra.get(column)
        if text is None:
            raise ValueError(f"{item.benchmark} {item.id}: no {column!r} column (a *_cot MathVerse TSV needs it)")
    elif name.startswith("visulogic"):
        text = item.question + VISULOGIC_SUFFIX
    elif "mmk12" in name:
        text = item.question
    elif item.options and "mathvista" not in name or is_mmmu(item.benchmark):
        text = ""
        if item.extra.get("hint"):
            text += f"Hint: {item.extra['hint']}\n"
        text += f"Question: {item.question}\n"
        if item.options:
            text += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in item.options.items())
            if not name.startswith("wemath"):
                text += "Please select the correct answer from the options above. \n"
        if name.startswith("wemath") and "COT" in item.benchmark and item.extra.get("requirement"):
            text += f"\n{item.extra['requirement']}"
    else:
        text = item.question

    markers = [int(m) for m in re.findall(r"<image (\d+)>", text)]
    if markers:
        for k in markers:
            if k < 1 or k > len(item.images) or item.images[k - 1] is None:
                raise ValueError(f"{item.benchmark} {item.id}: <image {k}> but the item has no image {k}")
        images = [item.images[k - 1] for k in markers]
        if mmmu_images == "inplace":
            return re.sub(r"<image \d+>", "<image>", text), images
        return "\n".join(["<image>"] * len(images) + re.split(r"<image \d+>", text)), images
    images = [im for im in item.images if im is not None]
    return "<image>\n" * len(images) + text, images


def build_messages(item: EvalItem, system_prompt: str = "", mmmu_images: str = "front"):
    """-> (chat messages, images): build_user_text's user turn, after a system turn: system_prompt when given,
    else the benchmark's released one (MMK12: MMK12_SYSTEM_PROMPT), else none (R1V3-alpha: system_prompt=None)."""
    text, images = build_user_text(item, mmmu_images)
    system = system_prompt or (MMK12_SYSTEM_PROMPT if "mmk12" in item.benchmark.lower() else "")
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}], images

# -----------------------------------------------------------------------------
# scoring 1: the official MMMU rules (MMMU-Benchmark/MMMU eval/eval_utils.py), rewritten from their description


def answer_segment(response):
    """Text after the last </think> (what the scorers see), the whole text when there is none."""
    return response.rsplit("</think>", 1)[-1]


def mmmu_parse_multi_choice(response, all_choices, index2ans, rng):
    """-> (letter, fell_back). Candidates by the first rule that finds any: "(X)", then " X ", then (only for
    responses of more than 5 words) options whose text appears. Several -> the one mentioned last. None -> a
    random choice from rng (the official code seeds `random` with 42), and fell_back=True."""
    for ch in [",", ".", "!", "?", ";", ":", "'"]:   # one character at a time, as the official loop does
        response = response.strip(ch)
    padded = " " + response + " "
    cands = [c for c in all_choices if f"({c})" in padded]
    where = lambda c: padded.rfind(f"({c})")
    if not cands:
        cands = [c for c in all_choices if f" {c} " in padded]
        where = lambda c: padded.rfind(f" {c} ")
    if not cands and len(padded.split()) > 5:
        cands = [c for c, text in index2ans.items() if text.lower() in padded.lower()]
        where = lambda c: padded.lower().rfind(index2ans[c].lower())
    if not cands:
        return rng.choice(all_choices), True
    positions = [where(c) for c in cands]
    return cands[positions.index(max(positions))], False   # ties: the first candidate, like np.argmax


def mmmu_extract_numbers(text):
    with_commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", text)
    return with_commas + scientific + simple


def mmmu_normalize_str(s):
    """Numbers -> [round(float, 2)]; text -> [lowercase]; one character c -> [" c", "c "] (no trivial matches)."""
    s = s.strip()
    try:
        return [round(float(s.replace(",", "")), 2)]
    except ValueError:
        pass
    s = s.lower()
    return [" " + s, s + " "] if len(s) == 1 else [s]


def mmmu_parse_open(response):
    """-> list of normalized predictions (strings and floats). The response is lowercased *before* it is split on
    r"\\.\\s(?=[A-Z])|\\n", so only newlines split (an official quirk we keep). Per piece, the shortest tail after
    an indicator ("could be ", "so ", "is ", ..., and "=" in the last piece) is a key response; their numbers
    are added; everything is normalized; duplicates dropped."""
    text = response.strip().strip(".").lower()
    pieces = re.split(r"\.\s(?=[A-Z])|\n", text)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys = []
    for i, piece in enumerate(pieces):
        shortest = None
        for ind in indicators + (["="] if i == len(pieces) - 1 else []):
            if ind in piece:
                tail = piece.split(ind)[-1].strip()
                if not shortest or len(tail) < len(shortest):   # an empty tail is replaced by the next one found
                    shortest = tail
        if shortest and shortest.strip() not in [":", ",", ".", "!", "?", ";", "'"]:
            keys.append(shortest)
    if not keys:
        keys = [text]
    preds = []
    for s in keys + [n for key in keys for n in mmmu_extract_numbers(key)]:
        for p in mmmu_normalize_str(s):
            if p not in preds:
                preds.append(p)
    return preds


def mmmu_eval_multi_choice(gold, pred):
    return pred in gold if isinstance(gold, list) else pred == gold


def mmmu_eval_open(gold, preds):
    """A string prediction is right when a normalized gold string is a substring of it; a number when it equals
    a normalized gold number."""
    golds = [n for g in (gold if isinstance(gold, list) else [gold]) for n in mmmu_normalize_str(str(g))]
    for p in preds:
        if isinstance(p, str):
            if any(isinstance(g, str) and g in p for g in golds):
                return True
        elif p in golds:
            return True
    return False


def mmmu_gold(answer):
    """MMMU open golds can be lists; in TSV/parquet they arrive as list literals ("['24/7', '3.429']")."""
    if isinstance(answer, str) and answer.startswith("[") and answer.endswith("]"):
        try:
            value = ast.literal_eval(answer)
            if isinstance(value, list):
                return [str(v) for v in value]
        except (ValueError, SyntaxError):
            pass
    return answer


def score_mmmu_outputs(directory, answers_file=None):
    """Official MMMU example-output layout: DIR/<Subject>/output.json = [{id, question_type, answer, all_choices,
    index2ans, response}]. Subjects in sorted order (= the official CAT_SHORT2LONG order), one rng seeded 42,
    as `main_parse_and_eval.py --subject ALL` does, so even the random fallbacks can match."""
    directory = Path(directory)
    golds = json.loads(Path(answers_file).read_text()) if answers_file else {}
    rng = random.Random(42)
    items, per_subject = {}, {}
    files = sorted(directory.glob("*/output.json"))
    if not files:
        raise ValueError(f"{directory}: no <Subject>/output.json files")
    for f in files:
        outputs = json.loads(f.read_text())
        for n, o in enumerate(outputs):
            where = f"{f}: entry {n}"
            needed = ("id", "question_type", "response") + \
                (("all_choices", "index2ans") if o.get("question_type") == "multiple-choice" else ())
            for key in needed:
                if key not in o:
                    raise ValueError(f"{where}: missing {key!r}")
            gold = golds[o["id"]]["ground_truth"] if o["id"] in golds else o.get("answer")
            if gold is None:
                raise ValueError(f"{where}: no gold answer (no 'answer' field and not in {answers_file})")
            if o["question_type"] == "multiple-choice":
                pred, fell_back = mmmu_parse_multi_choice(o["response"], o["all_choices"], o["index2ans"], rng)
                correct = mmmu_eval_multi_choice(gold, pred)
            else:
                pred, fell_back = mmmu_parse_open(o["response"]), False
                correct = mmmu_eval_open(gold, pred)
            boxed = boxed_rule_check(o["response"], gold)
            items[o["id"]] = {"parsed_pred": pred, "correct": correct, "random_fallback": fell_back,
                              "boxed_rule": boxed, "correct_or_boxed": correct or boxed}
            per_subject.setdefault(f.parent.name, []).append(correct)
    n = len(items)
    correct = sum(v["correct"] for v in items.values())
    return {"accuracy": correct / n, "correct": correct, "total": n,
            "random_fallbacks": sum(v["random_fallback"] for v in items.values()),
            "boxed_rule_accuracy": sum(v["boxed_rule"] for v in items.values()) / n,
            "or_accuracy": sum(v["correct_or_boxed"] for v in items.values()) / n,
            "per_subject": {s: sum(c) / len(c) for s, c in per_subject.items()},
            "items": items}

# -----------------------------------------------------------------------------
# scoring 2: Skywork's boxed rule check (Skywork-R1V eval_shell/rule_base_mmmu.py), OR-ed with the official
# verdict for MMMU as the paper did (§4 "add rule-based check for MMMU")


def boxed_rule_check(response, answer):
    """Last \\boxed{...} (non-greedy, so no nesting) equals the gold, raw or after removing $, \\commands and
    whitespace, one outer brace pair, and lowercasing. List golds: any element."""
    boxes = re.findall(r"\\boxed\{(.*?)\}", response)
    if not boxes:
        return False
    last = boxes[-1].strip()

    def normalize(s):
        s = re.sub(r"\$|\\[a-z]+|\s+", "", s)
        return re.sub(r"^\{|\}$", "", s).lower()

    golds = answer if isinstance(answer, list) else [answer]
    return any(last == str(g).strip() or normalize(last) == normalize(str(g).strip()) for g in golds)

# -----------------------------------------------------------------------------
# scoring 3: VLMEvalKit's option matching (the Skywork-era copy) and MathVista


VLMEVAL_REFUSALS = ["Sorry, I can't help with images of people yet.", "I can't process this file.",
                    "I'm sorry, but without the image provided", "Cannot determine the answer"]


def can_infer_option(answer, choices):
    """The one option letter standing alone as a token (after .()[],:;!*#{} become spaces); 'Z' for a refusal
    or a lone Z; False otherwise."""
    if "Failed to obtain answer via API" in answer:
        return False
    if any(r in answer for r in VLMEVAL_REFUSALS):
        return "Z"
    for c in ".()[],:;!*#{}":
        answer = answer.replace(c, " ")
    tokens = answer.split()
    hits = [c for c in choices if c in tokens]
    if len(hits) == 1:
        return hits[0]
    if not hits and "Z" in tokens:
        return "Z"
    return False


def can_infer_text(answer, choices):
    """The one option whose lowercased text is a substring of the lowercased answer."""
    answer = answer.lower()
    hits = [k for k, v in choices.items() if str(v).lower() in answer]
    return hits[0] if len(hits) == 1 else False


def can_infer(answer, choices):
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


# VLMEvalKit's five in-context examples for the MathVista answer extractor
MATHVISTA_EXTRACT_EXAMPLES = """
Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?
Model response: The number missing in the sequence is 14.
Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?
Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.
Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)
Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.
Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line graph saw its maximum peak?
Model response: The line graph saw its maximum peak between 2007 and 2008.
Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?
Choices: (A) 3/11 (B) 8/11 (C) 6/11 (D) 3/5
Model response: The correct answer is (B) 8/11.
Extracted answer: B
"""


def mathvista_choices(item):
    if item.options:
        return dict(item.options)
    raw = item.extra.get("choices")
    values = ast.literal_eval(raw) if isinstance(raw, str) else list(raw or [])
    return {chr(65 + i): str(v) for i, v in enumerate(values)}


def mathvista_gold_option(item):
    if item.extra.get("answer_option"):
        return item.extra["answer_option"]
    choices = mathvista_choices(item)
    hits = [k for k, v in choices.items() if v == str(item.answer)]
    return hits[0] if hits else str(item.answer)


def mathvista_extract(item, response, llm_extract=None):
    """-> (extracted, how). VLMEvalKit's prefetch first: can_infer for multiple choice, the whole answer parsing
    as a number otherwise (VLMEvalKit only counts a correct number as a prefetch, but sends a wrong one to the
    extractor, which returns it unchanged). Then the LLM extractor when one is configured, else rewards.py's
    rule extractor. Everything sees the answer segment (after </think>), as upstream VLMEvalKit's SPLIT_THINK."""
    text = answer_segment(response).strip()
    if item.extra.get("question_type") == "multi_choice":
        opt = can_infer(text, mathvista_choices(item))
        if opt:
            return opt, "prefetch"
    else:
        try:
            float(text)
            return text, "prefetch"
        except ValueError:
            pass
    if llm_extract is not None:
        prompt = ("Please read the following example. Then extract the answer from the model response and type it "
                  "at the end of the prompt.\n" + MATHVISTA_EXTRACT_EXAMPLES + "\n" + item.question + "\n"
                  + "Model response: " + text + "\nExtracted answer:")
        out = llm_extract(prompt)
        if out is not None:
            return out.strip(), "llm"
    import rewards
    return str(rewards.extract_answer(response)), "rule"


def mathvista_post_check(item, extracted):
    """VLMEvalKit post_check: options through can_infer, integer/float by exact int()/float() equality (precision
    is ignored there too). DEVIATION: text/list answers are compared with the extracted answer; VLMEvalKit
    compares str(None) and so scores every text/list question wrong."""
    answer_type = item.extra.get("answer_type")
    try:
        if item.extra.get("question_type") == "multi_choice":
            return can_infer(str(extracted), mathvista_choices(item)) == mathvista_gold_option(item)
        if answer_type == "integer":
            return int(str(extracted).strip()) == int(str(item.answer).strip())
        if answer_type == "float":
            return float(str(extracted).strip()) == float(str(item.answer).strip())
        if answer_type == "list":
            pred, gold = ast.literal_eval(str(extracted).strip()), ast.literal_eval(str(item.answer).strip())
            return [float(x) for x in pred] == [float(x) for x in gold]
        return str(extracted).strip() == str(item.answer).strip()
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False

# -----------------------------------------------------------------------------
# scoring 4: one response of one item -> a verdict with its parts


def mathvista_llm_extractor(cfg):
    """VLMEvalKit's GPT extractor call, sent to the verifier endpoint (rewards.VerifierClient's URL and model):
    up to 5 tries at temperature 0, 0.5, 1.0, ... while the reply is empty or malformed, 128 tokens. None when
    there is no answer (the rule extractor is used then). A connection error or timeout switches the extractor
    off for the rest of the run, with one message: 5 x timeout per item would stall a 900-item scoring."""
    import http.client
    import socket
    import rewards
    client = rewards.VerifierClient(cfg.verifier_url, model=cfg.verifier_model or rewards.RewardConfig.verifier_model)
    state = {"down": False}

    def extract(prompt):
        if state["down"]:
            return None
        for attempt in range(5):
            body = json.dumps({"model": client.model, "temperature": 0.5 * attempt, "max_tokens": 128,
                               "messages": [{"role": "user", "content": prompt}]}).encode()
            try:
                status, data = client.post(body, {"Content-Type": "application/json"})   # a total deadline
                if status != 200:
                    continue   # the server answered with an error status: try again
                content = json.loads(data)["choices"][0]["message"]["content"]
                if content and content.strip():
                    return content
            except (TimeoutError, ConnectionError, socket.gaierror) as e:
                print(f"MathVista extractor: {client.url}: {e}; rule extraction from now on")
                state["down"] = True
                return None
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError):
                pass   # a broken reply or one that is not OpenAI-shaped: try again
        return None

    return extract


def score_response(item, response, rng, llm_extract=None, reward_cfg=None):
    """-> {"correct", "parsed_pred", ...scorer parts}. MMMU: official rules OR Skywork's boxed rule (each kept);
    MathVista: extraction + post_check; everything else: rewards.score_batch (rule OR verifier, eq. 2).
    score_run batches the last kind; this is the one-response form."""
    family = scorer_family(item.benchmark)
    text = answer_segment(response)
    if family == "mmmu":
        gold = mmmu_gold(item.answer)
        if item.options:
            pred, fell_back = mmmu_parse_multi_choice(text, list(item.options), item.options, rng)
            official = mmmu_eval_multi_choice(gold, pred)
        else:
            pred, fell_back = mmmu_parse_open(text), False
            official = mmmu_eval_open(gold, pred)
        boxed = boxed_rule_check(text, gold)
        return {"correct": official or boxed, "parsed_pred": pred, "mmmu_official": official,
                "boxed_rule": boxed, "random_fallback": fell_back}
    if family == "mathvista":
        extracted, how = mathvista_extract(item, response, llm_extract)
        return {"correct": mathvista_post_check(item, extracted), "parsed_pred": extracted, "extraction": how}
    return score_with_rewards([item], [response], reward_cfg)[0]


def score_with_rewards(items, responses, reward_cfg=None):
    import rewards
    results = rewards.score_batch(list(responses), [str(it.answer) for it in items],
                                  [it.options or None for it in items], [it.question for it in items], reward_cfg)
    return [{"correct": r["accuracy"] == 1.0, "parsed_pred": r["extracted"], "rule": r["rule"] == 1.0,
             "verifier": r["verifier"], "timed_out": r["timed_out"]} for r in results]

# -----------------------------------------------------------------------------
# analyses: avg@k, per subject, hallucination split, tables


def avg_at_k(correct_by_item):
    """{id: [bool]*k} -> accuracy of each of the k runs, their mean (avg@k) and sample std (ddof=1; 0 for k=1)."""
    if not correct_by_item:
        raise ValueError("avg@k of nothing: no scored items")
    ks = {len(v) for v in correct_by_item.values()}
    if len(ks) != 1:
        raise ValueError(f"items have different numbers of samples {sorted(ks)}; finish generation first")
    k = ks.pop()
    per_run = [float(np.mean([v[j] for v in correct_by_item.values()])) for j in range(k)]
    std = float(np.std(per_run, ddof=1)) if k > 1 else 0.0
    return {"accuracy": float(np.mean(per_run)), "std": std, "per_run": per_run, "k": k,
            "n_items": len(correct_by_item)}


def normalize_phrase_text(s):
    return s.replace("\u2019", "'").replace("\u2018", "'").lower()


def hallucination_split(scored, phrases):
    """Table 5 over every response: how many mention any phrase, and the accuracy with / without."""
    needles = [normalize_phrase_text(p) for p in phrases]
    hit = [any(n in normalize_phrase_text(s["response"]) for n in needles) for s in scored]

    def part(mask):
        picked = [s["correct"] for s, m in zip(scored, mask) if m]
        return {"n": len(picked), "accuracy": float(np.mean(picked)) if picked else None}

    return {"all": part([True] * len(scored)), "without": part([not h for h in hit]), "with": part(hit)}


def per_subject_accuracy(scored):
    groups = {}
    for s in scored:
        groups.setdefault(s.get("subject") or "-", []).append(s["correct"])
    return {k: {"n": len(v), "accuracy": float(np.mean(v))} for k, v in sorted(groups.items())}


def summarize_run(scored, cfg_phrases, family):
    """scored: one record per (id, sample) with correct, response, num_tokens, subject (+ scorer parts)."""
    by_item = {}
    for s in sorted(scored, key=lambda s: (s["id"], s["sample"])):
        by_item.setdefault(s["id"], []).append(s)
    summary = avg_at_k({i: [s["correct"] for s in v] for i, v in by_item.items()})
    summary["avg_tokens"] = float(np.mean([s["num_tokens"] for s in scored]))
    summary["per_subject"] = per_subject_accuracy(scored)
    summary["hallucination"] = hallucination_split(scored, cfg_phrases)
    if family == "mmmu":   # each scorer on its own too (the paper reports the OR)
        for part in ("mmmu_official", "boxed_rule"):
            r = avg_at_k({i: [s[part] for s in v] for i, v in by_item.items()})
            summary[part] = {"accuracy": r["accuracy"], "std": r["std"]}
        summary["random_fallbacks"] = sum(s["random_fallback"] for s in scored)
    if family == "rule":   # the rule checker alone, next to rule OR verifier (eq. 2)
        r = avg_at_k({i: [s["rule"] for s in v] for i, v in by_item.items()})
        summary["rule"] = {"accuracy": r["accuracy"], "std": r["std"]}
        summary["timeouts"] = sum(s["timed_out"] for s in scored)
    if family == "mathvista":
        summary["extraction"] = {h: sum(s["extraction"] == h for s in scored) for h in ("prefetch", "llm", "rule")}
    return summary


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_report(runs):
    """runs: {(benchmark, mode, budget): summary}. Overview, Table 4 (modes), Fig. 9 (budgets), Table 5, subjects."""
    lines = ["# Evaluation", "", "| benchmark | mode | budget | k | avg@k | std | avg tokens | parts |",
             "|---|---|---|---|---|---|---|---|"]
    for (bench, mode, budget), s in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        parts = ", ".join(f"{p} {pct(s[p]['accuracy'])}" for p in ("mmmu_official", "boxed_rule", "rule") if p in s)
        lines.append(f"| {bench} | {mode} | {budget or 'none'} | {s['k']} | {pct(s['accuracy'])} | "
                     f"{100 * s['std']:.2f} | {s['avg_tokens']:.0f} | {parts} |")
    for bench in sorted({b for b, _, _ in runs}):
        modes = [(m, runs[(bench, m, None)]) for m in MODES if (bench, m, None) in runs]
        if len(modes) > 1:
            lines += ["", f"## Modes on {bench} (Table 4)", "", "| | " + " | ".join(m for m, _ in modes) + " |",
                      "|---" * (len(modes) + 1) + "|",
                      "| Avg Tokens | " + " | ".join(f"{s['avg_tokens']:.0f}" for _, s in modes) + " |",
                      "| Accuracy (%) | " + " | ".join(pct(s["accuracy"]) for _, s in modes) + " |"]
        for mode in MODES:
            sweep = sorted((b, s) for (bb, m, b), s in runs.items() if bb == bench and m == mode and b)
            if sweep:
                lines += ["", f"## Thinking budget on {bench}, {mode} (Fig. 9)", "",
                          "| budget | accuracy (%) | std | avg tokens |", "|---|---|---|---|"]
                lines += [f"| {b} | {pct(s['accuracy'])} | {100 * s['std']:.2f} | {s['avg_tokens']:.0f} |"
                          for b, s in sweep]
    for (bench, mode, budget), s in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        h = s["hallucination"]
        lines += ["", f"## {bench} {mode} budget {budget or 'none'}: \"can't see the image\" (Table 5)", "",
                  "| subset | samples | accuracy (%) |", "|---|---|---|",
                  f"| All | {h['all']['n']} | {pct(h['all']['accuracy'])} |",
                  f"| Without | {h['without']['n']} | {pct(h['without']['accuracy'])} |",
                  f"| With | {h['with']['n']} | {pct(h['with']['accuracy'])} |"]
        if len(s["per_subject"]) > 1:
            lines += ["", "| subject | samples | accuracy (%) |", "|---|---|---|"]
            lines += [f"| {k} | {v['n']} | {pct(v['accuracy'])} |" for k, v in s["per_subject"].items()]
    return "\n".join(lines) + "\n"

# -----------------------------------------------------------------------------
# generation: shared pieces (resumable JSONL, NoWait mask, the budget rule)


def run_dir_for(out_dir, benchmark, mode, budget):
    return Path(out_dir) / benchmark / f"{mode}_{budget if budget else 'full'}"


def read_generations(path):
    """{(id, sample): record}. A torn last line (killed mid-write) is dropped and regenerated; a bad line
    elsewhere is an error naming file:line."""
    path = Path(path)
    done = {}
    if not path.exists():
        return done
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = (str(rec["id"]), int(rec["sample"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            if lineno == len(lines):   # the last line without its newline: an interrupted write
                print(f"{path}:{lineno}: dropping a torn last line ({type(e).__name__})")
                text = "".join(line + "\n" for line in lines[:-1] if line.strip())
                path.write_text(text, encoding="utf-8")
                break
            raise ValueError(f"{path}:{lineno}: bad generation record: {type(e).__name__}: {e}") from None
        done[key] = rec
    if text and not text.endswith("\n"):   # appends must start on a fresh line
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n")
    return done


def nowait_banned_token_ids(tokenizer, words):
    """Every token that spells one of `words` (§6.2 NoWait): its text, after leading spaces/punctuation, is the word
    in any capitalisation with the last letter repeatable (Hmm, Hmmm) and not followed by another letter
    ("Wait", " wait", "WAIT", ".Wait", "Wait," are banned; "Waiting" is not). A word that the tokenizer can only
    write with several pieces cannot be banned by a token mask without banning other words too (banning the
    first piece of "Alternatively" can ban "A"), so such words are reported, not banned. Qwen2.5's vocabulary
    (the 38B model) has "Wait", " Wait", "Hmm", " Hmm", " Alternatively", ... as single tokens."""
    alternatives = "|".join(re.escape(w) + "+" for w in words)
    pattern = re.compile(r"^[^a-zA-Z]*(?:" + alternatives + r")(?![a-zA-Z])", re.IGNORECASE)
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    banned = sorted(i for i, t in enumerate(texts) if pattern.match(t))
    unbannable = [v for w in words for v in (w, " " + w) if len(tokenizer.encode(v, add_special_tokens=False)) > 1]
    if unbannable:
        print(f"nowait: no single token for {unbannable}; they stay possible as several pieces")
    return banned


def generate_rows(rows, sample_fn, mode, budget, cfg):
    """The budget rule of the module docstring. rows: [{"prefix": "", ...}]; sample_fn(rows, max_tokens,
    stop_at_think_end) -> [{"text", "num_tokens", "finish_reason"}] continuing each row after its prefix.
    -> [{"response", "num_tokens", "finish_reason", "forced_think_end"}]"""
    if not budget or mode == "nothink":
        outs = sample_fn(rows, budget or cfg.max_new_tokens, False)
        return [{"response": o["text"], "num_tokens": o["num_tokens"], "finish_reason": o["finish_reason"],
                 "forced_think_end": False} for o in outs]
    first = sample_fn(rows, budget, True)
    results, again = [], []
    for row, o in zip(rows, first):
        ended_think = o["text"].rstrip().endswith("</think>")
        res = {"response": o["text"], "num_tokens": o["num_tokens"], "finish_reason": o["finish_reason"],
               "forced_think_end": False}
        if o["finish_reason"] == "length" or ended_think:
            if "</think>" not in o["text"]:
                res["response"] += FORCED_THINK_END
                res["num_tokens"] += row["forced_tokens"]
                res["forced_think_end"] = True
            again.append((res, dict(row, prefix=row["prefix"] + res["response"])))
        results.append(res)
    if again:
        second = sample_fn([r for _, r in again], cfg.answer_max_tokens, False)
        for (res, _), o in zip(again, second):
            res["response"] += o["text"]
            res["num_tokens"] += o["num_tokens"]
            res["finish_reason"] = o["finish_reason"]
    return results


def row_sampler(sampler, tokenizer, banned):
    """sample_fn for generate_rows over a sampling.py sampler. Rows with the same prompt and prefix (the k samples
    of a question) become one prompt with n = their count. The built-in sampler takes token ids with our image
    expansion; vLLM takes the ChatML text and PIL images, and its processor tiles and expands them itself."""
    import torch
    import model as M
    import sampling

    def encode(row):
        images = [load_rgb(im) for im in row["images"]]
        if isinstance(sampler, sampling.VLLMSampler):
            return {"prompt": row["prompt"] + row["prefix"], "images": images}
        config = sampler.net.config
        tiles = [M.image_to_pixel_values(im, config) for im in images]
        text = M.expand_image_tokens(row["prompt"], [t.shape[0] for t in tiles], config.num_image_token)
        return {"input_ids": tokenizer.encode(text + row["prefix"], add_special_tokens=False),
                "pixel_values": torch.cat(tiles) if tiles else None}

    def sample_fn(rows, max_tokens, stop_at_think_end):
        groups = {}
        for i, row in enumerate(rows):
            groups.setdefault((row["id"], row["prefix"]), []).append(i)
        outs = sampler.sample([encode(rows[members[0]]) for members in groups.values()],
                              [len(members) for members in groups.values()], max_tokens,
                              stop=[M.THINK_END] if stop_at_think_end else [], banned_ids=banned)
        by_row = {}
        for members, samples in zip(groups.values(), outs):
            by_row.update(zip(members, samples))
        return [by_row[i] for i in range(len(rows))]

    return sample_fn


def prompt_length(prompt, images, tokenizer, config):
    """Tokens of a generation prompt with its images expanded as model.py does (vLLM's processor does the same)."""
    import model as M
    tiles = [M.image_to_pixel_values(load_rgb(im), config).shape[0] for im in images]
    return len(tokenizer.encode(M.expand_image_tokens(prompt, tiles, config.num_image_token), add_special_tokens=False))


def generate_run(cfg, items, mode, budget, sample_fn, run_dir, forced_tokens, tokenizer, model_config=None,
                 max_prompt_tokens=None):
    """Generate the missing (id, sample) pairs of one run, appending each finished batch to generations.jsonl.
    Prompts: build_messages rendered by model.build_prompt with the checkpoint's tokenizer (its chat template).
    max_prompt_tokens (with model_config): a longer prompt is an error naming its item, before any generation
    (vLLM would reject it; model.generate would run past the model's positions)."""
    import model as M
    gen_path = Path(run_dir) / "generations.jsonl"
    gen_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_generations(gen_path)
    others = {rec.get("checkpoint") for rec in done.values()} - {cfg.checkpoint}
    if others:   # resuming must never mix two models' samples in one avg@k
        raise ValueError(f"{gen_path} holds generations of checkpoint(s) {sorted(map(str, others))}, not "
                         f"{cfg.checkpoint!r}: use another out_dir")
    sampling = {key: value for key, value in sampling_of(cfg).items() if key != "k"}   # k may grow on resume
    others = {json.dumps(rec["sampling"]) for rec in done.values() if rec.get("sampling", sampling) != sampling}
    if others:   # nor two protocols' samples (greedy and T = 1) in one avg@k
        raise ValueError(f"{gen_path} holds generations sampled with {', '.join(sorted(others))}, not "
                         f"{json.dumps(sampling)}: use another out_dir")
    prompts = {}
    for item in items:
        messages, images = build_messages(item, cfg.system_prompt, cfg.mmmu_images)
        prompts[item.id] = (M.build_prompt(messages, mode, tokenizer=tokenizer), images)
    pending = [(item, s) for item in items for s in range(cfg.k) if (item.id, s) not in done]
    pending_ids = {item.id for item, _ in pending}
    for item in [it for it in items if it.id in pending_ids] if max_prompt_tokens else []:
        n = prompt_length(*prompts[item.id], tokenizer, model_config)
        if n > max_prompt_tokens:
            where = item.extra.get("where") or f"{item.benchmark}"
            raise ValueError(f"{where}: prompt of item {item.id!r} is {n} tokens, more than {max_prompt_tokens} "
                             f"(min(max_model_len, max_position_embeddings) - 1); drop the item or raise the limit")
    print(f"{run_dir}: {len(done)} samples already generated, {len(pending)} to go")
    chunk = max(1, cfg.batch_size if cfg.backend == "builtin" else cfg.vllm_chunk * cfg.k)
    t0 = time.time()
    for start in range(0, len(pending), chunk):
        part = pending[start:start + chunk]
        rows = [{"id": item.id, "sample": s, "prompt": prompts[item.id][0], "images": prompts[item.id][1],
                 "prefix": "", "forced_tokens": forced_tokens} for item, s in part]
        results = generate_rows(rows, sample_fn, mode, budget, cfg)
        with open(gen_path, "a", encoding="utf-8") as f:
            for (item, s), r in zip(part, results):
                rec = {"id": item.id, "sample": s, "benchmark": item.benchmark, "mode": mode, "budget": budget,
                       "checkpoint": cfg.checkpoint, "sampling": sampling, **r}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                done[(item.id, s)] = rec
        n = start + len(part)
        rate = n / max(time.time() - t0, 1e-9)
        print(f"  {n}/{len(pending)} samples, {rate:.2f}/s, ETA {(len(pending) - n) / max(rate, 1e-9):.0f}s")
    return done


# -----------------------------------------------------------------------------
# scoring a run, writing outputs, W&B


def score_run(items, generations, cfg, mode):
    """Score every generation in item order, then sample order (the MMMU random fallback draws from one rng seeded
    42 in that order, so a rescore gives the same verdicts). Returns one scored record per (id, sample)."""
    rng = random.Random(42)
    llm_extract = mathvista_llm_extractor(cfg) if cfg.verifier_url else None
    scored, batched = [], []
    for item in items:
        for s in range(cfg.k):
            g = generations.get((item.id, s))
            if g is None:
                continue
            rec = {"id": item.id, "sample": s, "subject": item.subject, "response": g["response"],
                   "num_tokens": g["num_tokens"]}
            if scorer_family(item.benchmark) == "rule":
                batched.append((rec, item))
            else:
                rec.update(score_response(item, g["response"], rng, llm_extract))
            scored.append(rec)
    if batched:   # one batch: Math-Verify workers with hard timeouts, concurrent verifier calls
        import rewards
        reward_cfg = rewards.RewardConfig(think_mode=mode != "nothink", verifier_url=cfg.verifier_url,
                                          verifier_model=cfg.verifier_model or rewards.RewardConfig.verifier_model)
        verdicts = score_with_rewards([it for _, it in batched], [r["response"] for r, _ in batched], reward_cfg)
        for (rec, _), verdict in zip(batched, verdicts):
            rec.update(verdict)
        print(f"rewards: {rewards.last_stats.as_dict()}")
    return scored


DEVIATIONS = [
    "MathVista post_check: text/list answers are compared with the extracted answer (VLMEvalKit compares "
    "str(None), so it scores them all wrong).",
    "MathVista extraction without a verifier endpoint: rewards.extract_answer instead of the GPT extractor.",
    "MMMU open: predictions de-duplicated in first-seen order instead of set() order (same set, same verdict).",
    "Images are decoded from the benchmark file as stored (the released pipeline re-encodes them as JPEG).",
]


def setting_deviations(cfg, sampling, tokenizer=None):
    """Deviations from the released evaluation (VLMEvalKit R1V3-alpha over vLLM's OpenAI server) that depend on
    the settings, worded from the settings and from model.build_prompt itself, so that they cannot go stale.
    sampling: the runs' settings (run_sampling; None: they differ or are not recorded). tokenizer: the
    checkpoint's (None when only scoring: the template is then not known)."""
    import model as M
    out = []
    if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        out.append("The checkpoint's tokenizer has no chat template: prompts use ChatML without a system turn "
                   "(the released tokenizer_config.json template is not public).")
    nowait = M.build_prompt([{"role": "user", "content": "Q"}], "nowait", tokenizer=tokenizer)
    think_prefix = M.THINK_START + "\n"
    out.append(f"nowait (not in the release) {'keeps' if nowait.endswith(think_prefix) else 'drops'} the "
               f"{think_prefix!r} generation prompt of think mode; its {cfg.nowait_words} tokens are banned.")
    if cfg.system_prompt:
        out.append(f"System turn {cfg.system_prompt!r} on every benchmark (released: none; MMK12 its own).")
    if cfg.mmmu_images == "inplace":
        out.append("MMMU: each <image k> is replaced by its image in place (released: every image first, the "
                   "text pieces between markers joined with '\\n').")
    if sampling is None:
        out.append("Sampling: the runs record no common setting (see runs/*/sampling).")
    elif sampling != PROTOCOLS["released"]:
        out.append(f"Sampling ({protocol_of(sampling)}): {sampling} (released evaluation: greedy, 1 sample, "
                   f"16384 tokens).")
    return out


def run_sampling(generations, cfg):
    """A run's sampling settings, as its generations record them (a rescore may be given other flags); None
    when they do not say (files written before they did) or disagree."""
    found = {json.dumps(g.get("sampling"), sort_keys=True) for g in generations.values()}
    settings = json.loads(found.pop()) if len(found) == 1 else None
    return {**settings, "k": cfg.k} if settings else None


def write_run(run_dir, scored, summary):
    run_dir = Path(run_dir)
    with open(run_dir / "scores.jsonl", "w", encoding="utf-8") as f:
        for s in scored:
            f.write(json.dumps({k: v for k, v in s.items() if k != "response"}, ensure_ascii=False) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))


def collect_runs(out_dir):
    runs = {}
    for f in sorted(Path(out_dir).glob("*/*/summary.json")):
        s = json.loads(f.read_text())
        runs[(s["benchmark"], s["mode"], s["budget"])] = s
    return runs


def write_overall(cfg, out_dir, main_keys, tokenizer=None):
    """OUT/summary.json: top-level accuracy/std = the main runs of this invocation (first mode, no budget or the
    largest), macro-averaged over benchmarks run by run; every run found under OUT under "runs"."""
    runs = collect_runs(out_dir)
    mains = [runs[k] for k in main_keys if k in runs]
    overall = {"accuracy": None, "std": None}
    if mains:
        per_run = np.mean([m["per_run"] for m in mains], axis=0)   # same k everywhere: one invocation
        overall = {"accuracy": float(np.mean(per_run)),
                   "std": float(np.std(per_run, ddof=1)) if len(per_run) > 1 else 0.0,
                   "per_run": [float(x) for x in per_run], "benchmarks": [m["benchmark"] for m in mains]}
        if len(mains) == 1:   # one benchmark: its breakdowns at the top level too
            overall.update({k: mains[0][k] for k in ("k", "n_items", "avg_tokens", "per_subject", "hallucination")})
    overall["runs"] = {f"{b}/{m}/{bud or 'full'}": s for (b, m, bud), s in runs.items()}
    samplings = {json.dumps(m["sampling"], sort_keys=True) for m in mains}   # those of the main runs
    sampling = (json.loads(samplings.pop()) if len(samplings) == 1 else None) if mains else sampling_of(cfg)
    overall["protocol"] = protocol_of(sampling)
    overall["deviations"] = DEVIATIONS + setting_deviations(cfg, sampling, tokenizer)
    overall["config"] = asdict(cfg)
    (Path(out_dir) / "summary.json").write_text(json.dumps(overall, indent=1, ensure_ascii=False))
    (Path(out_dir) / "summary.md").write_text(markdown_report(runs), encoding="utf-8")
    return overall, runs


def log_wandb(cfg, overall, runs):
    if not cfg.wandb:
        return
    try:
        import wandb
    except ImportError:
        print("wandb not installed: skipping W&B logging")
        return
    try:   # the results are on disk already: a W&B problem (no API key, no network) must not fail the run
        run = wandb.init(project=cfg.wandb_project, name=cfg.run_name or None, config=asdict(cfg),
                         dir=cfg.out_dir, job_type="eval")
    except Exception as e:
        print(f"W&B logging skipped: {type(e).__name__}: {e} (set WANDB_MODE=offline or disabled)")
        return
    metrics = {"eval/accuracy": overall["accuracy"], "eval/std": overall["std"]}
    table = wandb.Table(columns=["benchmark", "mode", "budget", "k", "accuracy", "std", "avg_tokens",
                                 "halluc_n", "acc_with", "acc_without"])
    for (b, m, bud), s in runs.items():
        key = f"eval/{b}/{m}/{bud or 'full'}"
        metrics[f"{key}/accuracy"] = s["accuracy"]
        metrics[f"{key}/avg_tokens"] = s["avg_tokens"]
        h = s["hallucination"]
        table.add_data(b, m, bud or 0, s["k"], s["accuracy"], s["std"], s["avg_tokens"], h["with"]["n"],
                       h["with"]["accuracy"], h["without"]["accuracy"])
    metrics["eval/runs"] = table
    run.log(metrics)
    run.finish()

# -----------------------------------------------------------------------------
# main


def parse_args(argv):
    """The sampling preset that `protocol` names, then config files and --key=value overrides, type-checked
    against EvalConfig (train_utils.parse_config)."""
    from train_utils import parse_config, print_config
    protocol = parse_config(EvalConfig, argv).protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol={protocol!r}: not one of {sorted(PROTOCOLS)}")
    cfg = parse_config(replace(EvalConfig(), **PROTOCOLS[protocol]), argv)
    if cfg.mmmu_images not in ("front", "inplace"):
        raise ValueError(f"--mmmu_images={cfg.mmmu_images!r}: expected front or inplace")
    print_config(cfg)
    return cfg


def main_mmmu_outputs(argv):
    import argparse
    p = argparse.ArgumentParser(description="score the official MMMU example-output layout")
    p.add_argument("--mmmu_outputs", required=True, help="DIR with <Subject>/output.json")
    p.add_argument("--json", required=True, help="where to write {accuracy, items}")
    p.add_argument("--answers", default=None, help="answer_dict_val.json (else each entry's 'answer')")
    args = p.parse_args([a for arg in argv for a in (arg.split("=", 1) if arg.startswith("--") else [arg])])
    result = score_mmmu_outputs(args.mmmu_outputs, args.answers)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"MMMU official rules: {result['correct']}/{result['total']} = {100 * result['accuracy']:.2f}% "
          f"({result['random_fallbacks']} random fallbacks); boxed rule {100 * result['boxed_rule_accuracy']:.2f}%, "
          f"OR {100 * result['or_accuracy']:.2f}%  -> {args.json}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--mmmu_outputs" or a.startswith("--mmmu_outputs=") for a in argv):
        return main_mmmu_outputs(argv)
    cfg = parse_args(argv)
    modes = [m.strip() for m in cfg.mode.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise ValueError(f"--mode: {m!r} is not one of {MODES}")
    if not cfg.benchmarks:
        raise ValueError("--benchmarks: give a list of benchmark files, e.g. --benchmarks=\"['MMMU_DEV_VAL.tsv']\"")
    benchmarks = []
    for path in cfg.benchmarks:
        items = read_benchmark(path)
        if cfg.split:
            items = [it for it in items if it.extra.get("split", cfg.split) == cfg.split]
        if cfg.max_items:
            items = items[: cfg.max_items]
        if not items:
            raise ValueError(f"{path}: no items (split={cfg.split!r})")
        import data   # every image path now, naming the record, not when its batch comes up
        data.check_images([{"images": [im for im in it.images if isinstance(im, str)],
                            "where": it.extra.get("where") or f"{path}: item {it.id!r}"} for it in items], decode=True)
        seen = set()
        for it in items:   # (id, sample) keys the generations: an id twice would mix two questions' samples
            if it.id in seen:
                raise ValueError(f"{path}: id {it.id!r} appears twice")
            seen.add(it.id)
        if items[0].benchmark in [b[0].benchmark for b in benchmarks]:
            raise ValueError(f"{path}: a second benchmark named {items[0].benchmark!r} (its outputs would collide)")
        bench = items[0].benchmark
        print(f"{path}: {len(items)} items, benchmark {bench} (scorer: {scorer_family(bench)})")
        benchmarks.append(items)
    budgets = sorted(int(b) for b in cfg.budgets) or [None]

    sampler, tokenizer = None, None
    if not cfg.score_only:
        import sampling
        backend = cfg.backend = sampling.pick_backend(cfg.backend)
        if not cfg.checkpoint:
            raise ValueError("--checkpoint is required to generate (or use --score_only=True)")
        import model as M
        tokenizer = M.load_tokenizer(cfg.checkpoint)
        model_config = M.ModelConfig.from_json(Path(cfg.checkpoint) / "config.json")
        max_prompt_tokens = min(cfg.max_model_len, model_config.llm_config.get("max_position_embeddings",
                                                                                cfg.max_model_len)) - 1
        sampler = sampling.make_sampler(
            backend, tokenizer, cfg.checkpoint, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
            batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype,
            tensor_parallel_size=cfg.tensor_parallel_size, gpu_memory_utilization=cfg.gpu_memory_utilization,
            max_model_len=cfg.max_model_len, max_images=cfg.max_images)

    main_keys = []
    for items in benchmarks:
        bench = items[0].benchmark
        for mode in modes:
            banned = []
            if mode == "nowait" and tokenizer is not None:
                banned = nowait_banned_token_ids(tokenizer, cfg.nowait_words)
                print(f"nowait: {len(banned)} banned token ids")
            for budget in budgets:
                run_dir = run_dir_for(cfg.out_dir, bench, mode, budget)
                if cfg.score_only:
                    generations = read_generations(run_dir / "generations.jsonl")
                else:
                    forced = len(tokenizer.encode(FORCED_THINK_END, add_special_tokens=False))
                    sample_fn = row_sampler(sampler, tokenizer, banned)
                    generations = generate_run(cfg, items, mode, budget, sample_fn, run_dir, forced, tokenizer,
                                               model_config, max_prompt_tokens)
                missing = [(it.id, s) for it in items for s in range(cfg.k) if (it.id, s) not in generations]
                if missing:
                    raise ValueError(f"{run_dir}: {len(missing)} (id, sample) pairs not generated, e.g. {missing[:3]}")
                scored = score_run(items, generations, cfg, mode)
                sampling = run_sampling(generations, cfg)
                summary = {"benchmark": bench, "mode": mode, "budget": budget, "protocol": protocol_of(sampling),
                           "sampling": sampling,
                           **summarize_run(scored, cfg.hallucination_phrases, scorer_family(bench))}
                write_run(run_dir, scored, summary)
                print(f"{bench} {mode} budget={budget or 'none'}: avg@{summary['k']} = {pct(summary['accuracy'])} "
                      f"± {100 * summary['std']:.2f}, {summary['avg_tokens']:.0f} tokens")
                if mode == modes[0] and budget == budgets[-1]:
                    main_keys.append((bench, mode, budget))
    overall, runs = write_overall(cfg, cfg.out_dir, main_keys, tokenizer)
    print(f"accuracy {pct(overall['accuracy'])} -> {Path(cfg.out_dir) / 'summary.json'}, summary.md")
    log_wandb(cfg, overall, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
