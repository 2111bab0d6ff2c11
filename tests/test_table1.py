"""Table 1: each benchmark's reported metric on a fixture in its own layout (by hand), the MME-Reasoning checkers,
the judges against a stub endpoint, and launch.sh table1's dry run."""
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import benchmarks as B
import eval as E
import judges
import puzzles
import rewards
import stub_server
import tables
from test_benchmarks import b64, png_bytes, write_tsv


def summarize(path, responses, **cfg):
    """A TSV fixture and {(id, sample): response} -> eval.py's run summary (scored as eval.main does)."""
    items = B.load_items(path)
    k = 1 + max(s for _, s in responses)
    gens = {key: {"response": r, "num_tokens": 3} for key, r in responses.items()}
    scored = E.score_run(items, gens, E.EvalConfig(k=k, reward_workers=0, **cfg), "think")
    return E.summarize_run(scored, rewards.UNSEEN_IMAGE_PHRASES, B.scorer_family(items[0].benchmark), items), scored

# -----------------------------------------------------------------------------
# metrics


def test_circular_eval_counts_a_question_only_if_every_rotation_is_right(tmp_path):
    # VLMEvalKit's MMBench TSV: rotation r of question q has index q + r * 1e6 and its options shifted
    header = ["index", "question", "A", "B", "C", "D", "answer", "image"]
    img = b64((9, 9, 9))
    rows = [[0, "q0", "w", "x", "y", "z", "A", img], [1000000, "q0", "x", "y", "z", "w", "D", img],
            [2000000, "q0", "y", "z", "w", "x", "C", img], [3000000, "q0", "z", "w", "x", "y", "B", img],
            [1, "q1", "a", "b", "", "", "B", img], [1000001, "q1", "b", "a", "", "", "A", img]]
    write_tsv(tmp_path / "MMBench_DEV_EN_V11.tsv", header, rows)
    golds = {str(r[0]): r[6] for r in rows}
    # sample 0: rotation 3000000 of q0 wrong (5 of 6 rows right, 1 of 2 questions); sample 1: all right
    responses = {(i, 0): f"</think>\\boxed{{{'A' if i == '3000000' else g}}}" for i, g in golds.items()}
    responses.update({(i, 1): f"</think>\\boxed{{{g}}}" for i, g in golds.items()})
    summary, _ = summarize(tmp_path / "MMBench_DEV_EN_V11.tsv", responses)
    assert summary["plain_accuracy"] == pytest.approx((5 / 6 + 1) / 2)
    assert summary["per_run"] == pytest.approx([0.5, 1.0])        # circular: q0 fails in run 0
    assert summary["accuracy"] == pytest.approx(0.75) and summary["std"] == pytest.approx(0.5 ** 0.5 / 2)
    assert summary["metric"] == "CircularEval acc." and summary["judge"]["by"] == "rules"


def test_hallusionbench_aacc_facc_qacc_differ(tmp_path):
    # index fields 3, 4, 5 = set, figure, question (VLMEvalKit Hallusion_rating); the gold is Yes / No
    header = ["index", "question", "answer", "category", "l2-category", "image"]
    rows = []   # (set, figure, question, right?)
    marks = [(0, 0, 0, True), (0, 0, 1, True), (0, 1, 0, False), (0, 1, 1, True), (1, 0, 0, True), (1, 1, 0, False)]
    responses = {}
    for n, (st, fig, q, right) in enumerate(marks):
        index = f"VD_chart_x_{st}_{fig}_{q}"
        gold = "Yes" if n % 2 else "No"
        rows.append([index, f"Is it {n}?", gold, "VD", "chart", b64((n, 0, 0))])
        said = gold if right else ("No" if gold == "Yes" else "Yes")
        responses[(index, 0)] = f"<think>yes or no, hmm</think>{said}, I think."
    write_tsv(tmp_path / "HallusionBench.tsv", header, rows)
    summary, _ = summarize(tmp_path / "HallusionBench.tsv", responses)
    parts = summary["parts"]
    # by hand: 4/6 rows; figures (0,0) (0,1) (1,0) (1,1) -> 2/4 all right; questions (0,q0) (0,q1) (1,q0) -> 1/3
    assert (parts["aAcc"], parts["fAcc"], parts["qAcc"]) == pytest.approx((4 / 6, 2 / 4, 1 / 3))
    assert summary["accuracy"] == pytest.approx((4 / 6 + 2 / 4 + 1 / 3) / 3)
    assert summary["metric"] == "mean(aAcc, fAcc, qAcc)"


