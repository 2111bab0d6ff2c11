"""
GRPO reward of Skywork-R1V3 (paper §3.1, eqs. 1-3), computed by score_batch:

    R_format   = 1[response is "<think> ... </think> answer"]                       (eq. 1)
    R_accuracy = 1[R_rule(a_hat, a) = 1  or  R_theta(a_hat, a) = 1]                 (eq. 2)
    R          = eps * R_accuracy + (1 - eps) * R_format,  eps = 0.8                (eq. 3)

a_hat is extract_answer(response). R_rule: multiple-choice letters and a cheap in-process check (canonical
strings, closed-form numbers) first, Math-Verify for the rest in worker processes with a hard time limit.
R_theta: an LLM verifier behind an OpenAI-compatible endpoint, asked only when R_rule says wrong (off by
default). Sections below, in order: eqs. 1-3 and extraction, the in-process check, multiple choice,
Math-Verify and its workers, the verifier, the CLI:
    python rewards.py --jsonl IN --out OUT [--verifier_url=URL] [--timeout_s=5] [--think_mode=False]
each IN line: {"response", "answer", "options"?: {letter: text}, "question"?}; each OUT line is the
input line plus accuracy, format, reward, extracted, reason, timed_out, rule, verifier.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import functools
import http.client
import json
import logging
import math
import multiprocessing as mp
import os
import random
import re
import resource
import signal
import socket
import sys
import threading
import time
import urllib.parse
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, fields
from typing import Literal

import pebble

import configurator


@dataclass
class RewardConfig:
    accuracy_weight: float = 0.8        # eq. 3 epsilon
    think_mode: bool = True             # generation prompt ends with "<think>\n", so the response starts inside it
    timeout_s: float = 5.0              # hard wall-clock limit per Math-Verify item (worker is killed past it)
    num_workers: int = 2                # rule-checker processes; 0 = in-process (no hard timeout, for debugging)
    start_method: Literal["spawn", "forkserver"] = "spawn"   # never fork a process holding CUDA/NCCL state
    worker_memory_mb: int = 2048        # address-space headroom per worker; a sympy blow-up becomes MemoryError
    max_answer_chars: int = 1000        # longer extracted answers are compared as strings only
    verifier_url: str = ""              # R_theta endpoint, off when empty
    verifier_model: str = "Qwen2.5-32B-Instruct"
    verifier_timeout_s: float = 30.0    # per HTTP request, in total (not per socket read)
    verifier_retries: int = 2           # extra attempts after a timeout / connection error / 5xx
    verifier_concurrency: int = 32      # parallel requests; vLLM batches them on the server
    verifier_max_tokens: int = 16
    verifier_api_key: str = ""          # sent as "Authorization: Bearer ..." when set (vllm serve --api-key)


# ----------------------------------------------------------------------------------------------------
# Eqs. 1-3: format reward, batch scoring, answer extraction


THINK_START, THINK_END = "<think>", "</think>"
_END_TOKENS = re.compile(r"<\|im_end\|>|<\|endoftext\|>")


def format_reward(response: str, think_mode: bool = True) -> float:
    # eq. 1: exactly one <think>...</think> with some reasoning, followed by a non-empty answer.
    # think_mode: the prompt already ended with "<think>\n", so the opening tag may be absent; a caller
    # that passes prompt tail + response (tag included) is scored the same.
    text = _END_TOKENS.sub("", response or "").lstrip()
    if text.startswith(THINK_START):
        text = text[len(THINK_START):]
    elif not think_mode:
        return 0.0
    if THINK_START in text or text.count(THINK_END) != 1:
        return 0.0
    thought, answer = text.split(THINK_END)
    return float(bool(thought.strip()) and bool(answer.strip()))



def score_batch(responses: list[str], golds: list[str], options: list[dict | None] | None = None,
                questions: list[str] | None = None, cfg: RewardConfig | None = None) -> list[dict]:
    """One dict per response: accuracy, format, reward (eq. 3), extracted, reason, timed_out, rule, verifier.
    Item-level failures (hangs, crashes, verifier errors) score 0 and are counted in `last_stats`. Raises
    only for caller errors (mismatched lengths, a non-str gold) or when no worker process can start."""
    cfg = cfg or RewardConfig()
    n = len(responses)
    options = options if options is not None else [None] * n
    questions = questions if questions is not None else [""] * n
    if not (len(golds) == n and len(options) == n and len(questions) == n):
        raise ValueError(f"score_batch: {n} responses, {len(golds)} golds, {len(options)} options, "
                         f"{len(questions)} questions")
    for i, gold in enumerate(golds):
        if not isinstance(gold, str):
            raise ValueError(f"score_batch: golds[{i}] is {type(gold).__name__}, expected str")
    t0 = time.monotonic()
    stats = RewardStats(items=n)
    out, hard = [], {}   # hard: (gold, pred) -> indices that need Math-Verify
    for i, (response, gold, opts) in enumerate(zip(responses, golds, options)):
        response = response if isinstance(response, str) else ""
        item = {"accuracy": 0.0, "format": 0.0, "reward": 0.0, "extracted": "", "reason": "",
                "timed_out": False, "rule": 0.0, "verifier": None}
        try:
            item["format"] = format_reward(response, cfg.think_mode)
            item["extracted"] = extract_answer(response)
            verdict, item["reason"] = _fast_rule(_answer_part(response), item["extracted"], gold, opts, cfg.max_answer_chars)
        except Exception as e:   # never let one odd string take down the batch
            verdict, item["reason"] = False, f"error: {type(e).__name__}"
            stats.worker_errors += 1
        if verdict is None:
            key = (gold, item["extracted"])
            if key in _CACHE:
                verdict, item["reason"] = _CACHE[key]
                stats.cache_hits += 1
            else:
                hard.setdefault(key, []).append(i)
        else:
            stats.fast_path += 1
        item["rule"] = float(bool(verdict))
        out.append(item)

    if hard:
        keys = list(hard)
        stats.worker_checks += len(keys)
        for key, (equal, reason, timed_out) in zip(keys, _math_verify_batch(keys, cfg, stats)):
            if timed_out:
                stats.timeouts += len(hard[key])
            elif reason.startswith("error"):
                stats.worker_errors += len(hard[key])
            else:
                if len(_CACHE) >= _CACHE_MAX:
                    _CACHE.clear()
                _CACHE[key] = (equal, reason)
            for i in hard[key]:
                out[i].update(rule=float(equal), reason=reason, timed_out=timed_out)

    if cfg.verifier_url:   # eq. 2 is an OR: only items the rules call wrong need R_theta
        ask = [i for i, item in enumerate(out) if item["rule"] == 0.0 and item["extracted"]]
        if ask:
            client = _get_verifier(cfg)
            verdicts = client.judge([questions[i] or "" for i in ask], [golds[i] for i in ask],
                                    [out[i]["extracted"][:4000] for i in ask])
            stats.verifier_calls += len(ask)
            for i, verdict in zip(ask, verdicts):
                if verdict is None:
                    stats.verifier_fallbacks += 1
                    out[i]["reason"] += "; verifier: no verdict"
                    continue
                out[i]["verifier"] = float(verdict)
                stats.verifier_yes += int(verdict)
                out[i]["reason"] += "; verifier yes" if verdict else "; verifier no"

    eps = cfg.accuracy_weight
    for item in out:
        item["accuracy"] = float(item["rule"] == 1.0 or item["verifier"] == 1.0)   # eq. 2
        item["reward"] = eps * item["accuracy"] + (1.0 - eps) * item["format"]    # eq. 3
    stats.seconds = time.monotonic() - t0
    last_stats.reset()
    last_stats.add(stats)
    total_stats.add(stats)
    return out


def _answer_part(response: str) -> str:
    # only the text after the last </think> is the answer (the whole text when there is none)
    return _END_TOKENS.sub("", response or "").rsplit(THINK_END, 1)[-1].strip()


_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"answer\s+is\s*[:：]?|答案(?:是|为)\s*[:：]?", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"answer\s*[:：]|答案\s*[:：]", re.IGNORECASE)
_BOLD = re.compile(r"\*\*([^*\n]{1,200})\*\*")


def _last_boxed(text: str) -> str | None:
    # one pass matches all braces (O(n) even for 5000 nested ones); \{ \} are literal set braces
    opens = [m.end() - 1 for m in _BOX_OPEN.finditer(text)]
    if not opens:
        return None
    close_of, stack, i = {}, [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            close_of[stack.pop()] = i
        i += 1
    for start in reversed(opens):
        if start in close_of:
            return text[start + 1:close_of[start]]
    return None


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def extract_answer(response: str) -> str:
    """Text after the last </think>; then the last brace-balanced \\boxed{}, "answer is X", "Answer: X",
    "**X**", else the last non-empty line."""
    text = _answer_part(response)
    if not text:
        return ""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    for pattern in (_ANSWER_IS, _ANSWER_COLON):
        last = None
        for last in pattern.finditer(text):
            pass
        if last is not None:
            found = _rest_of_line(text, last.end()).strip().strip("*").strip()
            if found:
                return found.rstrip(".。").strip()
    bold = None
    for bold in _BOLD.finditer(text):
        pass
    if bold is not None and bold.group(1).strip():
        return bold.group(1).strip()
    return text.rsplit("\n", 1)[-1].strip() if "\n" in text else text


# Counters: after each score_batch, `rewards.last_stats` holds that batch's counts (timeouts, worker restarts,
# verifier calls/fallbacks, ...) and `rewards.total_stats` the running totals. Log last_stats.as_dict().
@dataclass
class RewardStats:
    items: int = 0
    fast_path: int = 0            # decided in-process (letters, canonical strings, numbers)
    worker_checks: int = 0        # distinct (gold, answer) pairs sent to Math-Verify workers
    cache_hits: int = 0           # pairs answered from the Math-Verify result cache
    timeouts: int = 0             # items scored 0 because the checker ran out of time
    worker_errors: int = 0        # items scored 0 because the checker crashed
    worker_restarts: int = 0
    verifier_calls: int = 0
    verifier_yes: int = 0
    verifier_fallbacks: int = 0   # verifier asked but gave no verdict (down, timeout, garbage): rule-only
    seconds: float = 0.0

    def reset(self):
        for f in fields(self):
            setattr(self, f.name, f.default)

    def add(self, other: "RewardStats"):
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return asdict(self)


last_stats = RewardStats()   # the latest score_batch call (updated in place, so `from rewards import` works)
total_stats = RewardStats()  # since import

# "I can't see the image" in the thinking: grpo.py's response/blind_phrase_rate and eval.py's Table 5 split
# both use this one list (they had drifted apart: 19 phrases in grpo.py, 37 in eval.py). Matched as lowercase
# substrings with curly apostrophes straightened; the Chinese forms cover 图 / 图片 / 图像 by being prefixes.
UNSEEN_IMAGE_PHRASES = (
    "can't see the image", "cannot see the image", "can not see the image", "unable to see the image",
    "not able to see the image", "can't see the picture", "cannot see the picture", "can't see the figure",
    "cannot see the figure", "can't see the diagram", "cannot see the diagram", "can't see images",
    "cannot see images", "can't see any image", "cannot see any image", "don't see the image",
    "do not see the image", "can't view the image", "cannot view the image", "unable to view the image",
    "can't access the image", "cannot access the image", "don't have access to the image",
    "do not have access to the image", "no image is provided", "no image provided", "image is not provided",
    "image was not provided", "image isn't provided", "image is not available", "no image is attached",
    "without the image", "without seeing the image", "can't actually see", "cannot actually see",
    "看不到图", "看不见图", "无法看到图", "无法看见图", "无法查看图", "没有看到图", "看不到这张图", "无法看到这张图",
)


def _plain_lower(s: str) -> str:
    return s.replace("\u2019", "'").replace("\u2018", "'").lower()


def claims_unseen_image(response: str, phrases=UNSEEN_IMAGE_PHRASES) -> bool:
    """True when the thinking (the text before the first </think>, the whole text when there is none) says
    the model cannot see the image."""
    thinking = _plain_lower(response.split(THINK_END, 1)[0])
    return any(_plain_lower(p) in thinking for p in phrases)


# ----------------------------------------------------------------------------------------------------
# Canonical strings and closed-form numbers (the in-process fast path). Why not Math-Verify alone:
# - speed: one 1,024-response episode takes 8.7-21 s with Math-Verify alone (cache and de-duplication on;
#   `bench/bench_rewards.py --math_verify_only`, 2 shared cores) against 0.3-1.5 s with this path; target 2 s;
# - verdicts: Math-Verify alone gets 6 of the 88 cases in tests/test_rewards.py wrong: 4 cm² vs 4\,\text{cm}^2,
#   108\mathrm \pi vs 108\pi, 4\sqrt{3} vs √48, \text{equal} vs Equal (canonical strings), the blanks
#   "9\n19\n5\n9" vs 9, 19, 5, 9 (_parts) and the statements "1.3.4.5." vs 1, 3, 4, 5 (_STATEMENTS);
# - _same_equation: without it two equation cases run past the workers' 1 s Math-Verify alarm (scored 0).

_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "÷": "\\div ", "·": "\\cdot ", "π": "\\pi ",
            "√": "\\sqrt ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "＜": "<", "＞": ">", "，": ",",
            "：": ":", "；": ";", "（": "(", "）": ")", "。": ".", "²": "^2", "³": "^3", "＝": "=", "％": "%"}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_UNWRAP = re.compile(r"\\(?:boxed|text|textbf|textrm|textit|mathrm|mathbf|mathit|mbox|number|ce|unit|"
                     r"operatorname|boldsymbol)\s*\{([^{}]*)\}")
_QUANTITY = re.compile(r"\\(?:quantity|qty|SI)\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_DEGREE = re.compile(r"\{\}\s*\^\s*\\circ|\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|\$?textdegree\$?|°|℃")
_DELIMS = re.compile(r"\$|\\\(|\\\)|\\\[|\\\]|\\displaystyle|\\(?:left|right)(?![a-zA-Z])\.?")
_SPACES = re.compile(r"\\[,;:! ]|\\q?quad|~")
_COMMANDS = [(re.compile(r"\\[dt]frac"), r"\\frac"), (re.compile(r"\\leqslant|\\leq"), r"\\le"),
             (re.compile(r"\\geqslant|\\geq"), r"\\ge"), (re.compile(r"\\neq"), r"\\ne"),
             (re.compile(r"\\lt\b"), "<"), (re.compile(r"\\gt\b"), ">"), (re.compile(r"\\%"), "%"),
             (re.compile(r"\\\$"), ""), (re.compile(r"\\(?:mathrm|text|rm)\b\s*"), "")]


_WORDS = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")   # a real word, not a \command or a product "ab"


def _canon(s: str) -> str:
    # golds and answers repeat across a GRPO group; whole answers are long and do not, so skip the cache
    return _canon_cached(s) if len(s) <= 300 else _canonical(s)


@functools.lru_cache(maxsize=16384)
def _canon_cached(s: str) -> str:
    return _canonical(s)


def _canonical(s: str) -> str:
    # a string both sides can be compared on: no delimiters, wrappers, spacing, degree signs or case
    s = _INVISIBLE.sub("", s)
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    s = _QUANTITY.sub(r"\1 \2", s)
    for _ in range(3):   # nested wrappers like \text{\textbf{B}}
        s = _UNWRAP.sub(r"\1", s)
    s = _DEGREE.sub("", s)
    s = _DELIMS.sub("", s)
    for pattern, repl in _COMMANDS:
        s = pattern.sub(repl, s)
    s = _SPACES.sub(" ", s).replace("{}", "")
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"\s*([^\w\s\\])\s*", r"\1", s)        # spaces only survive between words
    s = re.sub(r"\s+\\", r"\\", s)                     # ... and after a command before a letter: "\pi r"
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?![a-zA-Z])", r"\1", s)
    s = re.sub(r"([\^_])\{(\w)\}", r"\1\2", s)         # x^{2} -> x^2
    return s.strip().rstrip(".,;:").strip().lower()


_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|\\(?:frac|sqrt|pi|times|cdot|div|sin|cos|tan|ln)(?![a-z])|"
                    r"[a-hj-z](?:_(?:\{\w+\}|\w))?|[-+*/^(){}\[\]])")
_FUNCTIONS = {"\\sin": math.sin, "\\cos": math.cos, "\\tan": math.tan, "\\ln": math.log}
_ATOM_START = ("(", "{", "\\frac", "\\sqrt", "\\pi", "\\sin", "\\cos", "\\tan", "\\ln")
_UNITS = re.compile(r"\s*(?:(?:k|c|d|m)?m(?:\^?[23])?|km/h|m/s|kg|mg|ml|min|hours?|minutes?|seconds?|days?|"
                    r"years?|meters?|metres?|centimeters?|kilometers?|(?:square|cubic) (?:meters?|centimeters?)|"
                    r"degrees?|yuan|dollars?|people|persons?|students?|sets?|units?|pieces?|times|"
                    r"个|元|米|厘米|千米|人|度|平方米|平方厘米)$")
_MIXED = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_RELATION = re.compile(r"<|>|\\le|\\ge|\\ne|\\in|\\cup|\\cap|\\subset|\\pm|\\mp|!|\||\\\{|\\\}|:|\band\b")
_STATEMENTS = re.compile(r"^\d+(?:[.,、 ]\d+)+$")   # "1.3.4" = statements 1, 3 and 4 are true
_PROBE_RNG = random.Random(1234)
_PROBES = [[_PROBE_RNG.uniform(0.5, 2.5) for _ in range(64)] for _ in range(4)]   # 4 points, up to 64 variables


def _compile(s: str):
    """Closed-form expressions (numbers, + - * / ^, \\frac, \\sqrt, \\pi, sin/cos/tan/ln(...), single-letter
    variables) -> (f(env) -> float, variables), or None for anything else. Depth- and size-bounded."""
    if not s or len(s) > 200:
        return None
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    mixed = _MIXED.match(s)   # K12 mixed numbers: 1\frac{1}{4} = 1.25, not 1 * 1/4
    if mixed and int(mixed.group(4)):
        value = int(mixed.group(2)) + int(mixed.group(3)) / int(mixed.group(4))
        return (lambda env, v=-value if mixed.group(1) else value: v), frozenset()
    tokens, pos = [], 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            if s[pos:].strip() == "":
                break
            return None
        is_number = m.group(1)[0].isdigit() or m.group(1)[0] == "."
        if is_number and tokens and (tokens[-1][0].isdigit() or tokens[-1][0] == "."):
            return None   # "9 19" (two blanks) or "1.3.4" (statement numbers) are not one number
        tokens.append(m.group(1))
        pos = m.end()
    variables = frozenset(t for t in tokens if t[0].isalpha())
    i = 0

    def peek():
        return tokens[i] if i < len(tokens) else None

    def take(expected=None):
        nonlocal i
        tok = peek()
        if tok is None or (expected is not None and tok != expected):
            raise ValueError
        i += 1
        return tok

    def expr(depth):
        if depth > 40:
            raise ValueError
        f = term(depth)
        while peek() in ("+", "-"):
            op, g = take(), term(depth)
            f = (lambda e, f=f, g=g: f(e) + g(e)) if op == "+" else (lambda e, f=f, g=g: f(e) - g(e))
        return f

    def term(depth):
        f = unary(depth)
        while True:
            tok = peek()
            if tok in ("*", "\\times", "\\cdot"):
                take()
                g = unary(depth)
                f = lambda e, f=f, g=g: f(e) * g(e)
            elif tok in ("/", "\\div"):
                take()
                g = unary(depth)
                f = lambda e, f=f, g=g: f(e) / g(e)
            elif tok is not None and (tok[0].isalnum() or tok[0] == "." or tok in _ATOM_START):
                g = power(depth)   # implicit product: 2\sqrt{3}, 3\pi, ab
                f = lambda e, f=f, g=g: f(e) * g(e)
            else:
                return f

    def unary(depth):
        if peek() in ("-", "+"):
            f = unary(depth + 1) if take() == "-" else None
            return (lambda e, f=f: -f(e)) if f else unary(depth + 1)
        return power(depth)

    def power(depth):
        base = atom(depth)
        if peek() != "^":
            return base
        take()
        exponent = unary(depth + 1) if peek() in ("-", "+") else power(depth + 1)

        def f(e, base=base, exponent=exponent):
            b, x = base(e), exponent(e)
            if abs(x) > 1e3:   # 5^{5^{5}}: no point building it; Math-Verify (with a timeout) may try
                raise OverflowError
            return math.pow(b, x)
        return f

    def group(depth):
        if peek() == "{":
            take()
            f = expr(depth + 1)
            take("}")
            return f
        return atom(depth + 1)   # \frac12, \sqrt3

    def atom(depth):
        tok = take()
        if tok[0].isdigit() or tok[0] == ".":
            return lambda e, v=float(tok): v
        if tok[0].isalpha():
            return lambda e, name=tok: e[name]
        if tok == "\\pi":
            return lambda e: math.pi
        if tok in ("(", "{", "["):
            f = expr(depth + 1)
            take({"(": ")", "{": "}", "[": "]"}[tok])
            return f
        if tok == "\\frac":
            numerator = group(depth)
            denominator = group(depth)
            return lambda e: numerator(e) / denominator(e)
        if tok == "\\sqrt":
            root = None
            if peek() == "[":
                take()
                root = expr(depth + 1)
                take("]")
            radicand = group(depth)
            return lambda e: math.pow(radicand(e), 1.0 / root(e)) if root else math.sqrt(radicand(e))
        if tok in _FUNCTIONS and peek() in ("(", "{"):   # no bare "\sin 2x": its scope is ambiguous
            fn, arg = _FUNCTIONS[tok], atom(depth + 1)
            return lambda e: fn(arg(e))
        raise ValueError

    try:
        f = expr(0)
    except (ValueError, RecursionError):
        return None
    return (f, variables) if i == len(tokens) else None


@functools.lru_cache(maxsize=16384)
def _readings(canon: str) -> tuple:
    # every value an answer may stand for: "40m" -> 40*m or 40 (metres), "75%" -> 0.75 or 75 (both
    # conventions are in use). Words make it prose, not algebra: no reading.
    percent = canon.endswith("%")
    core = canon.rstrip("%")
    cores = [core]
    unit = _UNITS.search(core)
    if unit and unit.start() > 0:
        cores.append(core[:unit.start()])
    readings = []
    for k, text in enumerate(cores):
        compiled = None if _WORDS.search(text) else _compile(text)
        if compiled is None or (k > 0 and compiled[1]):
            continue   # "2a cm": stripping a unit off an expression is too ambiguous
        if percent and not compiled[1]:
            f = compiled[0]
            readings.append(((lambda e, f=f: f(e) / 100.0), frozenset()))
        readings.append(compiled)
    return tuple(readings)


def _close(a: float, b: float) -> bool:
    # float noise, or equal to 6 decimals like Math-Verify (1/3 = 0.333333, but 1000000 != 1000001)
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b)) or round(a, 6) == round(b, 6)


def _same_value(gold, pred) -> bool | None:
    # equal at every probe point (constants: one point) -> True; clearly different at one -> False
    (f, fv), (g, gv) = gold, pred
    names = sorted(fv | gv)
    if len(names) > 64:
        return None
    agree = 0
    for point in _PROBES[:1] if not names else _PROBES:
        env = dict(zip(names, point))
        try:
            a, b = f(env), g(env)
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            continue   # outside the domain at this point
        if isinstance(a, complex) or isinstance(b, complex) or not (math.isfinite(a) and math.isfinite(b)):
            continue
        if not _close(a, b):
            return False
        agree += 1
    return agree >= (2 if names else 1) or None


def _split_top(s: str) -> tuple[str, list[str]]:
    # "(1,2)" -> ("()", ["1", "2"]); "1,2" -> ("", ["1", "2"]); "(1,2)\cup(3,4)" keeps its brackets
    def depth_zero_at(text):
        depth, zeros = 0, []
        for k, c in enumerate(text):
            depth += (c in "([{") - (c in ")]}")
            if depth == 0:
                zeros.append(k)
        return zeros
    brackets = ""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and depth_zero_at(s)[:1] == [len(s) - 1]:
        brackets, s = s[0] + s[-1], s[1:-1]
    parts, depth, start = [], 0, 0
    for k, c in enumerate(s):
        depth += (c in "([{") - (c in ")]}")
        if c in ",;" and depth == 0:
            parts.append(s[start:k])
            start = k + 1
    return brackets, parts + [s[start:]]


def _parts(s: str) -> tuple[str, list[str]]:
    if not (s[:1] in "([" and s[-1:] in ")]") and " or " in s:   # "6 or 2 or 10": a set of answers
        return "", s.split(" or ")
    brackets, parts = _split_top(s)
    if len(parts) == 1 and " " in s and not brackets:   # "9 19 5 9": one value per blank (newlines in the gold)
        pieces = s.split(" ")
        if all(_readings(p) and not any(r[1] for r in _readings(p)) for p in pieces):
            return brackets, pieces
    return brackets, parts


def _same_equation(gl: str, gr: str, pl: str, pr: str) -> bool | None:
    # "x^2/8 + y^2/4 = 1" vs "x^2 + 2y^2 = 8": lhs - rhs agree up to a constant factor -> same equation.
    # Needed: without it this table case and "AC=BD" vs "BD=AC" go to Math-Verify, which runs past the
    # workers' 1 s SIGALRM on 2 shared cores (scored 0: tests/test_rewards.py, through the workers)
    g, p = _compile(f"({gl})-({gr})"), _compile(f"({pl})-({pr})")
    if g is None or p is None or not g[1] or len(g[1] | p[1]) > 64:
        return None
    if g[1] != p[1]:
        return False   # AC=BD vs OE=4EF: equations in different unknowns (Math-Verify: False too)
    names, pairs = sorted(g[1]), []
    for point in _PROBES:
        env = dict(zip(names, point))
        try:
            pairs.append((g[0](env), p[0](env)))
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            continue
    if len(pairs) < 2:
        return None
    g_identity, p_identity = (all(abs(v[k]) < 1e-9 for v in pairs) for k in (0, 1))
    if g_identity != p_identity:
        return False   # a^2-b^2=(a+b)(a-b) holds everywhere, a^2-b^5=(a+b)(a-b) does not
    ratios = [a / b for a, b in pairs if abs(a) > 1e-9 and abs(b) > 1e-9]
    if len(ratios) >= 2 and all(_close(r, ratios[0]) for r in ratios):
        return True
    return None   # different zero sets are not proven by a non-constant ratio ((x-1)^2=0 vs x=1)


@functools.lru_cache(maxsize=16384)
def _numeric_verdict(gold: str, pred: str) -> bool | None:
    """Canonical gold vs canonical answer as numbers/expressions: True, False, or None (undecided: ask
    Math-Verify). Handles "x=2" vs "2", units, percent, tuples/lists elementwise."""
    gold, pred = [x.replace(",", "") if _THOUSANDS.match(x) else x for x in (gold, pred)]   # 1,500 = 1500
    if re.fullmatch(r"\d+(?:\.\d+){2,}", gold) and _STATEMENTS.match(pred):
        return re.findall(r"\d+", gold) == re.findall(r"\d+", pred)
    if gold.count(":") >= 1 and pred.count(":") == gold.count(":"):   # ratios 1:\sqrt{3}, or times 8:40
        g, p = [_readings(x) for x in gold.split(":")], [_readings(x) for x in pred.split(":")]
        if all(len(r) == 1 and not r[0][1] for r in g + p):
            try:
                gv, pv = [r[0][0]({}) for r in g], [r[0][0]({}) for r in p]
            except (ValueError, ZeroDivisionError, OverflowError, TypeError):
                return None
            if all(_close(a, b) for a, b in zip(gv, pv)):
                return True
            proportional = all(_close(a * pv[0], b * gv[0]) for a, b in zip(gv, pv))
            return None if proportional else False   # 2:3 vs 4:6: a ratio or a time? Math-Verify decides
        return None
    if gold.count("=") == 1 and pred.count("=") == 1:
        (gl, gr), (pl, pr) = gold.split("="), pred.split("=")
        if gl != pl:
            return _same_equation(gl, gr, pl, pr)
        gold, pred = gr, pr
    elif gold.count("=") == 1 and re.fullmatch(r"[a-z](?:_\w|\([a-z]\))?", gold.split("=")[0]) and "=" not in pred:
        gold = gold.split("=")[1]   # assignments: "x=2", "f(x)=2x" vs "2x"
    elif pred.count("=") == 1 and "=" not in gold:
        pred = pred.split("=")[1]   # like Math-Verify: gold 101 vs "a+2z=101" is right, "x=2" vs 2 too
    elif gold.count("=") == 1 and "=" not in pred and not _RELATION.search(pred) and _readings(pred):
        return False                # an equation (x^2+y^2=1) is neither 3 nor x^2+y^2-1
    elif "=" in gold or "=" in pred:
        return None
    if _RELATION.search(gold) or _RELATION.search(pred):
        return None
    (gb, gparts), (pb, pparts) = _parts(gold), _parts(pred)
    if len(gparts) == 1 and len(pparts) == 1:
        greads, preads = _readings(gold), _readings(pred)
        if not greads or not preads:
            return None
        verdicts = [_same_value(a, b) for a in greads for b in preads]
        return True if True in verdicts else (False if all(v is False for v in verdicts) else None)
    greads, preads = [_readings(p) for p in gparts], [_readings(p) for p in pparts]
    if not all(greads) or not all(preads) or any(len(r) > 1 for r in greads + preads):
        return None
    if len(gparts) != len(pparts):
        return False   # gold "1, 2" vs "1": every part is a plain value, so the answers differ
    if gb and pb and gb != pb:
        return False   # [1,2] vs (1,2): closed vs open (Math-Verify agrees)
    if gb != pb and "()" not in (gb, pb):
        return None    # "1,2" vs "[1,2]": a set vs an interval; Math-Verify decides
    if gb != pb:       # "1,2" vs "(1,2)": Math-Verify calls these equal; in order -> equal here too
        same = [_same_value(a[0], b[0]) for a, b in zip(greads, preads)]
        return True if all(same) else None
    if not gb:         # a bare list is a set of answers: order-free
        if any(r[0][1] for r in greads + preads):
            return None
        try:
            gvals = sorted(r[0][0]({}) for r in greads)
            pvals = sorted(r[0][0]({}) for r in preads)
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            return None
        return all(_close(a, b) for a, b in zip(gvals, pvals))
    verdicts = [_same_value(a[0], b[0]) for a, b in zip(greads, preads)]
    return False if False in verdicts else (True if all(verdicts) else None)


# ----------------------------------------------------------------------------------------------------
# Multiple choice: our own regexes (Math-Verify's StringExtractionConfig misses "(B)", "b", ...)

# Every blank before the letter belongs to exactly one quantifier: adjacent \s* runs ("answer\s*(?:is)?\s*...")
# backtrack in O(N^k) on N blanks not followed by a letter (1,000 newlines after "answer" took minutes, in the
# caller, before any worker timeout). Each optional piece carries its own trailing blanks instead: same language.
_LETTER_ONLY = re.compile(r"^(?:option|choice)?\s*(?:[(\[]\s*)?([A-Za-z])\s*(?:[)\]]\s*)?[.:：、．)]?$", re.IGNORECASE)
_LETTER_PAREN = re.compile(r"^[(\[]\s*([A-Za-z])\s*[)\]]")
_LETTER_DOT = re.compile(r"^(?:option\s*|choice\s*)?([A-Z])\s*[.:：、．)](?:\s|$)")
_LETTER_PHRASE = re.compile(r"(?:answer|option|choice)\s*(?:(?:is|:|：)\s*)?(?:option\s*)?(?:\*[*\s]*)?(?:[(\[]\s*)?"
                            r"([A-Za-z])\s*[)\]]?(?![A-Za-z0-9])", re.IGNORECASE)
_LETTER_END = re.compile(r"\s*(?:[.,;:!)\]*]|$)")
_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm)\s*\{([^{}]*)\}")


def _strip_wrappers(s: str) -> str:
    s = _INVISIBLE.sub("", s)
    for _ in range(2):
        s = _WRAPPER.sub(r"\1", s)
    return s.replace("$", "").replace("*", "").strip()


def _option_letters(options: dict | None) -> dict:
    # {"(a)": "3"} -> {"A": "3"}
    out = {}
    for key, text in (options or {}).items():
        letter = re.sub(r"[^A-Za-z]", "", str(key)).upper()
        if len(letter) == 1:
            out[letter] = "" if text is None else str(text)
    return out


def _gold_letter(gold: str, options: dict) -> str | None:
    s = _strip_wrappers(gold).strip("().[] ").rstrip(".")
    if re.fullmatch(r"[A-Z]", s) or (options and re.fullmatch(r"[A-Za-z]", s) and s.upper() in options):
        return s.upper()
    if options:   # gold given as option text
        matches = [k for k, text in options.items() if text and _canon(text) == _canon(gold)]
        if len(matches) == 1:
            return matches[0]
    return None


def _pred_letter(answer_text: str, extracted: str, options: dict) -> str | None:
    e = _strip_wrappers(extracted)
    for pattern in (_LETTER_ONLY, _LETTER_PAREN, _LETTER_DOT):
        m = pattern.match(e)
        if m:
            return m.group(1).upper()
    for text in (e, answer_text[-2000:]):
        last = None
        for m in _LETTER_PHRASE.finditer(text):
            # a lowercase letter must end the phrase ("answer is b."), else "answer is a number" reads as A
            if m.group(1).isupper() or _LETTER_END.match(text, m.end()):   # no slice: O(1) per match
                last = m
        if last is not None:
            return last.group(1).upper()
    if options:   # option text written out instead of its letter
        canon = _canon(extracted)
        matches = [k for k, text in options.items()
                   if text and (_canon(text) == canon or _numeric_verdict(_canon(text), canon) is True)]
        if len(matches) == 1:
            return matches[0]
    return None


_TEXT = re.compile(r"^[a-z]+(?: [a-z]+)*$")
_NUMBER_HINT = re.compile(r"\d|\\pi|\\infty")


def _fast_rule(answer_text: str, extracted: str, gold: str, options: dict | None, max_chars: int):
    """In-process verdict: (True|False, reason), or (None, reason) when Math-Verify must decide."""
    if not extracted and not answer_text:
        return False, "empty answer"
    options = _option_letters(options)
    gold_letter = _gold_letter(gold, options)
    if gold_letter is not None:
        letter = _pred_letter(answer_text, extracted, options)
        if letter is None:
            return False, "no option letter"
        return letter == gold_letter, f"letter {letter} vs {gold_letter}"
    gold_canon = _canon(gold) if len(gold) <= 10 * max_chars else gold
    if not re.search(r"\w", gold_canon):   # "<", "=": a symbol to fill in, nothing to evaluate
        return _canon(extracted) == gold_canon and bool(gold_canon), "symbol"
    if len(extracted) <= max_chars and _canon(extracted) == gold_canon and gold_canon:
        return True, "exact"
    if len(answer_text) <= 10 * max_chars and _canon(answer_text) == gold_canon and gold_canon:
        return True, "exact (whole answer)"
    if len(extracted) > max_chars:
        return False, "answer too long"
    if not extracted:
        return False, "empty answer"
    pred_canon = _canon(extracted)
    verdict = _numeric_verdict(gold_canon, pred_canon)
    if verdict is not None:
        return verdict, "numeric" if verdict else "numeric mismatch"
    for number, other in ((gold_canon, pred_canon), (pred_canon, gold_canon)):
        if _readings(number) and not any(r[1] for r in _readings(number)) and not _NUMBER_HINT.search(other):
            return False, "number vs no number"   # 4 vs "BD=CE": Math-Verify has no number to find in it
    if any(_TEXT.match(s) and _WORDS.search(s) for s in (gold_canon, pred_canon)):
        return False, "text mismatch"   # "yes" vs "no" or vs 0.49: words are not algebra (Math-Verify reads y*e*s)
    return None, "math-verify"


# ----------------------------------------------------------------------------------------------------
# Math-Verify (LaTeX/symbolic equivalence) in worker processes with a hard wall-clock limit per item: a hung
# sympy call holds the GIL, so Math-Verify's own SIGALRM cannot stop it; pebble kills the worker, the item
# scores 0 and is counted, and a replacement starts. Workers use the "spawn" context (safe under torchrun), so
# a script that scores must guard its entry point with `if __name__ == "__main__":` (spawn re-imports the main
# module in each worker). start_rule_workers(cfg) at startup saves the first episode the wait; shutdown_pool()
# stops them (also at exit).

def _math_verify_text(s: str) -> str:
    # Math-Verify only parses a gold inside a LaTeX environment ("\dfrac{9}{7}" -> [], "$\dfrac{9}{7}$" ok)
    s = _INVISIBLE.sub("", s)
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    s = _QUANTITY.sub(r"\1", s)
    s = re.sub(r"\\number\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\$|\\\(|\\\)|\\\[|\\\]", " ", s).strip().rstrip(".;。").strip()
    return f"${s}$"


def _math_verify(gold: str, pred: str, timeout_s: int | None) -> tuple[bool, str, bool]:
    """(equal, reason, timed_out). timeout_s: Math-Verify's own SIGALRM limit (main thread only) or None."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    pred_config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    t0 = time.monotonic()
    # prose ("... Thus, it is 300.", "$$2.2$$ (not unique)"): let Math-Verify find the math in it; wrapped
    # whole, the words would parse as products of symbols (slow, and never equal)
    golds = [parse(gold if _WORDS.search(gold) else _math_verify_text(gold), parsing_timeout=timeout_s)]
    preds = [parse(pred if _WORDS.search(pred) else _math_verify_text(pred), pred_config, parsing_timeout=timeout_s)]
    golds, preds = [g for g in golds if g], [p for p in preds if p]
    if not golds or not preds:
        timed_out = timeout_s is not None and time.monotonic() - t0 >= timeout_s
        return False, "math-verify timeout" if timed_out else "math-verify: unparsable", timed_out
    for g in golds:
        for p in preds:
            t1 = time.monotonic()
            if verify(g, p, timeout_seconds=timeout_s):
                return True, "math-verify", False
            if timeout_s is not None and time.monotonic() - t1 >= timeout_s:
                return False, "math-verify timeout", True
    return False, "math-verify: not equal", False


