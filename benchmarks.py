"""
Benchmarks, as nanochat's tasks/, for eval.py: readers (VLMEvalKit TSV, the HF hub parquet of MMMU and MathVista,
our JSONL records and the K12 json -> [EvalItem]), each benchmark's released prompt (build_messages), and the
official scorers (score_response): MMMU's rules OR Skywork's boxed rule, VLMEvalKit's can_infer + MathVista's
extraction and post_check, rewards.score_batch (eq. 2) for the rest. DEVIATIONS (at the end, written into
summary.json by eval.py) says where we differ from the reference scorers.
"""

import ast
import base64
import csv
import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

import data
import rewards

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
            blobs = ast.literal_eval(cell) if cell.startswith("[") and cell.endswith("]") else [cell]
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
    return score_with_rewards([item], [response], reward_cfg)[0]


def score_with_rewards(items, responses, reward_cfg=None):
    results = rewards.score_batch(list(responses), [str(it.answer) for it in items],
                                  [it.options or None for it in items], [it.question for it in items], reward_cfg)
    return [{"correct": r["accuracy"] == 1.0, "parsed_pred": r["extracted"], "rule": r["rule"] == 1.0,
             "verifier": r["verifier"], "timed_out": r["timed_out"]} for r in results]


# where we differ from the reference scorers (eval.py writes this into summary.json)
DEVIATIONS = [
    "MathVista post_check: text/list answers are compared with the extracted answer (VLMEvalKit compares "
    "str(None), so it scores them all wrong).",
    "MathVista extraction without a verifier endpoint: rewards.extract_answer instead of the GPT extractor.",
    "MMMU open: predictions de-duplicated in first-seen order instead of set() order (same set, same verdict).",
    "Images are decoded from the benchmark file as stored (the released pipeline re-encodes them as JPEG).",
]