def test_wemath_four_dimensions_and_strict_loose_scores(tmp_path):
    header = ["index", "ID", "key", "question", "A", "B", "answer", "image"]
    img = b64((1, 1, 1))
    # (step 1, step 2, whole problem) right?  -> IK, IG, CM, RM (strict); loose: the 4th is complete mastery
    problems = [(False, True, False), (True, True, False), (True, True, True), (False, True, True)]
    rows, responses, n = [], {}, 0
    for pid, marks in enumerate(problems):
        for part, right in zip(["2steps_1", "2steps_2", "2steps_multi"], marks):
            rows.append([n, f"p{pid}", part, f"q{n}", "yes", "no", "A", img])
            responses[(str(n), 0)] = f"</think>Answer: \\boxed{{{'A' if right else 'B'}}}"
            n += 1
    rows.append([n, "p9", "1step", "one-step row", "yes", "no", "A", img])   # not in the four dimensions
    responses[(str(n), 0)] = "</think>\\boxed{B}"
    write_tsv(tmp_path / "WeMath.tsv", header, rows)
    summary, _ = summarize(tmp_path / "WeMath.tsv", responses)
    parts = summary["parts"]
    assert {k: parts[k] for k in ("IK", "IG", "CM_strict", "RM_strict", "CM_loose", "RM_loose")} == \
        {"IK": 1, "IG": 1, "CM_strict": 1, "RM_strict": 1, "CM_loose": 2, "RM_loose": 0}
    assert summary["accuracy"] == pytest.approx((4 - 0.5 - 1 - 1) / 4)          # Score (Strict) 37.5
    assert parts["loose"] == pytest.approx((4 - 0.5 - 0 - 1) / 4)              # Score (Loose) 62.5
    assert summary["plain_accuracy"] == pytest.approx(8 / 13)
    assert summary["metric"] == "Score (Strict)"


def test_multi_letter_golds_and_mathvision_choices(tmp_path):
    header = ["index", "question", "answer", "image"]
    write_tsv(tmp_path / "LogicVista.tsv", header, [[0, "Which two?", "A, C", b64((2, 2, 2))]])
    responses = {("0", 0): "</think>\\boxed{AC}", ("0", 1): "</think>The answer is A and C",
                 ("0", 2): "</think>\\boxed{A}", ("0", 3): "</think>\\boxed{ACD}"}
    _, scored = summarize(tmp_path / "LogicVista.tsv", responses)
    assert [s["correct"] for s in scored] == [True, True, False, False]
    header = ["index", "question", "answer", "choices", "image"]
    write_tsv(tmp_path / "MathVision.tsv", header, [[0, "Which? (A) 3 (B) 5 (C) 7", "B", "['3', '5', '7']",
                                                    b64((3, 3, 3))]])
    _, scored = summarize(tmp_path / "MathVision.tsv", {("0", 0): "</think>\\boxed{5}", ("0", 1): "</think>\\boxed{7}",
                                                        ("0", 2): "</think>\\boxed{B}"})
    assert [s["correct"] for s in scored] == [True, False, True]

# -----------------------------------------------------------------------------
# MME-Reasoning checkers


def test_24_points_checker():
    cards = [8, 4, 7, 1]
    assert puzzles.check_24points("(8-4)*(7-1)=24", cards)
    assert puzzles.check_24points("(7 - 1) × (8 - 4)", cards)
    assert not puzzles.check_24points("(8-4)*(7-1)+0=24", cards)      # a number not dealt
    assert puzzles.check_24points("8*4-7-1", cards)                     # 32 - 8
    assert not puzzles.check_24points("(8+4)*(7-1)", cards)             # 72
    assert not puzzles.check_24points("8*3", cards)                     # wrong cards
    assert not puzzles.check_24points("__import__('os').getpid()", cards)
    assert not puzzles.check_24points("8/(4-4)", cards)