def _limit_address_space(extra_bytes: int):
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (current + extra_bytes, hard))
    except (OSError, ValueError):
        pass


def _worker_init(memory_bytes: int):
    # Runs once in each worker, in its main thread (so Math-Verify's own SIGALRM limits work there too).
    # pebble's worker installs a Python-level SIGTERM handler (pebble 5.2 pool/process.py: worker_process);
    # a hung sympy call holds the GIL, so that handler never runs and pebble waits term_timeout = 3 s before
    # SIGKILL. The default action ends the worker at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for gold, pred in (("$x>1$", "$1<x$"), ("$x^2+y^2=1$", "$y^2=1-x^2$"), ("$[1,2)$", "$\\{1,2\\}$")):
        _math_verify(gold, pred, 2)                # import + warm up sympy before the first deadline starts
    _limit_address_space(memory_bytes)


def _math_verify_in_worker(gold: str, pred: str, timeout_s: int | None) -> tuple[bool, str, bool]:
    try:
        return _math_verify(gold, pred, timeout_s)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:   # Math-Verify's TimeoutException is a BaseException
        return False, f"error: {type(e).__name__}", False


_POOL: pebble.ProcessPool | None = None
_POOL_KEY = None
_POOL_LOCK = threading.Lock()
_CACHE: dict = {}   # (gold, pred) -> (equal, reason); GRPO groups repeat answers a lot
_CACHE_MAX = 50_000


