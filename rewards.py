"""
GRPO reward of Skywork-R1V3 (paper §3.1, eqs. 1-3), computed by score_batch:

    R_format   = 1[response is "<think> ... </think> answer"]                       (eq. 1)
    R_accuracy = 1[R_rule(a_hat, a) = 1  or  R_theta(a_hat, a) = 1]                 (eq. 2)
    R          = eps * R_accuracy + (1 - eps) * R_format,  eps = 0.8                (eq. 3)

a_hat is extract_answer(response). R_rule is rule_check.py: multiple-choice letters and a cheap
in-process check (canonical strings, closed-form numbers) first, Math-Verify for the rest in worker
processes with a hard time limit (math_verify_pool.py). R_theta: an LLM verifier behind an OpenAI-compatible endpoint,
asked only when R_rule says wrong (off by default). Sections below, in order: eqs. 1-3 and
extraction, the counters, the "can't see the image" phrases, the verifier, the CLI:
    python rewards.py --jsonl IN --out OUT [--verifier_url=URL] [--timeout_s=5] [--think_mode=False]
each IN line: {"response", "answer", "options"?: {letter: text}, "question"?}; each OUT line is the
input line plus accuracy, format, reward, extracted, reason, timed_out, rule, verifier.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Literal

import configurator
import math_verify_pool
import rule_check
# records.py, not data.py, for the JSONL reader: under spawn every Math-Verify worker re-imports the main script
# (this file, run as the CLI), and data brings in torch (~1.2 s and ~240 MB per worker, for nothing)
from records import read_jsonl


@dataclass
class RewardConfig:
    accuracy_weight: float = 0.8        # eq. 3 epsilon
    think_mode: bool = True             # the prompt ends with "<think>\n" (the response is inside)
    timeout_s: float = 5.0              # hard limit per Math-Verify item (the worker is killed)
    num_workers: int = 2                # rule-checker processes; 0 = in-process (no hard timeout)
    start_method: Literal["spawn", "forkserver"] = "spawn"   # never fork a CUDA/NCCL process
    worker_memory_mb: int = 2048        # address space per worker: a sympy blow-up is a MemoryError
    max_answer_chars: int = 1000        # longer extracted answers are compared as strings only
    verifier_url: str = ""              # R_theta endpoint, off when empty
    verifier_model: str = "Qwen2.5-32B-Instruct"
    verifier_timeout_s: float = 30.0    # per HTTP request, in total (not per socket read)
    verifier_retries: int = 2           # extra attempts after a timeout / connection error / 5xx
    verifier_concurrency: int = 32      # parallel requests; vLLM batches them on the server
    verifier_max_tokens: int = 16
    verifier_api_key_env: str = ""      # NAME of the environment variable holding the key (vllm serve --api-key),
                                        # sent as "Authorization: Bearer"; the key is never in a config or log
    verifier_max_reply_bytes: int = 1 << 20   # a longer reply body is an error (a 16-token verdict is ~1 KB)


# -----------------------------------------------------------------------------
# Eqs. 1-3: format reward, batch scoring, answer extraction


THINK_START, THINK_END = "<think>", "</think>"
_END_TOKENS = re.compile(r"<\|im_end\|>|<\|endoftext\|>")


def format_reward(response: str, think_mode: bool = True) -> float:
    # eq. 1: exactly one <think>...</think> with some reasoning, followed by a non-empty answer.
    # think_mode: the prompt already ended with "<think>\n", so the opening tag may be absent; a
    # caller that passes prompt tail + response (tag included) is scored the same.
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
    """One dict per response: accuracy, format, reward (eq. 3), extracted, reason, timed_out, rule,
    verifier. Item-level failures (hangs, crashes, verifier errors) score 0 and are counted in
    `last_stats`. Raises only for caller errors (mismatched lengths, a non-str gold) or when no
    worker process can start."""
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
            verdict, item["reason"] = rule_check.fast_verdict(
                _answer_part(response), item["extracted"], gold, opts, cfg.max_answer_chars)
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
        results, stats.worker_restarts = math_verify_pool.math_verify_batch(keys, cfg)
        for key, (equal, reason, timed_out) in zip(keys, results):
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
            before = dict(client.outcomes)
            verdicts = client.judge([questions[i] or "" for i in ask], [golds[i] for i in ask],
                                    [out[i]["extracted"][:4000] for i in ask])
            stats.verifier_calls += len(ask)
            for key in ("timeouts", "failures", "skipped"):
                setattr(stats, f"verifier_{key}", client.outcomes[key] - before[key])
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


_CACHE: dict = {}   # (gold, pred) -> (equal, reason) from Math-Verify; GRPO groups repeat answers
_CACHE_MAX = 50_000


def rule_accuracy(extracted_or_response: str, gold: str, options: dict | None = None) -> bool:
    """R_rule for one item, in this process: no worker and no hard timeout (Math-Verify's own
    SIGALRM limits apply on the main thread). Takes a full response or an extracted answer."""
    text, cfg = extracted_or_response or "", RewardConfig(num_workers=0)
    extracted = extract_answer(text)
    verdict, _ = rule_check.fast_verdict(_answer_part(text), extracted, gold, options,
                                         cfg.max_answer_chars)
    if verdict is None:
        results, _ = math_verify_pool.math_verify_batch([(gold, extracted)], cfg)
        verdict = results[0][0]   # (equal, reason, timed_out)
    return verdict


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
    """Text after the last </think>; then the last brace-balanced \\boxed{}, "answer is X",
    "Answer: X", "**X**", else the last non-empty line."""
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


# Counters: after each score_batch, `rewards.last_stats` holds that batch's counts (timeouts, worker
# restarts, verifier calls/fallbacks, ...) and `rewards.total_stats` the running totals. Log
# last_stats.as_dict().
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
    verifier_fallbacks: int = 0   # asked, but no verdict (down, timeout, garbage): rule-only
    verifier_timeouts: int = 0    # of those: the last attempt timed out
    verifier_failures: int = 0    # of those: refused, HTTP error (401 for a wrong key), bad or oversized reply
    verifier_skipped: int = 0     # of those: not sent, the verifier was in its cooldown (circuit open)
    seconds: float = 0.0

    def reset(self):
        for f in fields(self):
            setattr(self, f.name, f.default)

    def add(self, other: "RewardStats"):
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return asdict(self)


last_stats = RewardStats()   # the latest score_batch (updated in place: imported names stay live)
total_stats = RewardStats()  # since import

# "I can't see the image" in the thinking: grpo.py's response/blind_phrase_rate and eval.py's
# Table 5 split both use this one list (they had drifted apart: 19 phrases in grpo.py, 37 in
# eval.py). Matched as lowercase substrings with curly apostrophes straightened; the Chinese forms
# cover 图 / 图片 / 图像 by being prefixes.
UNSEEN_IMAGE_PHRASES = (
    "can't see the image", "cannot see the image", "can not see the image",
    "unable to see the image", "not able to see the image", "can't see the picture",
    "cannot see the picture", "can't see the figure", "cannot see the figure",
    "can't see the diagram", "cannot see the diagram", "can't see images", "cannot see images",
    "can't see any image", "cannot see any image", "don't see the image", "do not see the image",
    "can't view the image", "cannot view the image", "unable to view the image",
    "can't access the image", "cannot access the image", "don't have access to the image",
    "do not have access to the image", "no image is provided", "no image provided",
    "image is not provided", "image was not provided", "image isn't provided",
    "image is not available", "no image is attached", "without the image",
    "without seeing the image", "can't actually see", "cannot actually see",
    "看不到图", "看不见图", "无法看到图", "无法看见图", "无法查看图", "没有看到图", "看不到这张图",
    "无法看到这张图",
)


def _plain_lower(s: str) -> str:
    return s.replace("\u2019", "'").replace("\u2018", "'").lower()


def claims_unseen_image(response: str, phrases=UNSEEN_IMAGE_PHRASES) -> bool:
    """True when the thinking (the text before the first </think>, the whole text when there is
    none) says the model cannot see the image."""
    thinking = _plain_lower(response.split(THINK_END, 1)[0])
    return any(_plain_lower(p) in thinking for p in phrases)


# -----------------------------------------------------------------------------
# LLM verifier R_theta (OpenAI-compatible /v1/chat/completions). The paper uses
# Qwen2.5-32B-Instruct:
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


def verifier_api_key(cfg) -> str:
    """The verifier's API key from the environment variable named by cfg.verifier_api_key_env ("" when none is
    named). A named but unset variable is an error now: a key-protected verifier would answer 401 to every call."""
    name = cfg.verifier_api_key_env
    if name and not os.environ.get(name):
        raise ValueError(f"verifier_api_key_env={name!r}: the environment variable {name} is not set or empty")
    return os.environ.get(name, "") if name else ""


class ReplyTooLarge(ValueError):
    pass


def post_json(url: str, payload: dict, timeout_s: float, api_key: str = "",
              max_bytes: int = RewardConfig.verifier_max_reply_bytes) -> tuple[int, bytes]:
    """POST payload as JSON -> (status, body) within a TOTAL deadline of timeout_s (connect, headers
    and body): a socket timeout bounds each read only, so a server trickling a byte a second could
    hold the call forever. At the deadline a timer shuts the socket down, which wakes the blocked
    read, and TimeoutError is raised. A body over max_bytes raises ReplyTooLarge (32 concurrent
    50 MB replies must not fill the memory). http.client, not urllib: it gives us the socket to
    shut; it does not read HTTP(S)_PROXY (the verifier is an internal endpoint). Used by the
    verifier below and by eval.py's MathVista extractor."""
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    conn_cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout_s)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
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
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=json.dumps(payload).encode(), headers=headers)
        response = conn.getresponse()
        data = response.read(max_bytes + 1)   # at most this much is read, whatever Content-Length says
        if len(data) > max_bytes:
            raise ReplyTooLarge(f"reply body over {max_bytes} bytes")
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
    """judge(questions, golds, answers) -> [True | False | None]; None = no verdict (server down,
    timeout, HTTP error, unparsable reply). Requests are concurrent (vLLM batches them)."""

    def __init__(self, url: str, model: str = "Qwen2.5-32B-Instruct", timeout_s: float = 30.0,
                 retries: int = 2, concurrency: int = 32, max_tokens: int = 16, api_key: str = "",
                 max_reply_bytes: int = RewardConfig.verifier_max_reply_bytes, down_cooldown_s: float = 60.0):
        url = url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions" if url.endswith("/v1") else "/v1/chat/completions"
        self.url, self.model, self.timeout_s, self.retries = url, model, timeout_s, retries
        self.concurrency, self.max_tokens, self.api_key = max(1, concurrency), max_tokens, api_key
        self.max_reply_bytes, self.down_cooldown_s = max_reply_bytes, down_cooldown_s
        self.down_until = 0.0   # after a refused or timed-out call: none until then (then a probe)
        self.warned = False
        self.errors = 0
        self.unparsable = 0
        self.outcomes = {"timeouts": 0, "failures": 0, "skipped": 0}   # calls without a verdict, by cause
        self._lock = threading.Lock()

    def circuit_open(self) -> bool:
        """True while the verifier is skipped after a refused or timed-out call (its cooldown)."""
        return time.monotonic() < self.down_until

    def _count(self, outcome: str):
        with self._lock:
            self.outcomes[outcome] += 1

    def _warn_once(self, message: str):
        with self._lock:
            if self.warned:
                return
            self.warned = True
        warnings.warn(f"rewards: LLM verifier {self.url}: {message}; scoring rule-only",
                      RuntimeWarning, stacklevel=3)

    def _ask(self, question: str, gold: str, answer: str) -> bool | None:
        payload = {"model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens,
                   "messages": [{"role": "user", "content": VERIFIER_PROMPT.format(
                       question=question or "(not given)", gold=gold, answer=answer)}]}
        for attempt in range(self.retries + 1):
            if self.circuit_open():
                self._count("skipped")
                return None
            try:
                status, data = post_json(self.url, payload, self.timeout_s, self.api_key, self.max_reply_bytes)
                if status >= 500 or status == 429:
                    error = f"HTTP {status}"
                elif status != 200:   # our request is wrong (model name, API key, ...): retrying won't help
                    self.errors += 1
                    self._count("failures")
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
            except (ConnectionRefusedError, socket.gaierror) as e:   # server down / unknown host
                error = f"unreachable ({e})"
            except (OSError, http.client.HTTPException) as e:   # reset, closed without a reply, ...
                error = f"{type(e).__name__}: {e}"
            except (ValueError, KeyError, IndexError, TypeError) as e:   # not an OpenAI-style reply
                self.errors += 1
                self._count("failures")
                self._warn_once(f"bad reply ({type(e).__name__}: {str(e)[:100]})")
                return None
            if attempt < self.retries:
                time.sleep(min(2.0, 0.1 * 2 ** attempt))
        if error == "timed out" or error.startswith("unreachable"):
            # a hung server costs (retries + 1) x timeout_s per call: after one such call, skip the
            # verifier for down_cooldown_s (every batch would otherwise wait ceil(n / concurrency)
            # times that again)
            self.down_until = time.monotonic() + self.down_cooldown_s
        self.errors += 1
        self._count("timeouts" if error == "timed out" else "failures")
        self._warn_once(error)
        return None

    def judge(self, questions: list[str], golds: list[str], answers: list[str]
              ) -> list[bool | None]:
        if not (len(questions) == len(golds) == len(answers)):
            raise ValueError(f"VerifierClient.judge: {len(questions)} questions, "
                             f"{len(golds)} golds, {len(answers)} answers")
        if not golds:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(golds))) as pool:
            return list(pool.map(self._ask, questions, golds, answers))