def test_grid_checkers_on_valid_and_invalid_solutions():
    sudoku4 = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    base4 = [[1, None, None, None], [None, None, 1, None], [None, None, None, 3], [None, 3, None, None]]
    assert puzzles.check_sudoku(sudoku4, base4, 2, 2)
    assert not puzzles.check_sudoku([[2, 1, 3, 4]] + sudoku4[1:], base4, 2, 2)           # a given changed
    latin_not_sudoku = [[1, 2, 3, 4], [2, 3, 4, 1], [3, 4, 1, 2], [4, 1, 2, 3]]           # boxes repeat
    assert not puzzles.check_sudoku(latin_not_sudoku, [[None] * 4] * 4, 2, 2)
    sudoku6 = [[1, 2, 3, 4, 5, 6], [4, 5, 6, 1, 2, 3], [2, 3, 1, 5, 6, 4], [5, 6, 4, 2, 3, 1],
               [3, 1, 2, 6, 4, 5], [6, 4, 5, 3, 1, 2]]
    assert puzzles.check_sudoku(sudoku6, [[None] * 6] * 6, 2, 3)
    assert not puzzles.check_sudoku([[2, 1, 3, 4, 5, 6]] + sudoku6[1:], [[None] * 6] * 6, 2, 3)   # columns repeat
    sky = [[1, 2, 3], [3, 1, 2], [2, 3, 1]]
    clues = [[2, 2, 1], [3, 1, None], [1, 2, 2], [2, 1, 3]]   # top, left, right, bottom: counted by hand
    assert puzzles.check_skyscraper(sky, [[None] * 3] * 3, clues)
    assert not puzzles.check_skyscraper(sky, [[None] * 3] * 3, [[3, 2, 1]] + clues[1:])
    assert not puzzles.check_skyscraper(sky, [[2, None, None]] + [[None] * 3] * 2, clues)   # a given changed
    yinyang = [[0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 0], [0, 1, 0, 0, 1, 0], [0, 1, 0, 1, 1, 0],
               [0, 1, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]]
    base6 = [[0] + [None] * 5] + [[None] * 6] * 5
    assert puzzles.check_yinyang(yinyang, base6)
    cut_off = [row[:] for row in yinyang]
    cut_off[4][3] = 1   # the inner 0s (2,2) (2,3) (3,2) (4,2) lose their way out
    assert not puzzles.check_yinyang(cut_off, base6)
    assert not puzzles.check_yinyang([[0] * 6] * 6, base6)                           # 2x2 blocks of 0
    assert not puzzles.check_yinyang([[1] + row[1:] for row in yinyang], base6)      # the given 0 changed
    response = "</think>The grid is [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]."
    special = {"base_matrix": base4}
    assert puzzles.check_response("calculate_answer_function_sudoku_4", special, response)[0]
    assert not puzzles.check_response("calculate_answer_function_sudoku_4", special, "</think>no grid")[0]


def test_mme_reasoning_rows_are_scored_by_their_checker(tmp_path):
    header = ["index", "question", "answer", "function_id", "special_info", "question_type", "image"]
    info = json.dumps({"init_cards": [8, 4, 7, 1]})
    write_tsv(tmp_path / "MME-Reasoning.tsv", header,
              [[0, "Make 24", "(8-4)*(7-1)", "judge_24points_function", info, "open", b64((5, 5, 5))]])
    responses = {("0", 0): "</think>\\boxed{(7-1)*(8-4)=24}", ("0", 1): "</think>\\boxed{8*4-7+1}",
                 ("0", 2): "</think>\\boxed{6*4}", ("0", 3): "</think>\\boxed{8*4-7-1}"}
    _, scored = summarize(tmp_path / "MME-Reasoning.tsv", responses)
    # valid answers other than the listed one are right; 24 from cards not dealt is wrong
    assert [s["correct"] for s in scored] == [True, False, False, True]
    item = B.load_items(tmp_path / "MME-Reasoning.tsv")[0]
    item.extra["special_info"] = "{not json"
    with pytest.raises(ValueError, match="MME-Reasoning 0: special_info is not JSON"):
        B.own_rule_verdict(item, "\\boxed{1}")

