"""
Benchmarks, as nanochat's tasks/, for eval.py: readers (VLMEvalKit TSV, the HF hub parquet of MMMU, MathVista,
EMMA-mini and MMK12, our JSONL records and the K12 json -> [EvalItem]), each benchmark's released prompt
(build_messages), and which scorer each answer gets (score_response): MMMU's rules OR Skywork's boxed rule,
MathVista's extraction and post_check (both in scorers.py), HallusionBench's Yes/No, MME-Reasoning's puzzle
checkers (puzzles.py), several-letter golds, and rewards.score_batch (eq. 2's rule) for the rest. The reported
number per benchmark is bench_metrics.py's; the LLM judges are judges.py's. DEVIATIONS (at the end, written into
summary.json by eval.py) says where we still differ from the paper's evaluation.
"""

import ast
import base64
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

import data
import judges
import puzzles
import rewards
from scorers import (answer_segment, boxed_rule_check, can_infer, mathvista_extract,  # noqa: F401 (also
                     mathvista_post_check, mmmu_eval_multi_choice, mmmu_eval_open, mmmu_gold,   # benchmarks.X)
                     mmmu_normalize_str, mmmu_parse_multi_choice, mmmu_parse_open, score_mmmu_outputs,
                     scoring_options)

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


def load_items(path, split="", max_items=0) -> list[EvalItem]:
    """read_benchmark, the rows of `split` (rows without a split column stay), the first max_items (0: all),
    checked now, not when their batch comes up: some items, every image path (naming the record), unique ids."""
    items = read_benchmark(path)
    if split:
        items = [it for it in items if it.extra.get("split", split) == split]
    if max_items:
        items = items[: max_items]
    if not items:
        raise ValueError(f"{path}: no items (split={split!r})")
    data.check_images([{"images": [im for im in it.images if isinstance(im, str)],
                        "where": it.extra.get("where") or f"{path}: item {it.id!r}"} for it in items], decode=True)
    seen = set()
    for it in items:   # (id, sample) keys the generations: an id twice would mix two questions' samples
        if it.id in seen:
            raise ValueError(f"{path}: id {it.id!r} appears twice")
        seen.add(it.id)
    return items


def decode_image(data, where):
    try:
        raw = base64.b64decode(data, validate=False) if isinstance(data, str) else data
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image
    except Exception as e:
        raise ValueError(f"{where}: cannot decode image: {type(e).__name__}: {e}") from None


