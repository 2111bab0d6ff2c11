"""
LLM judges: where the reference evaluation asks GPT to match or grade an answer, we send that benchmark's own
judge prompt to the OpenAI-compatible verifier endpoint (eval.py --verifier_url; any served model) through
rewards.post_json. A judge is asked only about answers the rules scored wrong (verdict = rules OR judge, as
eq. 2 and Skywork's MMMU rule check). A reply that does not parse after the reference's retries is counted
("unparseable") and scored wrong: never guessed (VLMEvalKit draws a random option there).

Prompts, verbatim, from SkyworkAI/Skywork-R1V @ b806cef:
  mcq     eval/vlmevalkit/vlmeval/dataset/utils/multiple_choice.py build_prompt L178-197 (3 tries, can_infer)
  wemath  the same file, build_prompt_wemath L200-224
  yorn    utils/yorn.py YOrN_match_prompt L207-223 (HallusionBench; 5 tries at T = 0.5 i, Yes/No)
  letters utils/logicvista.py build_prompt_logicvista L10-36 (5 tries at T = 0.5 i, upper-case letters)
  yesno   eval/MMK12/calculate_score.py create_comparison_prompt L40-72 (5 tries at T = 0.5 i, "yes"/"no")
  mathverse  utils/mathverse.py L80-162: extract (5 tries), an exact match short-circuits, else score 0/1 (5 tries)
  mathv   utils/mathv.py L83-148: extract (5 tries), then post_check: can_infer against `choices`, else is_equal
          (lower-cased equality, |a - b| < 1e-6, or latex2sympy: math-verify's latex2sympy2_extended)
  emma    eval/EMMA/evaluation/evaluate.py gen_true_false --gpt_eval: score_demo_prompt, "Correct" / "Incorrect"
  mme     utils/mme_reasoning.py: the row's extraction prompt (MMEReasoning_extract L1095-1132, 5 tries; texts
          in mme_reasoning_prompts.py), then its checker (puzzles.py) or, for open questions,
          MMEReasoning_openeval L1135-1179 (5 tries, "0" / "1")
and from open-compass/VLMEvalKit @ e8e78f05 (Skywork's fork has neither):
  phyx    vlmeval/dataset/utils/phyx.py PhyX_auxeval_MC L214-253: its letter extraction, then the MC judge prompt
  seephys vlmeval/dataset/utils/seephys.py extract L208-229: extract (5 tries), then score_func 0/1 (5 tries)
  open    the rest (PhyX open-ended, MME-Reasoning rows with neither prompt_id nor question_type):
          rewards.py's verifier prompt
The prompt texts are judge_prompts.py's.
Every judge sees the answer after </think> (the fork's option matcher does so; for the others a 16k-token trace
would not fit a judge's context).
"""

import http.client
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from latex2sympy2_extended.latex2sympy2 import latex2sympy

import puzzles
import rewards
from judge_prompts import (MCQ_PROMPT, WEMATH_PROMPT, YORN_PROMPT, LETTERS_PROMPT, YESNO_PROMPT,
                           MATHVERSE_EXTRACT_PREFIX, MATHVERSE_SCORE_PREFIX, MATHV_EXTRACT_PREFIX,
                           EMMA_SCORE_PROMPT, MME_OPEN_PROMPT, PHYX_MC_TASK, PHYX_MC_EXAMPLES,
                           SEEPHYS_EXTRACT_TASK, SEEPHYS_EXTRACT_EXAMPLES, SEEPHYS_SCORE_PROMPT)
from mme_reasoning_prompts import EXTRACT_PROMPTS
from scorers import answer_segment, can_infer