# -----------------------------------------------------------------------------
# judges on a local stub endpoint


@pytest.fixture
def stub_judge():
    """An OpenAI-compatible stub: answers each prompt by the first rule in `replies` whose key it contains."""
    seen, replies = [], {}

    def respond(handler, request):
        seen.append(request)
        prompt = request["messages"][0]["content"]
        stub_server.reply_chat(handler, next((v for k, v in replies.items() if k in prompt), "no idea"))

    with stub_server.chat_endpoint(respond) as url:
        yield url, seen, replies


def test_judge_prompts_verdicts_and_unparseable_replies(tmp_path, stub_judge):
    url, seen, replies = stub_judge
    header = ["index", "question", "answer", "category", "l2-category", "image"]
    rows = [[f"VS_t_x_0_0_{q}", f"Is it case {q}", "Yes", "VS", "t", b64((q, 1, 1))] for q in range(4)]
    write_tsv(tmp_path / "HallusionBench.tsv", header, rows)
    replies.update({"Is it case 1?": "Yes", "Is it case 2?": "Maybe", "Is it case 3?": "Yes"})
    said = ["It clearly is, yes.", "Hard to say.", "Hard to say.", "No."]
    responses = {(r[0], 0): f"</think>{said[n]}" for n, r in enumerate(rows)}
    summary, scored = summarize(tmp_path / "HallusionBench.tsv", responses, verifier_url=url, verifier_model="j")
    # row 0: the rules read "Yes"; row 1: the judge says Yes; row 2: five replies, none a Yes or No; row 3: a
    # definite (wrong) "No" is not sent to the judge
    assert [(s["correct"], s["judge"]) for s in scored] == [(True, "rules"), (True, "model"), (False, "unparseable"),
                                                            (False, "rules")]
    assert summary["judge"] == {"by": "rules+model", "samples": {"rules": 2, "model": 1, "unparseable": 1,
                                                                 "failed": 0}}
    assert not any("Is it case 3?" in r["messages"][0]["content"] for r in seen)
    case1 = [r for r in seen if "Is it case 1?" in r["messages"][0]["content"]]
    case2 = [r for r in seen if "Is it case 2?" in r["messages"][0]["content"]]
    assert len(case1) == 1 and [r["temperature"] for r in case2] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert case1[0]["model"] == "j"
    assert case1[0]["messages"][0]["content"] == judges.YORN_PROMPT.format("Is it case 1", "Hard to say.")
    assert judges.YORN_PROMPT.startswith("You are an AI assistant who will help me to match an answer with two")


def test_mathverse_judge_extracts_then_scores(tmp_path, stub_judge):
    url, seen, replies = stub_judge
    header = ["index", "question", "question_for_eval", "answer", "image"]
    write_tsv(tmp_path / "MathVerse_MINI_Vision_Only.tsv", header,
              [[0, "", "How far is Bart?", "22.3", b64((6, 6, 6))], [1, "", "How many?", "6", b64((6, 6, 7))]])
    replies.update({"Model response: 'So d is about twenty-two point three.'": "22.3",
                    "Model response: 'It is five.'": "5", "[Model_answer] : 5\n": "0"})
    responses = {("0", 0): "</think>So d is about twenty-two point three.", ("1", 0): "</think>It is five."}
    summary, scored = summarize(tmp_path / "MathVerse_MINI_Vision_Only.tsv", responses, verifier_url=url)
    assert [(s["correct"], s["judge"]) for s in scored] == [(True, "model"), (False, "model")]
    prompts = [r["messages"][0]["content"] for r in seen]
    assert len(prompts) == 3 and sum(p.startswith(judges.MATHVERSE_SCORE_PREFIX) for p in prompts) == 1
    score = next(p for p in prompts if p.startswith(judges.MATHVERSE_SCORE_PREFIX))
    assert score.endswith("\n    [Question]: How many?\n    [Standard Answer]: 6\n    [Model_answer] : 5\n"
                          "    Judgement:")
    assert judges.MATHVERSE_EXTRACT_PREFIX.startswith("\nI am providing you a response from a model to a math")