def list_cell(cell, where, column):
    """A TSV cell holding one string or a Python list literal of strings (VLMEvalKit writes multi-image rows so)
    -> [str]. A bracketed cell that is not such a list (a typo, brackets nested past the parser's depth) is an
    error naming the row, not a bare SyntaxError/RecursionError from ast."""
    if not (cell.startswith("[") and cell.endswith("]")):
        return [cell]
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(f"{where}: {column} cell {cell[:60]!r} is not a list literal of strings "
                         f"({type(e).__name__})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {column} cell {cell[:60]!r} is not a list of strings")
    return value


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
            cell = row["image"]
            if len(cell) <= 64:   # a reference: reuse the image of the row with that index
                if cell not in image_of or len(image_of[cell]) <= 64:
                    raise ValueError(f"{where}: image {cell!r} is not the index of a row with an image")
                cell = image_of[cell]
            images = [decode_image(b, where) for b in list_cell(cell, where, "image")]
        elif "image_path" in row and row["image_path"]:
            images = [str(path.parent / q) for q in list_cell(row["image_path"], where, "image_path")]
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
          metadata (struct: task, category, skills, ...), query (the official prompt with its hint).
    EMMA (luckychao/EMMA-mini, Skywork's EMMA protocol): pid, question, options (list), answer, image_1..image_5,
          type (Multiple Choice|Open-ended), context, subject, ...
    MMK12 (FanqingM/MMK12, Skywork's eval/MMK12/evaluate.py): id, question, image ({bytes, path}), answer, ...
    EMMA and MMK12 items are named after the file (or directory) stem, e.g. EMMA-mini, MMK12."""
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
    elif {"pid", "question", "options", "answer", "type", "context"} <= columns:   # EMMA
        for f, n, r in rows:
            where = f"{f}: row {n} (pid {r['pid']})"
            images = [image_from(r.get(f"image_{i}"), f, where) for i in range(1, 6)]
            options = {chr(65 + i): str(c) for i, c in enumerate(r["options"] or [])} \
                if str(r["type"]).lower() == "multiple choice" else {}
            extra = {k: v for k, v in r.items()
                     if not k.startswith("image_") and k not in ("pid", "question", "answer")}
            items.append(EvalItem(id=str(r["pid"]), question=r["question"], answer=str(r["answer"]), images=images,
                                  options=options, benchmark=path.stem, subject=str(r.get("subject") or ""),
                                  extra={**extra, "emma_images": True}))
    elif {"id", "question", "answer", "image"} <= columns:   # MMK12: one image per question
        for f, n, r in rows:
            where = f"{f}: row {n} (id {r['id']})"
            image = image_from(r["image"], f, where) if isinstance(r["image"], dict) else None
            extra = {k: v for k, v in r.items() if k not in ("id", "question", "answer", "image")}
            items.append(EvalItem(id=str(r["id"]), question=r["question"], answer=str(r["answer"]),
                                  images=[image] if image is not None else [], options={}, benchmark=path.stem,
                                  subject=str(r.get("subject") or ""), extra=extra))
    else:
        raise ValueError(f"{path}: parquet columns {sorted(columns)} are none of the MMMU, MathVista, EMMA or MMK12 "
                         f"layouts")
    return items


def read_records_file(path) -> list[EvalItem]:
    """Our JSONL records and the K12 json, through data.py (same checks and error messages as training)."""
    items = []
    for r in data.read_records(path):
        items.append(EvalItem(id=r.id, question=r.question, answer=r.answer, images=list(r.images),
                              options=dict(r.options or {}), benchmark=Path(path).stem,
                              subject=str(r.meta.get("subject", r.meta.get("category", ""))),
                              extra={**r.meta, "where": r.where, "source": r.source, "format": "records"}))
    return items


def load_rgb(image):
    if isinstance(image, Image.Image):
        return data.to_rgb(image)   # TSV images too: a 16-bit PNG scaled, not clipped white
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
# SeePhys is not in Skywork's fork: open-compass/VLMEvalKit @ e8e78f05 vlmeval/dataset/image_vqa.py L1607-1641
# (SeePhys.build_prompt, default USE_COT_PROMPT=1)
SEEPHYS_COT_EN = ("\nPlease answer this question with reasoning. First output your reasoning process in <think> "
                  "</think> tags and then output the final answer in <answer> </answer> tags.")
SEEPHYS_COT_ZH = ("\n请用推理来回答这个问题。"
                  "首先在<think></think>标签中输出推理过程，然后在<answer></answer>标签中输入最终答案。")
# eval/EMMA/configs/gpt.yaml (multi_choice_format, open_ended_format, Strategy_Instruction.CoT) as yaml.safe_load
# reads them (the folded lines joined with "\n"), after str.format ("{{}}" -> "{}")
EMMA_MCQ = ("{context}\n{question}\n{options}\nAnswer with the option's letter from the given choices and put the "
            "letter in one \"\\boxed{{}}\". ")
EMMA_OPEN = ("{context}\n{question}\nAnswer the question using a single word or phrase and put the answer in one "
             "\"\\boxed{{}}\". ")
EMMA_COT = "Please solve the problem step by step."
# eval/vlmevalkit/vlmeval/dataset/image_mcq.py L462-514 (MMMUProDataset.build_prompt): MMMU_Pro_10c[_COT] sends
# "Question: ..\nOptions:\n.." + one of these; MMMU_Pro_V[_COT] only the image and MMMU_PRO_V_PROMPT + one
MMMU_PRO_V_PROMPT = "Answer the following multiple-choice question in the image. "
MMMU_PRO_DIRECT = "Answer directly with the option letter from the given choices. "
MMMU_PRO_COT = ("The last line of your response should be of the following format: 'Answer: $LETTER' "
                "(without quotes) where LETTER is one of the options. Think step by step before answering. ")
MMMU_PRO_COT_MCQ = "Answer the following multiple-choice question. " + MMMU_PRO_COT
# eval/MMK12/evaluate.py L35 (SYSTEM_PROMPT_32B, the system turn of every MMK12 item, L91-104), verbatim: the
# Python literal "\\\\boxed" is the two characters "\\" then "boxed", and "Th answer" is their typo
MMK12_SYSTEM_PROMPT = "Solve the question. The user asks a question, and you solves it. You first thinks about the reasoning process in the mind and then provides the user with the answer. The answer is in latex format and wrapped in $...$. The final answer must be wrapped using the \\\\boxed{} command. Th answer should be enclosed within <answer> </answer> tags, i.e., Since $1+1=2$, so the answer is $2$. <answer> The answer is $\\\\boxed{2}$ </answer>, which means the final answer assistant's output should start with <answer> and end with </answer>."  # noqa: E501


def build_user_text(item: EvalItem, mmmu_images: str = "front", instruction: str = data.DEFAULT_INSTRUCTION):
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
    Our JSONL / K12: data.format_question (question, options, `instruction`: the boxed one used in training)."""
    if mmmu_images not in ("front", "inplace"):
        raise ValueError(f"mmmu_images={mmmu_images!r}, expected 'front' or 'inplace'")
    name = item.benchmark.lower()
    if item.extra.get("format") == "records" and "mmk12" not in name:
        record = data.Record(id=item.id, question=item.question, answer=str(item.answer),
                             images=list(item.images), options=item.options or None, source=item.benchmark)
        return data.format_question(record, instruction), list(item.images)

    if name.startswith("mathverse"):
        column = "query_cot" if "cot" in item.benchmark else "question"   # VLMEvalKit: 'cot' in dataset_name
        text = item.question if column == "question" else item.extra.get(column)
        if text is None:
            raise ValueError(f"{item.benchmark} {item.id}: no {column!r} column (a *_cot MathVerse TSV needs it)")
    elif item.extra.get("emma_images"):   # eval/EMMA/data_utils.py build_query + configs/gpt.yaml, CoT strategy
        if item.options:
            options = "".join(f"{k}: {v}\n" for k, v in item.options.items())
            text = EMMA_MCQ.format(context=item.extra.get("context") or "", question=item.question, options=options)
        else:
            text = EMMA_OPEN.format(context=item.extra.get("context") or "", question=item.question)
        text += EMMA_COT
        # models/skywork.py process_query: each <image_n> becomes "<image>" in place, images in marker order
        picked = [int(k) for k in re.findall(r"<image_(\d+)>", text)]
        for k in picked:
            if k < 1 or k > len(item.images) or item.images[k - 1] is None:
                raise ValueError(f"{item.benchmark} {item.id}: <image_{k}> but the item has no image {k}")
        return re.sub(r"<image_\d+>", "<image>", text), [item.images[k - 1] for k in picked]
    elif name.startswith("seephys"):   # the reasoning instruction and the significant figures, by language
        english = item.extra.get("language", "English") == "English"
        text = item.question + (SEEPHYS_COT_EN if english else SEEPHYS_COT_ZH)
        try:
            figures = str(int(float(item.extra["sig_figs"])))
            text += f"The final answer should retain {figures} significant figures." if english else \
                f"最终答案应保留{figures}位有效数字。"
        except (KeyError, ValueError, OverflowError):
            pass
    elif name.startswith("mmmu_pro_v"):   # the vision setting: question and options are in the image only
        text = MMMU_PRO_V_PROMPT + (MMMU_PRO_COT if "cot" in name else MMMU_PRO_DIRECT)
    elif name.startswith("mmmu_pro"):
        text = f"Question: {item.question}\n"
        if item.options:
            text += "Options:\n" + judges.option_string(item.options)
            text += MMMU_PRO_COT_MCQ if "cot" in name else MMMU_PRO_DIRECT
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
            text += "Options:\n" + judges.option_string(item.options)
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


def build_messages(item: EvalItem, system_prompt: str = "", mmmu_images: str = "front",
                   instruction: str = data.DEFAULT_INSTRUCTION):
    """-> (chat messages, images): build_user_text's user turn, after a system turn: system_prompt when given,
    else the benchmark's released one (MMK12: MMK12_SYSTEM_PROMPT), else none (R1V3-alpha: system_prompt=None)."""
    text, images = build_user_text(item, mmmu_images, instruction)
    system = system_prompt or (MMK12_SYSTEM_PROMPT if "mmk12" in item.benchmark.lower() else "")
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}], images