def yorn_extract(text):
    """VLMEvalKit YOrN_Extraction (utils/yorn.py L226-233): 'Yes' / 'No' when exactly one of the words occurs
    (lower-cased, punctuation split off), else 'Unknown'."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    if ("yes" in words) != ("no" in words):
        return "Yes" if "yes" in words else "No"
    return "Unknown"


def judge_kind(benchmark):
    name = benchmark.lower()
    if "hallusion" in name:
        return "yorn"
    if "logicvista" in name:
        return "letters"
    if "mmk12" in name:
        return "yesno"
    if name.startswith("wemath"):
        return "wemath"
    if name.startswith("mathverse"):
        return "mathverse"
    if name.startswith("mathvision"):
        return "mathv"
    if name.startswith("emma"):
        return "emma"
    if name.startswith("phyx"):
        return "phyx"
    if name.startswith("seephys"):
        return "seephys"
    if name.startswith("mme-reasoning") or name.startswith("mme_reasoning"):
        return "mme"
    return "mcq_or_open"


def needs_judge(item, verdict):
    """Whether to ask the judge about an answer the rules scored: only wrong ones, and for HallusionBench only
    those without a Yes/No (VLMEvalKit sends just the 'Unknown' extractions to YOrN_auxeval)."""
    if verdict["correct"]:
        return False
    return not (judge_kind(item.benchmark) == "yorn" and verdict.get("parsed_pred") in ("Yes", "No"))


def mathv_equal(answer, gold):
    """MathVision's is_equal (utils/mathv.py L14-38) without eval(): equal lower-cased, numbers within 1e-6, or
    latex2sympy(gold) - latex2sympy(answer) zero or a number within 1e-6. latex2sympy is math-verify's pure-Python
    latex2sympy2_extended (latex2sympy2.py L1453; the reference imports latex2sympy2), which parses with a
    grammar, not eval(); strings over 300 characters are not parsed (the reference has a 30 s timeout)."""
    answer, gold = str(answer).lower().strip(), str(gold).lower().strip()
    if answer == gold:
        return True
    try:
        if abs(float(answer) - float(gold)) < 1e-6:
            return True
    except (ValueError, OverflowError):
        pass
    if max(len(answer), len(gold)) > 300:
        return False
    try:
        difference = latex2sympy(gold) - latex2sympy(answer)
        if difference == 0:
            return True
        return bool(difference.is_number) and abs(complex(difference.evalf())) < 1e-6
    except Exception:   # anything latex2sympy/sympy cannot parse or subtract: not equal (the reference's except)
        return False


def phyx_mc_prediction(text):
    """PhyX_process_line_MC's letter (phyx.py L333-367): the first A-D after 'answer'/'correct'/'option', else
    the last 'X:', else the text itself."""
    match = re.search(r"\b(?:correct|answer|option|Answer|Option|Correct)\b[\s\S]*?([A-D])", text.strip())
    if match:
        return match.group(1)
    letters = re.findall(r"([ABCD]):", text)
    return letters[-1] if letters else text.strip()


def seephys_rule_extract(text):
    """SeePhys extract_by_rule (seephys.py L131-169): <answer>digits</answer>, 'the final answer is: X.', 'The
    answer is: X.', else the text."""
    for pattern in (r"<answer>\s*(\d+)\s*</answer>", r"the final answer is: (.+?)\.", r"The answer is: (.+?)\."):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return text


def zero_or_one(reply):   # PhyX: "1" in the reply -> 1, elif "0" -> 0 (phyx.py L246-251)
    return True if "1" in reply else False if "0" in reply else None


def seephys_score(reply):
    """score_func's parse (seephys.py L243-255): the text after the last 'Judgement:', an int 0 or 1."""
    for marker in ("Judgement: ", "Judgement:", "judgement: ", "judgement:"):
        if marker in reply:
            reply = reply.split(marker)[-1]
            break
    return {"0": False, "1": True}.get(reply.strip())


def option_string(options):   # "A. x\nB. y\n": VLMEvalKit's build_option_str, and its MCQ prompts' lines
    return "".join(f"{k}. {v}\n" for k, v in options.items())


def judge_request(item, response, options):
    """-> (prompt, tries, parse(reply) -> correct (bool) or None when the reply does not parse)."""
    kind = judge_kind(item.benchmark)
    answer = answer_segment(response)   # Skywork's fork: prediction.split("</think>", 1)[-1] in the judge
    gold = str(item.answer).strip()
    if kind == "yorn":
        return (YORN_PROMPT.format(item.question, answer), 5,
                lambda r: None if yorn_extract(r) == "Unknown" else yorn_extract(r) == gold)
    if kind == "letters":
        golds = sorted(g.strip().lower() for g in gold.split(","))

        def parse_letters(reply):
            reply = reply.strip()
            return sorted(reply.lower()) == golds if reply.isupper() and reply.isalpha() else None
        return LETTERS_PROMPT.format(item.question, answer), 5, parse_letters
    if kind == "yesno":
        match = re.search(r"<answer>(.*?)</answer>", response, re.DOTALL)
        given = match.group(1).strip() if match else (rewards.extract_answer(response) or response)
        prompt = YESNO_PROMPT.format(question=item.question, answer=gold, model_response=given)
        return prompt, 5, lambda r: {"yes": True, "no": False}.get(r.strip().lower())
    if kind == "mathv":
        prompt = MATHV_EXTRACT_PREFIX + f"{item.question}\nModel respone: {answer}Extracted answer:"
        return prompt, 5, lambda reply: (can_infer(reply, options) == gold) if options else mathv_equal(reply, gold)
    if kind == "emma":   # create_test_prompt; 'correct' after strip/lower is right (evaluate.py L126-130)
        prompt = EMMA_SCORE_PROMPT.strip() + f"\nResponse: {answer}\nAnswer: {gold}\nCorrect_or_not:"
        return prompt, 1, lambda r: {"correct": True, "incorrect": False}.get(r.strip().lower())
    if kind == "phyx" and options:
        prompt = (PHYX_MC_TASK + "".join(e + "\n" for e in PHYX_MC_EXAMPLES) + f"Ground truth answer: {gold} \n"
                  + f"Predicted answer: {phyx_mc_prediction(answer)} \n" + "Judegement:")
        return prompt, 5, zero_or_one
    if options:
        template = WEMATH_PROMPT if kind == "wemath" else MCQ_PROMPT

        def parse_option(reply):
            picked = can_infer(reply, options)
            return None if not picked else picked == gold
        return template.format(item.question, option_string(options), answer), 3, parse_option
    prompt = rewards.VERIFIER_PROMPT.format(question=item.question or "(not given)", gold=gold,
                                            answer=rewards.extract_answer(response))
    return prompt, 1, lambda r: rewards._parse_verdict(r)


