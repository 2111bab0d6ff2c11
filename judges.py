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
          (lower-cased equality or |a - b| < 1e-6; its latex2sympy step is not ported)
  open    the others (SeePhys, PhyX, EMMA, MME-Reasoning open questions): rewards.py's verifier
          prompt (their own extract-then-score prompts are not ported: benchmarks.DEVIATIONS)
Every judge sees the answer after </think> (the fork's option matcher does so; for the others a 16k-token trace
would not fit a judge's context).
"""

import http.client
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import rewards
from scorers import answer_segment, can_infer

MCQ_PROMPT = (
    'You are an AI assistant who will help me to match '
    'an answer with several options of a single-choice question. '
    'You are provided with a question, several options, and an answer, '
    'and you need to find which option is most similar to the answer. '
    'If the meaning of all options are significantly different from the answer, output Z. '
    'Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n'
    'Example 1: \n'
    'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
    'Answer: a cute teddy bear\nYour output: A\n'
    'Example 2: \n'
    'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
    'Answer: Spider\nYour output: Z\n'
    'Example 3: \n'
    'Question: {}?\nOptions: {}\nAnswer: {}\nYour output: '
)
WEMATH_PROMPT = (
    'You are an AI assistant who will help me to match '
    'an answer with several options of a single-choice question. '
    'You are provided with a question, several options, and an answer, '
    'and you need to find which option is most similar to the answer. '
    'If the meaning of all options are significantly different from the answer, output Z. '
    'Your should output a single uppercase character in A, B, C, D, E, F, G (if they are valid options), and Z. \n'
    'Example 1: \n'
    'Question: <start>\nWhat is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n<end>\n'
    'Answer: <start>\na cute teddy bear\n<end>\nYour output: A\n'
    'Example 2: \n'
    'Question: <start>\nWhat is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n<end>\n'
    'Answer: <start>\nSpider\n<end>\nYour output: Z\n'
    'Example 3: \n'
    'Question: <start>\n{}\nOptions: {}\n<end>\nAnswer: <start>\n{}\n<end>\nYour output: '
)
YORN_PROMPT = (
    'You are an AI assistant who will help me to match an answer with two options of a question. '
    'The options are only Yes / No. '
    'You are provided with a question and an answer, '
    'and you need to find which option (Yes / No) is most similar to the answer. '
    'If the meaning of all options are significantly different from the answer, output Unknown. '
    'Your should output a single word among the following 3 choices: Yes, No, Unknown.\n'
    'Example 1: \n'
    "Question: Is the word in this image 'Hello'?\nAnswer: The word in this image is 'Hello'.\nYour output: Yes\n"
    'Example 2: \n'
    "Question: Is the word in this image 'Hello'?\n"
    "Answer: The word in this image is not 'Hello'.\nYour output: No\n"
    'Example 3: \n'
    'Question: {}?\nAnswer: {}\nYour output: '
)
LETTERS_PROMPT = (
    "You are a information extractor that extracts multiple choice letter answer choices "
    "from a paragraph that contains the answer choice and sometimes explaination of why that "
    "choice is correct to the given question.\n"
    "What letter did the following answer choose? If the answer did not select a letter answer choice, "
    "first try to infer the answer based off the given choices.\n"
    "If it does not seem like the given answer corresponds to an answer choice OR if there is no selected answer, "
    "please just respond with Z.\n"
    "Make sure you answer with ONLY the letters chosen.\n"
    'Example 1: \n'
    'Question: <start>\nWhat is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n<end>\n'
    'Answer: <start>\na cute teddy bear\n<end>\nYour output: A\n'
    'Example 2: \n'
    'Question: <start>\nWhat is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n<end>\n'
    'Answer: <start>\nSpider\n<end>\nYour output: Z\n'
    'Example 3: \n'
    'Question: <start>\nWhich figure is a rotation of the object?\n<end>\n'
    'Answer: <start>\nThe figure on the right, labeled "D," is a rotation of the object shown in the top left '
    'corner.\n<end>\nYour output: D\n'
    'Example 4: \n'
    'Question: <start>\nWhich of the boxes comes next in the sequence? Select from A-E\n<end>\n'
    'Answer: <start>\nThe sequence of the boxes is A, B, C, D, E.\n<end>\nYour output: ABCDE\n'
    'Example 5: \n'
    'Question: <start>\n{}\n<end>\nAnswer: <start>\n{}\n<end>\nYour output: '
)
# a plain Python string there, so "\b" of "\boxed" is a backspace character: kept as sent
YESNO_PROMPT = """
You are given a question, the correct answer, and a model's answer. Decide whether the model's answer matches the correct answer.

Ignore formatting differences such as LaTeX syntax, symbols, or wrappers (e.g., \boxed, $...$). Focus only on semantic or mathematical correctness.

If the model's answer is correct, respond with "Yes". Otherwise, respond with "No". Only output "Yes" or "No".

Question:
{question}
---
Correct Answer:
{answer}
---
Model Answer:
{model_response}
---
"""  # noqa: E501

# MathVerse (eval/vlmevalkit/vlmeval/dataset/utils/mathverse.py L8-115): a GPT extraction with six in-context
# examples, then a 0/1 consistency judgement with four; verbatim, as the code there builds them (its "{{3}}"
# are literal double braces: the examples are not format strings)
MATHVERSE_EXTRACT_PREFIX = (
    '\n'
    "I am providing you a response from a model to a math problem, termed 'Model Response'. You should extract the answer from the response as 'Extracted Answer'. Directly output the extracted answer with no explanation.\n"
    '\n'
    '\n'
    '\n'
    '1.\n'
    "Model response: 'Rounded to two decimal places, the perimeter of the sector is approximately:\n"
    '\n'
    "(-2, 1)'\n"
    'Extracted Answer: (-2, 1)\n'
    '\n'
    '\n'
    '\n'
    '2.\n'
    "Model response: 'at those points.\n"
    '\n'
    'Therefore, the correct option that represents the meaning of the intersection points of the graphs is:\n'
    '\n'
    'D. They give the solutions to the equation $f(t)=g(t)$.",\'\n'
    'Extracted Answer: D\n'
    '\n'
    '\n'
    '\n'
    '3.\n'
    "Model response: ' at 1 (there's a closed circle at y = 1), the range in interval notation is \\((-4, 1]\\).\n"
    '\n'
    'Final values:\n'
    'Domain: \\((-3, 3]\\)\n'
    "Range: \\((-4, 1]\\)'\n"
    'Extracted Answer: Domain: \\((-3, 3]\\)\n'
    'Range: \\((-4, 1]\\)\n'
    '\n'
    '\n'
    '\n'
    '4.\n'
    "Model response: 'As it stands, I cannot provide the correct option letter because there isn't enough information to solve for 'y'.'\n"
    'Extracted Answer: null\n'
    '\n'
    '\n'
    '\n'
    '5.\n'
    "Model response: 'Given that AB = 17.6 meters, we can now substitute into the equation:\n"
    '\n'
    'd = 17.6 / cos(38°)\n'
    '\n'
    "Therefore, to one decimal place, the distance d between Ned and Bart is approximately 22.3 meters.'\n"
    'Extracted answer: 22.3\n'
    '\n'
    '\n'
    '\n'
    '6.\n'
    'Model response:  have all the coefficients for the quadratic function:\n'
    '\\( f(x) = ax^2 + bx + c \\)\n'
    '\\( f(x) = -1x^2 - 2x + 1 \\)\n'
    '\n'
    'Therefore, the equation for the graphed function \\( f \\) is:\n'
    '\\( f(x) = -x^2 - 2x + 1 \\)"\'\n'
    'Extracted answer: f(x) = -x^2 - 2x + 1\n'
    '\n'
    '\n'
    '7.\n')  # noqa: E501
MATHVERSE_SCORE_PREFIX = (
    '\n'
    "Below are two answers to a math question. Question is [Question], [Standard Answer] is the standard answer to the question, and [Model_answer] is the answer extracted from a model's output to this question.  Determine whether these two answers are consistent.\n"
    'Please note that only when the [Model_answer] completely matches the [Standard Answer] means they are consistent. For non-multiple-choice questions, if the meaning is expressed in the same way, it is also considered consistent, for example, 0.5m and 50cm.\n'
    'If they are consistent, Judement is 1; if they are different, Judement is 0.\n'
    '\n'
    '\n'
    '\n'
    '[Question]: Write the set of numbers represented on the number line in interval notation.\n'
    '[Standard Answer]: (-2,1]\n'
    '[Model_answer] : Extracted Answer: \\((-2, 1)\\)\n'
    'Judgement: 0\n'
    '\n'
    '\n'
    '\n'
    '[Question]: As shown in the figure, circle O has a radius 1.0, if angle BAC = 60.0, then the length of BC is ()\n'
    'Choices:\n'
    'A:2\n'
    'B:2√{{3}}\n'
    'C:√{{3}}\n'
    'D:2√{{2}}\n'
    '[Standard Answer]: C\n'
    '[Model_answer] : B:2√{{3}}\n'
    'Judgement: 0\n'
    '\n'
    '\n'
    '\n'
    '[Question]: Find the domain and range of the function f using interval notation.\n'
    '[Standard Answer]: domain: [-4, 0) and range: (-3, 1]\n'
    '[Model_answer] : Range: \\((-4, 1]\\)\n'
    'Judgement: 0\n'
    '\n'
    '\n'
    '\n'
    '[Question]: As shown in the figure, circle O has a radius 1.0, if angle BAC = 60.0, then the length of BC is ()\n'
    'Choices:\n'
    'A:2\n'
    'B:2√{{3}}\n'
    'C:√{{3}}\n'
    'D:2√{{2}}\n'
    '[Standard Answer]: C\n'
    '[Model_answer] : null\n'
    'Judgement: 0\n'
    '\n'
    '\n')  # noqa: E501

# MathVision (eval/vlmevalkit/vlmeval/dataset/utils/mathv.py L42-97 build_mathv_gpt4_prompt): the extraction
# prompt with its five examples, verbatim; the question and 'Model respone: ' + answer follow
MATHV_EXTRACT_PREFIX = (
    '\n'
    'Please read the following example.\n'
    'Then extract the answer from the model response and type it at the end of the prompt.\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the final answer at the end.\n'
    '\n'
    'Question: Which number is missing?\n'
    '\n'
    'Model response: The number missing in the sequence is 14.\n'
    '\n'
    'Extracted answer: 14\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the final answer at the end.\n'
    '\n'
    'Question: What is the fraction of females facing the camera?\n'
    '\n'
    'Model response: The fraction of females facing the camera is 0.6,\n'
    'which means that six out of ten females in the group are facing the camera.\n'
    '\n'
    'Extracted answer: 0.6\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the final answer at the end.\n'
    '\n'
    'Question: How much money does Luca need to buy a sour apple candy and a butter-scotch candy? (Unit: $)\n'
    '\n'
    'Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.\n'
    '\n'
    'Extracted answer: 1.45\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the final answer at the end.\n'
    '\n'
    'Question: Between which two years does the line graph saw its maximum peak?\n'
    '\n'
    'Model response: The line graph saw its maximum peak between 2007 and 2008.\n'
    '\n'
    'Extracted answer: [2007, 2008]\n'
    '\n'
    '\n'
    'Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n'
    '\n'
    'Question: What fraction of the shape is blue?\n'
    '\n'
    'Choices: (A) 3/11 (B) 8/11 (C) 6/11 (D) 3/5\n'
    '\n'
    'Model response: The correct answer is (B) 8/11.\n'
    '\n'
    'Extracted answer: B\n'
    '\n')  # noqa: E501


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
    return "mcq_or_open"


def needs_judge(item, verdict):
    """Whether to ask the judge about an answer the rules scored: only wrong ones, and for HallusionBench only
    those without a Yes/No (VLMEvalKit sends just the 'Unknown' extractions to YOrN_auxeval)."""
    if verdict["correct"]:
        return False
    return not (judge_kind(item.benchmark) == "yorn" and verdict.get("parsed_pred") in ("Yes", "No"))


def mathv_equal(answer, gold):
    """MathVision's is_equal without eval() or latex2sympy: equal lower-cased, or numbers within 1e-6."""
    answer, gold = str(answer).lower().strip(), str(gold).lower().strip()
    if answer == gold:
        return True
    try:
        return abs(float(answer) - float(gold)) < 1e-6
    except (ValueError, OverflowError):
        return False


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
    if judge_kind(item.benchmark) != "mathverse":
        return judge.ask(*judge_request(item, response, options))
    gold = str(item.answer).strip()
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

    def ask(self, prompt, tries, parse):
        self.count("asked")
        replied = False
        for attempt in range(tries):
            if self.down:
                break
            payload = {"model": self.model, "temperature": 0.5 * attempt, "max_tokens": self.max_tokens,
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