_VERIFIERS: dict = {}


def _get_verifier(cfg: RewardConfig) -> VerifierClient:
    key = (cfg.verifier_url, cfg.verifier_model, cfg.verifier_timeout_s, cfg.verifier_retries,
           cfg.verifier_concurrency, cfg.verifier_max_tokens, verifier_api_key(cfg), cfg.verifier_max_reply_bytes)
    if key not in _VERIFIERS:   # one client per setting: its warn-once and down state persist
        _VERIFIERS[key] = VerifierClient(*key)
    return _VERIFIERS[key]


def verifier_circuit_open(cfg: RewardConfig) -> bool:
    """Is this setting's verifier in its cooldown (skipped)? False when none is configured."""
    return bool(cfg.verifier_url) and _get_verifier(cfg).circuit_open()


# -----------------------------------------------------------------------------

@dataclass
class CLIConfig(RewardConfig):
    jsonl: str = ""   # input: {response, answer, options?, question?} per line
    out: str = ""     # output JSONL: the input fields + accuracy, format, reward, extracted, ...


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = configurator.parse_config(CLIConfig, argv)   # also takes the documented `--jsonl IN --out OUT`
    if not cfg.jsonl or not cfg.out:
        raise SystemExit("usage: python rewards.py --jsonl IN --out OUT [--key=value ...] "
                         "(--help lists the keys)")
    records = []
    for where, record in read_jsonl(cfg.jsonl):
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object")
        for name in ("response", "answer"):
            if not isinstance(record.get(name), str):
                raise ValueError(f"{where}: field '{name}' missing or not a string")
        if record.get("options") is not None and not isinstance(record["options"], dict):
            raise ValueError(f"{where}: field 'options' must be an object {{letter: text}}")
        records.append(record)

    scored = score_batch([r["response"] for r in records], [r["answer"] for r in records],
                         [r.get("options") for r in records],
                         [r.get("question") or "" for r in records], cfg)
    tmp = cfg.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", errors="replace") as f:   # lone surrogates (JSON escapes)
        for record, result in zip(records, scored):
            f.write(json.dumps({**record, **result}, ensure_ascii=False) + "\n")
    os.replace(tmp, cfg.out)
    mean = {k: sum(r[k] for r in scored) / max(1, len(records))
            for k in ("accuracy", "format", "reward")}
    print(f"{len(records)} items -> {cfg.out}: accuracy {mean['accuracy']:.3f} "
          f"format {mean['format']:.3f} reward {mean['reward']:.3f}")
    print("stats:", json.dumps(last_stats.as_dict()))


if __name__ == "__main__":
    main()