def judge_answer(judge, item, response, options):
    """-> (verdict, how): the benchmark's judge on one answer. MathVerse's is two calls: its extractor, then (when
    the extraction is not the gold verbatim) its 0/1 scorer on the extraction."""
    kind, gold = judge_kind(item.benchmark), str(item.answer).strip()
    if kind == "phyx" and options:   # PhyX_auxeval_MC L231-237: a letter decides without the judge
        letter = phyx_mc_prediction(answer_segment(response))
        if letter.lower() == gold.lower() or letter in ("A", "B", "C", "D"):
            return letter.lower() == gold.lower(), "rules"
    if kind == "seephys":
        return seephys_judge(judge, item, response)
    if kind == "mme" and mme_prompt_id(item):
        return mme_judge(judge, item, response)
    if kind != "mathverse":
        return judge.ask(*judge_request(item, response, options))
    extract_prompt = MATHVERSE_EXTRACT_PREFIX + f"Model response: '{answer_segment(response)}'\nExtracted Answer: "
    extracted, how = judge.ask(extract_prompt, 5, lambda reply: reply)   # any reply is an extraction there
    if extracted is None:
        return None, how
    if extracted.strip() == gold:   # post_check_score(prefetch=True)
        return True, "model"
    question = item.extra.get("question_for_eval", item.question)
    score_prompt = MATHVERSE_SCORE_PREFIX + (f"\n    [Question]: {question}\n    [Standard Answer]: {gold}\n"
                                             f"    [Model_answer] : {extracted}\n    Judgement:")
    return judge.ask(score_prompt, 5, lambda reply: {"0": False, "1": True}.get(reply.strip()))


def seephys_judge(judge, item, response):
    """SeePhys extract (seephys.py L208-229): the rule extraction equal to the gold decides; else the extraction
    prompt (any non-empty reply, 5 tries at T = 0.5 i), then score_func's 0/1 prompt (5 tries at T = 0.3 i)."""
    gold, predicted = str(item.answer).strip(), seephys_rule_extract(answer_segment(response))
    if predicted == gold:
        return True, "rules"
    question = item.question or "Please answer this question in the image."
    extract_prompt = (SEEPHYS_EXTRACT_TASK + "".join(e + "\n" for e in SEEPHYS_EXTRACT_EXAMPLES) + question + "\n"
                      + "Model response: " + predicted + "Extracted answer:")
    extracted, how = judge.ask(extract_prompt, 5, lambda reply: reply if reply.strip() else None)
    if extracted is None:
        return None, how
    score_prompt = SEEPHYS_SCORE_PROMPT.strip() + (f"\n[Question]: {item.question}\n[Standard Answer]: {gold}\n"
                                                   f"[Model Answer]: {extracted}\nJudgement: ")
    return judge.ask(score_prompt, 5, seephys_score, temperature_step=0.3)


def mme_prompt_id(item):
    """The row's extraction prompt (MMEReasoning_extract L1098-1104): its prompt_id, else by question_type
    (choice -> choice_prompt, open -> open_question_prompt); "" when neither says (the generic judges then)."""
    prompt_id = item.extra.get("prompt_id") or {"choice": "choice_prompt", "open": "open_question_prompt"}.get(
        str(item.extra.get("question_type", "")).lower(), "")
    if prompt_id and prompt_id not in EXTRACT_PROMPTS:
        raise ValueError(f"{item.benchmark} {item.id}: prompt_id {prompt_id!r} is not one of {sorted(EXTRACT_PROMPTS)}")
    return prompt_id