def _get_pool(cfg: RewardConfig, stats: RewardStats | None = None) -> pebble.ProcessPool:
    # pebble.ProcessPool kills a worker whose item runs past schedule(timeout=) (counted from the moment a
    # worker picks it up) and starts a replacement; a worker that dies while idle breaks the whole pool
    # (pebble: "All workers expired"), so a pool that is no longer active is replaced here.
    global _POOL, _POOL_KEY
    key = (cfg.num_workers, cfg.start_method, cfg.worker_memory_mb)
    with _POOL_LOCK:
        if _POOL is not None and (_POOL_KEY != key or not _POOL.active):
            if not _POOL.active and stats is not None:
                stats.worker_restarts += 1
            _POOL.stop()
            _POOL.join(timeout=5)
            _POOL = None
        if _POOL is None:
            _POOL = pebble.ProcessPool(max_workers=cfg.num_workers, initializer=_worker_init,
                                       initargs=(cfg.worker_memory_mb * 2**20,),
                                       context=mp.get_context(cfg.start_method))
            _POOL_KEY = key
        return _POOL


def _math_verify_batch(keys: list[tuple[str, str]], cfg: RewardConfig, stats: RewardStats) -> list:
    """[(gold, pred)] -> [(equal, reason, timed_out)]: Math-Verify in the workers, each item hard-limited to
    cfg.timeout_s (num_workers=0: in this process, no hard limit, for debugging). Raises only when workers
    cannot start (e.g. an unguarded main script under spawn)."""
    if cfg.num_workers <= 0:
        on_main = threading.current_thread() is threading.main_thread()   # SIGALRM works on the main thread only
        return [_math_verify_in_worker(gold, pred, max(1, int(cfg.timeout_s)) if on_main else None)
                for gold, pred in keys]
    inner_timeout_s = max(1, int(cfg.timeout_s // 4))   # Math-Verify's SIGALRM first; the kill is the backstop
    results: list = [None] * len(keys)
    for _ in range(3):   # a pool broken by a worker that died between items is replaced and the items resent
        todo = [j for j, r in enumerate(results) if r is None]
        if not todo:
            break
        pool = _get_pool(cfg, stats)
        futures = {j: pool.schedule(_math_verify_in_worker, args=(*keys[j], inner_timeout_s), timeout=cfg.timeout_s)
                   for j in todo}
        budget_s = 120.0 + cfg.timeout_s * len(todo)   # worker start (spawn + imports), then the items
        if concurrent.futures.wait(futures.values(), timeout=budget_s).not_done:
            shutdown_pool()
            raise RuntimeError(f"rewards: no rule-checker result within {budget_s:.0f} s")
        for j, future in futures.items():
            error = future.exception()
            if error is None:
                results[j] = future.result()
            elif isinstance(error, TimeoutError):       # pebble killed the worker and starts another
                results[j] = (False, "timeout", True)
                stats.worker_restarts += 1
            elif isinstance(error, pebble.ProcessExpired):   # segfault, OOM killer: the item probably did it
                results[j] = (False, "error: worker died", False)
                stats.worker_restarts += 1
            elif not isinstance(error, BrokenProcessPool):
                results[j] = (False, f"error: {type(error).__name__}", False)
    if None in results:
        shutdown_pool()
        raise RuntimeError("rewards: rule-checker workers keep dying before they start; is the main script "
                           "guarded by `if __name__ == '__main__':` (needed by the spawn context)?")
    return results


def start_rule_workers(cfg: RewardConfig | None = None, timeout_s: float = 120.0) -> bool:
    """Start the rule-checker workers now and wait until they answer (e.g. while the policy loads), so the
    first episode does not pay for it. True when they are up."""
    cfg = cfg or RewardConfig()
    if cfg.num_workers <= 0:
        return True
    pool = _get_pool(cfg)
    futures = [pool.schedule(os.getpid) for _ in range(cfg.num_workers)]
    done = concurrent.futures.wait(futures, timeout=timeout_s).done
    return len(done) == len(futures) and all(f.exception() is None for f in done)


def shutdown_pool():
    """Stop the rule-checker workers (also runs at exit). The next score_batch starts new ones."""
    global _POOL, _POOL_KEY
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.stop()
            _POOL.join(timeout=5)
        _POOL, _POOL_KEY = None, None


atexit.register(shutdown_pool)


def rule_accuracy(extracted_or_response: str, gold: str, options: dict | None = None) -> bool:
    """R_rule for one item, in-process: no worker and no hard timeout (Math-Verify's own SIGALRM limits
    apply on the main thread). Takes a full response or an already extracted answer."""
    text = extracted_or_response or ""
    verdict, _ = _fast_rule(_answer_part(text), extract_answer(text), gold, options, RewardConfig.max_answer_chars)
    if verdict is not None:
        return verdict
    on_main = threading.current_thread() is threading.main_thread()
    try:
        return _math_verify(gold, extract_answer(text), 5 if on_main else None)[0]
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------------
# LLM verifier R_theta (OpenAI-compatible /v1/chat/completions). The paper uses Qwen2.5-32B-Instruct:
#     vllm serve Qwen/Qwen2.5-32B-Instruct --served-model-name Qwen2.5-32B-Instruct \
#         --tensor-parallel-size 4 --max-model-len 8192 --port 8000
# and verifier_url="http://HOST:8000". If it is unreachable we warn once and score rule-only.

VERIFIER_PROMPT = """You are a strict grader. Decide whether a model's final answer is equivalent to the reference answer.
Rules:
- Compare only the final answers. Do not solve the problem yourself and do not judge any reasoning.
- Equivalent means the same value or meaning. Ignore formatting (LaTeX, \\boxed, $...$), equivalent forms
  (1/2 = 0.5 = 50%), and a missing unit when the number is the same.
- If the reference answer has several parts or blanks, every part must match.
- For a multiple-choice question the model must pick the same option (letter or option text).
- An empty, truncated, or hedging answer (several different answers) is not equivalent.

Question: {question}
Reference answer: {gold}
Model's answer: {answer}

Reply with exactly one word: Yes or No."""


def _parse_verdict(content: str) -> bool | None:
    text = re.sub(r"<think>.*?</think>", "", content or "", flags=re.DOTALL).strip().lower()
    m = re.match(r"[\s*\"'`\[(]*(yes|no)\b", text)
    if m:
        return m.group(1) == "yes"
    words = set(re.findall(r"\b(yes|no)\b", text))
    return (words.pop() == "yes") if len(words) == 1 else None


def post_json(url: str, payload: dict, timeout_s: float, api_key: str = "") -> tuple[int, bytes]:
    """POST payload as JSON -> (status, body) within a TOTAL deadline of timeout_s (connect, headers and body):
    a socket timeout bounds each read only, so a server trickling a byte a second could hold the call forever.
    At the deadline a timer shuts the socket down, which wakes the blocked read, and TimeoutError is raised.
    http.client, not urllib: it gives us the socket to shut; it does not read HTTP(S)_PROXY (the verifier is an
    internal endpoint). Used by the verifier below and by eval.py's MathVista extractor."""
    parts = urllib.parse.urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout_s)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    expired = threading.Event()

    def expire():
        expired.set()
        try:
            if conn.sock is not None:
                conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=json.dumps(payload).encode(),
                     headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as e:
        if expired.is_set() or isinstance(e, TimeoutError):
            raise TimeoutError("timed out") from None
        raise
    finally:
        timer.cancel()
        conn.close()
    if expired.is_set():   # the shutdown landed after the last byte: still past the deadline
        raise TimeoutError("timed out")
    return response.status, data


class VerifierClient:
    """judge(questions, golds, answers) -> [True | False | None]; None = no verdict (server down, timeout,
    HTTP error, unparsable reply). Requests are concurrent (the vLLM server batches them)."""

    def __init__(self, url: str, model: str = "Qwen2.5-32B-Instruct", timeout_s: float = 30.0, retries: int = 2,
                 concurrency: int = 32, max_tokens: int = 16, api_key: str = "", down_cooldown_s: float = 60.0):
        url = url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions" if url.endswith("/v1") else "/v1/chat/completions"
        self.url, self.model, self.timeout_s, self.retries = url, model, timeout_s, retries
        self.concurrency, self.max_tokens, self.api_key = max(1, concurrency), max_tokens, api_key
        self.down_cooldown_s = down_cooldown_s
        self.down_until = 0.0      # after a refused or timed-out call, skip calls until then (then probe again)
        self.warned = False
        self.errors = 0
        self.unparsable = 0
        self._lock = threading.Lock()

    def _warn_once(self, message: str):
        with self._lock:
            if self.warned:
                return
            self.warned = True
        warnings.warn(f"rewards: LLM verifier {self.url}: {message}; scoring rule-only", RuntimeWarning, stacklevel=3)

    def _ask(self, question: str, gold: str, answer: str) -> bool | None:
        payload = {"model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens,
                   "messages": [{"role": "user", "content": VERIFIER_PROMPT.format(
                       question=question or "(not given)", gold=gold, answer=answer)}]}
        for attempt in range(self.retries + 1):
            if time.monotonic() < self.down_until:
                return None
            try:
                status, data = post_json(self.url, payload, self.timeout_s, self.api_key)
                if status >= 500 or status == 429:
                    error = f"HTTP {status}"
                elif status != 200:   # our request is wrong (model name, ...): retrying won't help
                    self.errors += 1
                    self._warn_once(f"HTTP {status} {data[:200]!r}")
                    return None
                else:
                    reply = json.loads(data.decode("utf-8", "replace"))
                    verdict = _parse_verdict(reply["choices"][0]["message"]["content"])
                    if verdict is None:
                        self.unparsable += 1
                    return verdict
            except TimeoutError:
                error = "timed out"
            except (ConnectionRefusedError, socket.gaierror) as e:   # the server is down / unknown host
                error = f"unreachable ({e})"
            except (OSError, http.client.HTTPException) as e:   # reset, closed without a reply, ...
                error = f"{type(e).__name__}: {e}"
            except (ValueError, KeyError, IndexError, TypeError) as e:   # not an OpenAI-style reply
                self.errors += 1
                self._warn_once(f"bad reply ({type(e).__name__})")
                return None
            if attempt < self.retries:
                time.sleep(min(2.0, 0.1 * 2 ** attempt))
        if error == "timed out" or error.startswith("unreachable"):
            # a hung server costs (retries + 1) x timeout_s per call: after one such call, skip the verifier
            # for down_cooldown_s (every batch would otherwise wait ceil(n / concurrency) times that again)
            self.down_until = time.monotonic() + self.down_cooldown_s
        self.errors += 1
        self._warn_once(error)
        return None

    def judge(self, questions: list[str], golds: list[str], answers: list[str]) -> list[bool | None]:
        if not (len(questions) == len(golds) == len(answers)):
            raise ValueError(f"VerifierClient.judge: {len(questions)} questions, {len(golds)} golds, {len(answers)} answers")
        if not golds:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(golds))) as pool:
            return list(pool.map(self._ask, questions, golds, answers))