def test_emma_phyx_seephys_and_mme_open_judges_use_their_own_prompts(stub_judge):
    url, seen, replies = stub_judge
    judge = judges.Judge(url, "j")
    prompts = lambda: [r["messages"][0]["content"] for r in seen]   # noqa: E731

    def item(benchmark, answer, options=None, question="Q?"):
        return B.EvalItem(id="1", question=question, answer=answer, images=[], options=options or {},
                          benchmark=benchmark)
    # EMMA: score_demo_prompt, "Correct" / "Incorrect"; anything else is counted, not guessed (one try, as there)
    emma = item("EMMA-mini", "B", {"A": "left", "B": "right"})
    replies.update({"Response: the right one": "Correct", "Response: the other one": "Perhaps"})
    assert judges.judge_answer(judge, emma, "<think>x</think>the right one", emma.options) == (True, "model")
    assert prompts()[-1] == judges.EMMA_SCORE_PROMPT.strip() + "\nResponse: the right one\nAnswer: B\nCorrect_or_not:"
    assert prompts()[-1].startswith("Please read the following example. Then determine whether the response is "
                                    "correct and type it \nat the end")
    assert judges.judge_answer(judge, emma, "</think>the other one", emma.options) == (None, "unparseable")
    # PhyX (multiple choice): its letter extraction decides when it finds a letter; else the MC judge prompt
    phyx = item("PhyX_mini_MC", "C", dict(zip("ABCD", "1234")))
    asked = len(seen)
    assert judges.judge_answer(judge, phyx, "</think>The correct answer is C", phyx.options) == (True, "rules")
    assert judges.judge_answer(judge, phyx, "</think>My answer is B", phyx.options) == (False, "rules")
    assert len(seen) == asked
    replies.update({"Predicted answer: the third one \n": "Judegement: 1", "Predicted answer: no clue \n": "?"})
    assert judges.judge_answer(judge, phyx, "</think>the third one", phyx.options) == (True, "model")
    assert prompts()[-1] == (judges.PHYX_MC_TASK + "".join(e + "\n" for e in judges.PHYX_MC_EXAMPLES)
                             + "Ground truth answer: C \nPredicted answer: the third one \nJudegement:")
    assert judges.judge_answer(judge, phyx, "</think>no clue", phyx.options) == (None, "unparseable")
    # SeePhys: the rule extraction equal to the gold decides; else extract, then score 0/1 (5 tries at 0.3 i)
    seephys = item("SeePhys", "3", question="Speed?")
    assert judges.judge_answer(judge, seephys, "</think>The answer is: 3.", {}) == (True, "rules")
    replies.update({"Model response: About three m/sExtracted answer:": "3 m/s",
                    "[Model Answer]: 3 m/s\nJudgement: ": "Judgement: 1",
                    "Model response: UnclearExtracted answer:": "Unclear", "[Model Answer]: Unclear\n": "perhaps"})
    assert judges.judge_answer(judge, seephys, "</think>About three m/s", {}) == (True, "model")
    extract, score = prompts()[-2:]
    assert extract == (judges.SEEPHYS_EXTRACT_TASK + "".join(e + "\n" for e in judges.SEEPHYS_EXTRACT_EXAMPLES)
                       + "Speed?\nModel response: About three m/sExtracted answer:")
    assert score == judges.SEEPHYS_SCORE_PROMPT.strip() + ("\n[Question]: Speed?\n[Standard Answer]: 3\n"
                                                           "[Model Answer]: 3 m/s\nJudgement: ")
    assert judges.judge_answer(judge, seephys, "</think>Unclear", {}) == (None, "unparseable")
    assert [r["temperature"] for r in seen[-5:]] == pytest.approx([0, 0.3, 0.6, 0.9, 1.2])
    # MME-Reasoning: the row's extraction prompt rewrites the response, then MMEReasoning_openeval's 0/1 prompt
    # (open questions) or the row's checker scores the rewrite
    mme = item("MME-Reasoning", "12", question="How many?")
    mme.extra["question_type"] = "open"
    replies.update({"Model Response: Twelve, I think.\n": "twelve", "[Model answer]: twelve\n": "1"})
    assert judges.judge_answer(judge, mme, "</think>Twelve, I think.", {}) == (True, "model")
    assert prompts()[-2] == judges.EXTRACT_PROMPTS["open_question_prompt"].format(question="How many?",
                                                                                 response="Twelve, I think.")
    assert prompts()[-1] == judges.MME_OPEN_PROMPT.format(question="How many?", answer="12", response="twelve")
    assert judge.counts == {"asked": 10, "model": 7, "unparseable": 3, "failed": 0}   # per call (SeePhys: 2)
    puzzle = B.EvalItem(id="2", question="Find A, B, C", answer="", images=[], options={}, benchmark="MME-Reasoning",
                        extra={"function_id": "calculate_answer_function_1", "prompt_id": "id_answer_pair_prompt"})
    replies.update({"Model Response: six, two and four": '```json\n{"A": 6, "B": 2, "C": 4}\n```',
                    "Model Response: six, two and five": '{"A": 6, "B": 2, "C": 5}',
                    "Model Response: lots": "A is six"})
    assert judges.judge_answer(judge, puzzle, "</think>six, two and four", {}) == (True, "model")
    assert prompts()[-1].startswith("Please read the following example. Then extract the answer from the model "
                                    "response") and "    Question: Find A, B, C\n" in prompts()[-1]
    assert judges.judge_answer(judge, puzzle, "</think>six, two and five", {}) == (False, "model")
    assert judges.judge_answer(judge, puzzle, "</think>lots", {}) == (None, "unparseable")   # never JSON
    puzzle.extra["prompt_id"] = "no_such_prompt"
    with pytest.raises(ValueError, match="MME-Reasoning 2: prompt_id 'no_such_prompt' is not one of"):
        judges.judge_answer(judge, puzzle, "</think>lots", {})


