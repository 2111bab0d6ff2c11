"""
The per-answer scorers of the reference evaluations, each rewritten from its source: the official MMMU rules,
Skywork's boxed rule, VLMEvalKit's option matching (can_infer) and MathVista's extraction + post_check. Each takes
one response (and its item) and returns a verdict; benchmarks.score_response picks one per benchmark, and
bench_metrics.py turns the verdicts into each benchmark's reported number.
"""

import ast
import json
import random
import re
from pathlib import Path

import rewards

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


def scoring_options(item):
    """The options an answer is matched against: the option columns, else a `choices` list column (MathVista's
    TSV, MathVision: their prompt carries the choices in the question; a boxed option text then maps to its
    letter)."""
    if item.options:
        return dict(item.options)
    raw = item.extra.get("choices")
    if isinstance(raw, str):
        try:
            raw = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"{item.benchmark} {item.id}: choices {raw[:60]!r} is not a list literal") from None
    return {chr(65 + i): str(v) for i, v in enumerate(list(raw or []))}


def mathvista_gold_option(item):
    if item.extra.get("answer_option"):
        return item.extra["answer_option"]
    choices = scoring_options(item)
    hits = [k for k, v in choices.items() if v == str(item.answer)]
    return hits[0] if hits else str(item.answer)


def mathvista_extract(item, response, llm_extract=None):
    """-> (extracted, how). VLMEvalKit's prefetch first: can_infer for multiple choice, the whole answer parsing
    as a number otherwise (VLMEvalKit only counts a correct number as a prefetch, but sends a wrong one to the
    extractor, which returns it unchanged). Then the LLM extractor when one is configured, else rewards.py's
    rule extractor. Everything sees the answer segment (after </think>), as upstream VLMEvalKit's SPLIT_THINK."""
    text = answer_segment(response).strip()
    if item.extra.get("question_type") == "multi_choice":
        opt = can_infer(text, scoring_options(item))
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
            return can_infer(str(extracted), scoring_options(item)) == mathvista_gold_option(item)
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