# -----------------------------------------------------------------------------
# scoring 4: one response of one item -> a verdict with its parts


def score_response(item, response, rng, llm_extract=None, reward_cfg=None):
    """-> {"correct", "parsed_pred", ...scorer parts}. MMMU: official rules OR Skywork's boxed rule (each kept);
    MathVista: extraction + post_check; everything else: rewards.score_batch (rule OR verifier, eq. 2).
    eval.score_run batches the last kind; this is the one-response form."""
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
    own = own_rule_verdict(item, response)
    return own if own is not None else score_with_rewards([item], [response], reward_cfg)[0]


def multi_letter_gold(answer):
    """LogicVista-style golds of several options ("A, C") -> ["A", "C"]; None for anything else."""
    text = str(answer).strip()
    return sorted(re.findall(r"[A-Z]", text)) if re.fullmatch(r"[A-Z](?:\s*,\s*[A-Z])+", text) else None


def own_rule_verdict(item, response):
    """The benchmarks whose rule is not rewards.py's: -> verdict dict, or None (rewards.score_batch scores it).
      HallusionBench  VLMEvalKit YOrN_Extraction of the answer == the Yes/No gold
      MME-Reasoning   rows whose function_id names a puzzle checker: puzzles.check_response
      several letters the set of letters in the extracted answer ("AC", "A, C", "A and C") == the gold's
                      (LogicVista: sorted letters equal answer.split(", "))"""
    golds = multi_letter_gold(item.answer)
    if "hallusion" in item.benchmark.lower():
        pred = judges.yorn_extract(answer_segment(response))
        correct = pred == str(item.answer).strip()
    elif item.extra.get("function_id") in puzzles.CHECKERS:
        correct, pred = puzzles.check_response(item.extra["function_id"], item.extra.get("special_info", "{}"),
                                               response, item.answer, where=f"{item.benchmark} {item.id}")
    elif golds:
        pred = rewards.extract_answer(response)
        cleaned = re.sub(r"\band\b|[\s,;&/()]", "", pred)
        correct = re.fullmatch(r"[A-Z]+", cleaned) is not None and sorted(set(cleaned)) == golds
    else:
        return None
    return {"correct": correct, "parsed_pred": pred, "rule": correct, "verifier": None, "timed_out": False}