def test_mme_reasoning_checker_rows_go_to_the_rewrite_only_when_the_rules_cannot_read_them(tmp_path, stub_judge):
    url, seen, replies = stub_judge
    header = ["index", "question", "answer", "function_id", "prompt_id", "special_info", "question_type", "image"]
    info = json.dumps({"init_cards": [8, 4, 7, 1]})
    write_tsv(tmp_path / "MME-Reasoning.tsv", header,
              [[0, "Make 24", "", "judge_24points_function", "points24_prompt", info, "open", b64((5, 5, 5))]])
    replies.update({"Model Response: Seven minus one, times eight minus four.": "(7-1)*(8-4)=24"})
    responses = {("0", 0): "</think>\\boxed{(8-4)*(7-1)}", ("0", 1): "</think>Seven minus one, times eight minus four."}
    summary, scored = summarize(tmp_path / "MME-Reasoning.tsv", responses, verifier_url=url)
    assert [(s["correct"], s["judge"]) for s in scored] == [(True, "rules"), (True, "model")]
    assert len(seen) == 1 and seen[0]["messages"][0]["content"].startswith("\nPlease read the following examples. "
                                                                           "Then extract the final formula")

def test_mathvision_is_equal_uses_latex2sympy():
    assert judges.mathv_equal("\\frac{1}{2}", "0.5") and judges.mathv_equal("0.5", "\\frac{1}{2}")
    assert judges.mathv_equal("\\sqrt{2}", "1.41421356") and judges.mathv_equal("x+1", "1+x")
    assert not judges.mathv_equal("\\frac{1}{3}", "0.33") and not judges.mathv_equal("2", "3")
    assert not judges.mathv_equal("\\frac{", "0.5") and not judges.mathv_equal("1" * 400, "1" * 399 + "2")