def json_reply(reply):
    """MMEReasoning_extract's JSON check (L1113-1121): the reply, else its first ```json``` block, as JSON."""
    for text in [reply] + re.findall(r"```(?:json|JSON)?\s*(.*?)\s*```", reply, re.DOTALL)[:1]:
        try:
            return json.loads(text)
        except ValueError:
            continue
    return None


def mme_judge(judge, item, response):
    """MME-Reasoning: the judge rewrites the response with the row's extraction prompt (5 tries at T = 0.5 i; JSON
    except for the open, choice and 24-points prompts), then the row's checker scores the rewrite (the open
    questions: MMEReasoning_openeval's 0/1 prompt)."""
    prompt_id = mme_prompt_id(item)
    function_id = item.extra.get("function_id") or {"choice_prompt": "choice_function"}.get(prompt_id, "open_function")
    as_text = prompt_id in ("open_question_prompt", "choice_prompt", "points24_prompt")
    prompt = EXTRACT_PROMPTS[prompt_id].format(question=item.question, response=answer_segment(response))
    rewritten, how = judge.ask(prompt, 5, lambda reply: (reply if reply.strip() else None) if as_text
                               else json_reply(reply))
    if rewritten is None:
        return None, how
    if function_id == "open_function":
        prompt = MME_OPEN_PROMPT.format(question=item.question, answer=str(item.answer).strip(), response=rewritten)
        return judge.ask(prompt, 5, lambda reply: {"0": False, "1": True}.get(reply.strip()))
    correct, _ = puzzles.check_response(function_id, item.extra.get("special_info", ""), response, item.answer,
                                        f"{item.benchmark} {item.id}", rewritten=rewritten)
    return correct, "model"


class Judge:
    """One benchmark run's judge on the endpoint: ask(prompt, tries, parse) -> (True/False/None, how) with how
    "model" (parsed), "unparseable" (replies, none parsed) or "failed" (no reply), counted in `counts`.
    A connection failure or timeout switches it off for the run (one message): the rules' verdicts stand."""

    def __init__(self, url, model, api_key="", max_tokens=256):
        client = rewards.VerifierClient(url, model=model, api_key=api_key)   # its URL normalisation, timeout
        self.url, self.model, self.timeout_s, self.api_key = client.url, model, client.timeout_s, api_key
        self.max_reply_bytes = client.max_reply_bytes
        self.max_tokens = max_tokens
        self.counts = {"asked": 0, "model": 0, "unparseable": 0, "failed": 0}
        self.down = False
        self.lock = threading.Lock()

    def count(self, key):
        with self.lock:
            self.counts[key] += 1

    def ask(self, prompt, tries, parse, temperature_step=0.5):
        self.count("asked")
        replied = False
        for attempt in range(tries):
            if self.down:
                break
            payload = {"model": self.model, "temperature": temperature_step * attempt, "max_tokens": self.max_tokens,
                       "messages": [{"role": "user", "content": prompt}]}
            try:
                status, body = rewards.post_json(self.url, payload, self.timeout_s, self.api_key,
                                                 self.max_reply_bytes)
                if status != 200:
                    continue
                content = json.loads(body)["choices"][0]["message"]["content"]
            except (TimeoutError, ConnectionError, socket.gaierror) as e:
                print(f"judge {self.url}: {e}; rules only for the rest of this run")
                self.down = True
                break
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError):
                continue   # a broken or non-OpenAI reply: try again
            replied = True
            verdict = parse(content or "")
            if verdict is not None:
                self.count("model")
                return verdict, "model"
        how = "unparseable" if replied else "failed"
        self.count(how)
        return None, how

    def judge_all(self, requests, workers=16):
        """[(item, response, options)] -> [judge_answer(...)], concurrently (the endpoint batches them)."""
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(requests)))) as pool:
            return list(pool.map(lambda r: judge_answer(self, *r), requests))


def mathvista_extractor(url, model, api_key=""):
    """VLMEvalKit's MathVista GPT extractor (benchmarks.mathvista_extract's llm_extract) through a Judge: up to 5
    tries at temperature 0, 0.5, 1.0, ... while the reply is empty or malformed, 128 tokens. None when there is no
    answer (the rule extractor is used then); a connection error or timeout switches it off for the run."""
    judge = Judge(url, model, api_key, max_tokens=128)
    return lambda prompt: judge.ask(prompt, 5, lambda reply: reply if reply.strip() else None)[0]