def score_with_rewards(items, responses, reward_cfg=None):
    results = rewards.score_batch(list(responses), [str(it.answer) for it in items],
                                  [scoring_options(it) or None for it in items], [it.question for it in items],
                                  reward_cfg)
    return [{"correct": r["accuracy"] == 1.0, "parsed_pred": r["extracted"], "rule": r["rule"] == 1.0,
             "verifier": r["verifier"], "timed_out": r["timed_out"]} for r in results]


# where we differ from the reference evaluation, per benchmark (eval.py writes this into summary.json; README
# "Table 1" lists the same). The sampling settings' deviations are eval.setting_deviations.
DEVIATIONS = [
    "All: a verdict is rules OR judge, and the judge (any model at --verifier_url; the paper used "
    "gpt-4o-2024-05-13) is asked only about answers the rules score wrong. VLMEvalKit asks it whenever its own "
    "stricter prefetch (can_infer, exact match) fails, so a few answers our rules accept would go to its judge.",
    "All: a judge reply that does not parse after the reference's retries is counted ('unparseable') and scored "
    "wrong; VLMEvalKit's option matcher draws a random option there.",
    "All: images are decoded from the benchmark file as stored (the released pipeline re-encodes them as JPEG).",
    "MMMU: open questions are scored with the official MMMU rules (VLMEvalKit turns them into 2-way MCQs), OR "
    "Skywork's boxed rule; predictions de-duplicated in first-seen order instead of set() order (same verdict).",
    "EMMA: Skywork's EMMA-mini protocol prompt (CoT), but our sampling (theirs: T = 0.7, 64,000 tokens); "
    "verdicts by rules (Math-Verify) OR EMMA's own GPT scoring prompt (evaluation/evaluate.py --gpt_eval), where "
    "EMMA's judge scores every answer; the EMMA-mini parquet files must lie in one directory.",
    "MMMU-Pro: reported as the mean of the standard-10 and vision settings (the paper gives one number); "
    "verdicts by rules OR VLMEvalKit's option-matching judge prompt.",
    "MMK12: Skywork's judge scores every answer yes/no; we ask it only about answers the rules score wrong "
    "(Skywork samples at T = 0.8).",
    "HallusionBench: Table 1's figure is taken to be OpenCompass's mean(aAcc, fAcc, qAcc) (inferred from the "
    "other models' columns, which are their OpenCompass numbers); aAcc, fAcc and qAcc are reported too. "
    "Yes/No is read from the answer after </think> (Skywork's fork reads the whole response, where the "
    "thinking's yes/no words mostly leave it 'Unknown' for the judge).",
    "MathVista: post_check compares text/list answers with the extracted answer (VLMEvalKit compares str(None), "
    "so it scores them all wrong); without an endpoint rewards.extract_answer replaces the GPT extractor.",
    "PhyX: VLMEvalKit's letter extraction and multiple-choice judge prompt, asked only about answers the rules "
    "(Math-Verify) reject; its open-ended judge prompt is not ported (the open-ended files would get the generic "
    "verifier prompt). SeePhys: VLMEvalKit's extract-then-score prompts, asked only about answers the rules "
    "reject; its sympy parse_latex prefetch is replaced by those rules. MathVerse's and MathVision's judge "
    "prompts likewise (VLMEvalKit sends every answer through them); MathVision's is_equal uses math-verify's "
    "latex2sympy2_extended (the reference: latex2sympy2), and its rules are Math-Verify, with the `choices` "
    "mapping a boxed option text to its letter.",
    "All judges see the answer after </think> (Skywork's fork does so for the option matcher; its MathVerse, "
    "LogicVista, Yes/No, EMMA and MME-Reasoning judges, and VLMEvalKit's PhyX and SeePhys ones, get the whole "
    "response).",
    "WeMath: the scores divide by the number of multi-step problems in the file (VLMEvalKit: the constant 525, "
    "the full set's count); per-row verdicts by rules OR WeMath's option-matching judge prompt.",
    "MME-Reasoning: every checker function is ported (puzzles.py). The rules read the checker's input from the "
    "answer itself (the last \\boxed{}, JSON/Python literal, grid, 'A: 5' pairs, '(A, 1)' cells or 'a1-b1: 2' "
    "bridges); only when that fails does the judge rewrite the response with the row's extraction prompt "
    "(VLMEvalKit rewrites every response so), and without an endpoint an answer in other words scores wrong.",
    "PhyX: read from VLMEvalKit's PhyX_mini_MC (question text as stored); that it is the paper's "
    "mc-text-minimal variant is not verified. SeePhys: prompt from upstream VLMEvalKit (Skywork's fork has no "
    "SeePhys).",
]