def test_mcq_and_letters_judges_parse_like_vlmevalkit():
    item = B.EvalItem(id="1", question="Pet?", answer="B", images=[], options={"A": "cat", "B": "dog"},
                      benchmark="MMStar")
    prompt, tries, parse = judges.judge_request(item, "<think>x</think>woof", item.options)
    assert tries == 3 and prompt.endswith("Question: Pet??\nOptions: A. cat\nB. dog\n\nAnswer: woof\nYour output: ")
    assert (parse("B"), parse("A"), parse("A or B"), parse("nothing")) == (True, False, None, None)
    mv = B.EvalItem(id="4", question="Which? (A) 3 (B) 5", answer="B", images=[], options={},
                    benchmark="MathVision", extra={"choices": "['3', '5']"})
    prompt, tries, parse = judges.judge_request(mv, "</think>five", B.scoring_options(mv))
    assert prompt.startswith(judges.MATHV_EXTRACT_PREFIX) and prompt.endswith(
        "Which? (A) 3 (B) 5\nModel respone: fiveExtracted answer:") and tries == 5
    assert (parse("5"), parse("B"), parse("3"), parse("no idea")) == (True, True, False, False)
    open_mv = B.EvalItem(id="5", question="Area?", answer="2.50", images=[], options={}, benchmark="MathVision")
    _, _, parse = judges.judge_request(open_mv, "x", {})
    assert (parse("2.5"), parse("2.6"), parse("two")) == (True, False, False)
    lv = B.EvalItem(id="2", question="Which?", answer="A, C", images=[], options={}, benchmark="LogicVista")
    _, tries, parse = judges.judge_request(lv, "x", {})
    assert tries == 5 and (parse("CA"), parse("A"), parse("A, C"), parse("ac")) == (True, False, None, None)
    k12 = B.EvalItem(id="3", question="1+1?", answer="2", images=[], options={}, benchmark="MMK12")
    prompt, _, parse = judges.judge_request(k12, "<answer>The answer is $\\boxed{2}$</answer>", {})
    assert "\x08oxed" in prompt and "Model Answer:\nThe answer is $\\boxed{2}$\n---" in prompt
    assert (parse("Yes"), parse(" no "), parse("Yes, it is")) == (True, False, None)

# -----------------------------------------------------------------------------
# launch.sh table1 and the table