_VERIFIERS: dict = {}


def _get_verifier(cfg: RewardConfig) -> VerifierClient:
    key = (cfg.verifier_url, cfg.verifier_model, cfg.verifier_timeout_s, cfg.verifier_retries,
           cfg.verifier_concurrency, cfg.verifier_max_tokens, cfg.verifier_api_key)
    if key not in _VERIFIERS:   # one client per setting keeps the warn-once and down state across batches
        _VERIFIERS[key] = VerifierClient(cfg.verifier_url, cfg.verifier_model, cfg.verifier_timeout_s, cfg.verifier_retries,
                                         cfg.verifier_concurrency, cfg.verifier_max_tokens, cfg.verifier_api_key)
    return _VERIFIERS[key]


# ----------------------------------------------------------------------------------------------------

@dataclass
class CLIConfig(RewardConfig):
    jsonl: str = ""   # input: {response, answer, options?, question?} per line
    out: str = ""     # output JSONL: the input fields + accuracy, format, reward, extracted, reason, ...


def main(argv: list[str] | None = None):
    # imported here, not at the top: every Math-Verify worker re-imports this file under spawn, and
    # data brings in torch (~1.2 s and ~240 MB per worker, for nothing)
    import data
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = configurator.parse_config(CLIConfig, argv)   # also takes the documented `--jsonl IN --out OUT`
    if not cfg.jsonl or not cfg.out:
        raise SystemExit("usage: python rewards.py --jsonl IN --out OUT [--key=value ...] (--help lists the keys)")
    records = []
    for where, record in data.read_jsonl(cfg.jsonl):
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object")
        for name in ("response", "answer"):
            if not isinstance(record.get(name), str):
                raise ValueError(f"{where}: field '{name}' missing or not a string")
        if record.get("options") is not None and not isinstance(record["options"], dict):
            raise ValueError(f"{where}: field 'options' must be an object {{letter: text}}")
        records.append(record)

    scored = score_batch([r["response"] for r in records], [r["answer"] for r in records],
                         [r.get("options") for r in records], [r.get("question") or "" for r in records], cfg)
    tmp = cfg.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", errors="replace") as f:   # lone surrogates from JSON escapes
        for record, result in zip(records, scored):
            f.write(json.dumps({**record, **result}, ensure_ascii=False) + "\n")
    os.replace(tmp, cfg.out)
    n = max(1, len(records))
    print(f"{len(records)} items -> {cfg.out}: accuracy {sum(r['accuracy'] for r in scored) / n:.3f} "
          f"format {sum(r['format'] for r in scored) / n:.3f} reward {sum(r['reward'] for r in scored) / n:.3f}")
    print("stats:", json.dumps(last_stats.as_dict()))


if __name__ == "__main__":
    main()