def test_table1_dry_run_lists_16_benchmarks_and_names_each_missing_file(tmp_path):
    (tmp_path / "MMStar.parquet").write_bytes(b"")   # present in another layout: not missing, run as it is
    env = dict(os.environ, VENV=sys.prefix, DRY_RUN="1", BENCH_DIR=str(tmp_path))
    out = subprocess.run(["bash", str(REPO / "launch.sh"), "table1"], cwd=REPO, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
    assert "Table 1: 16 benchmarks: MMMU (val), EMMA (mini-cot), MMMU-Pro," in out
    missing = [line for line in out.splitlines() if "missing benchmark" in line]
    assert len(missing) == 16 and not any("MMStar" in line for line in missing)   # 17 files, MMStar found
    evals = [line for line in out.splitlines() if line.startswith("+ ") and "eval.py" in line]
    assert len(evals) == 17 and any("MMStar.parquet" in line for line in evals)
    assert out.index("missing benchmark") < out.index("+ ")


def test_table1_layout_puts_the_paper_column_beside_ours():
    runs = {"MMMU_Pro_10c/think/full": {"accuracy": 0.5, "std": 0.01, "k": 5, "metric": "acc.",
                                        "judge": {"by": "rules", "samples": {}}},
            "MMMU_Pro_V/think/full": {"accuracy": 0.4, "std": 0.02, "k": 5, "metric": "acc.",
                                      "judge": {"by": "rules+model", "samples": {"unparseable": 3}}},
            "MMMU/think/full": {"accuracy": 0.7, "std": 0.0, "k": 5, "metric": "acc.",   # read as hub parquet
                                "judge": {"by": "rules", "samples": {}}}}
    text = tables.table1(runs)
    row = next(line for line in text.splitlines() if line.startswith("| MMMU-Pro "))
    assert row == ("| MMMU-Pro | acc. | 55.4 | 45.0 ± 2.0 (k=5) | rules / rules+model (3 samples without a judge "
                   "verdict) | MMMU_Pro_10c, MMMU_Pro_V |")
    assert "| MMMU (val) | acc. | 76.0 | 70.0 ± 0.0 (k=5) | rules | MMMU_DEV_VAL |" in text
    assert "| MMStar |  | 70.6 | not run |" in text and len([r for r in text.splitlines()
                                                                if r.startswith("| ") and "|---" not in r]) == 21


def test_emma_and_mmk12_parquet_layouts_and_prompts(tmp_path):
    image = {"bytes": png_bytes((7, 8, 9)), "path": None}
    emma = [{"pid": "math_1", "question": "Which is bigger, <image_2> or <image_1>?", "options": ["left", "right"],
             "answer": "B", "type": "Multiple Choice", "context": "Two shapes.", "subject": "Math",
             "image_1": image, "image_2": {"bytes": png_bytes((1, 2, 3)), "path": None}},
            {"pid": "phys_2", "question": "Speed? <image_1>", "options": None, "answer": "3 m/s",
             "type": "Open-ended", "context": None, "subject": "Physics", "image_1": image, "image_2": None}]
    pq.write_table(pa.Table.from_pylist(emma), tmp_path / "EMMA-mini.parquet")
    first, second = B.load_items(tmp_path / "EMMA-mini.parquet")
    assert (first.benchmark, first.id, first.options) == ("EMMA-mini", "math_1", {"A": "left", "B": "right"})
    text, images = B.build_user_text(first)
    assert text == ("Two shapes.\nWhich is bigger, <image> or <image>?\nA: left\nB: right\n\nAnswer with the "
                    "option's letter from the given choices and put the letter in one \"\\boxed{}\". "
                    "Please solve the problem step by step.")
    assert [B.load_rgb(im).getpixel((0, 0)) for im in images] == [(1, 2, 3), (7, 8, 9)]
    text, _ = B.build_user_text(second)
    assert text.startswith("\nSpeed? <image>\nAnswer the question using a single word or phrase")
    pq.write_table(pa.Table.from_pylist([{"id": 5, "question": "Area?", "answer": "4", "image": image,
                                          "subject": "math"}]), tmp_path / "MMK12.parquet")
    (k12,) = B.load_items(tmp_path / "MMK12.parquet")
    messages, images = B.build_messages(k12)
    assert messages[0]["content"] == B.MMK12_SYSTEM_PROMPT and messages[1]["content"] == "<image>\nArea?"


def test_mmmu_pro_and_seephys_prompts(tmp_path):
    img = b64((4, 4, 4))
    header = ["index", "question", "A", "B", "answer", "image"]
    write_tsv(tmp_path / "MMMU_Pro_10c.tsv", header, [[0, "Which <image 1> style?", "x", "y", "A", img]])
    write_tsv(tmp_path / "MMMU_Pro_V.tsv", header, [[0, "Which style is this secret question?", "x", "y", "A", img]])
    text, _ = B.build_user_text(B.load_items(tmp_path / "MMMU_Pro_10c.tsv")[0])
    assert text == ("<image>\nQuestion: Which \n style?\nOptions:\nA. x\nB. y\n"
                    "Answer directly with the option letter from the given choices. ")
    text, images = B.build_user_text(B.load_items(tmp_path / "MMMU_Pro_V.tsv")[0])
    assert text == ("<image>\nAnswer the following multiple-choice question in the image. "
                    "Answer directly with the option letter from the given choices. ") and len(images) == 1
    header = ["index", "question", "answer", "language", "sig_figs", "image"]
    write_tsv(tmp_path / "SeePhys.tsv", header, [[0, "Speed?", "3.0", "English", "2.0", img],
                                                 [1, "速度?", "3", "Chinese", "", img]])
    en, zh = B.load_items(tmp_path / "SeePhys.tsv")
    assert B.build_user_text(en)[0] == ("<image>\nSpeed?\nPlease answer this question with reasoning. First output "
                                        "your reasoning process in <think> </think> tags and then output the final "
                                        "answer in <answer> </answer> tags.The final answer should retain 2 "
                                        "significant figures.")
    assert B.build_user_text(zh)[0].endswith("输入最终答案。")


def test_judge_endpoint_down_is_counted_as_failed_and_switched_off():
    judge = judges.Judge(f"http://127.0.0.1:{stub_server.unused_port()}", "j")
    assert judge.ask("prompt", 5, lambda r: True) == (None, "failed") and judge.down
    assert judge.ask("prompt", 5, lambda r: True) == (None, "failed")   # no second connection attempt
    assert judge.counts == {"asked": 2, "model": 0, "unparseable": 0, "failed": 2}
