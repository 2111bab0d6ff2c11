"""MME-Reasoning's checkers beyond the grid puzzles (puzzles.py): hashi, calculate_answer_function_1..12, the
match/compare functions, each on hand-made valid and invalid answers, and check_response reading them from a
response without an LLM rewrite. The solutions were also checked against the reference functions
(mme_reasoning.py @ b806cef) when this was written; the reference is not imported here."""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytest

import benchmarks as B
import puzzles
from test_benchmarks import b64, write_tsv

# -----------------------------------------------------------------------------
# hashi


def test_hashi_checker_follows_the_reference_rules():
    islands = [{"cord": "a1", "requirement": 1}, {"cord": "c1", "requirement": 3}, {"cord": "c3", "requirement": 2}]
    solution = [{"start": "a1", "end": "c1", "number": 1}, {"start": "c3", "end": "c1", "number": 2}]
    assert puzzles.check_hashi(solution, islands)
    assert not puzzles.check_hashi(solution[:1] + [{"start": "c1", "end": "c3", "number": 1}], islands)  # c3 short
    assert not puzzles.check_hashi([{"start": "a1", "end": "c3", "number": 1}] + solution[1:], islands)  # diagonal
    assert not puzzles.check_hashi(solution + [{"start": "c1", "end": "c3", "number": 1}], islands)   # 3 on a pair
    assert not puzzles.check_hashi([{"start": "a1", "end": "z9", "number": 1}], islands)              # no island
    assert not puzzles.check_hashi([{"start": "a1", "end": "c1", "number": "1"}], islands)            # not a count
    # b1-b3 and a2-c2 both pass b2: a crossing
    crossing = [{"cord": c, "requirement": 1} for c in ("b1", "b3", "a2", "c2")]
    assert not puzzles.check_hashi([{"start": "b1", "end": "b3", "number": 1},
                                    {"start": "a2", "end": "c2", "number": 1}], crossing)
    text = "</think>Bridges: a1-c1: 1, c1-c3: 2"
    info = json.dumps({"init_islands": islands})
    assert puzzles.check_response("calculate_answer_function_hashi", info, text)[0]
    assert puzzles.check_response("calculate_answer_function_hashi", info, "</think>" + json.dumps(solution))[0]
    assert not puzzles.check_response("calculate_answer_function_hashi", info, "</think>a1-c1: 1")[0]

# -----------------------------------------------------------------------------
# number placement: calculate_answer_function_1..12


VALID = {   # found by a search, then checked by hand against each function's sums
    1: {"A": 6, "B": 2, "C": 4},
    2: {"A": 10, "B": 5, "C": 10, "D": 5, "E": 5, "F": 10},
    3: {"A": 1, "D": 8, "E": 14, "H": 7, "C": 5, "G": 4, "I": 13, "J": 6, "N": 15, "M": 2, "O": 10, "L": 11, "K": 9,
        "F": 3, "B": 12},
    4: {"A": 1, "B": 6, "E": 5, "D": 8, "C": 7, "F": 2, "G": 3, "H": 4, "I": 9},
    5: {"A": 20, "B": 20, "C": 15, "G": 15, "O": 20, "P": 15, "Q": 20, "K": 20, "D": 5, "I": 5, "N": 5, "F": 10,
        "L": 5, "E": 10, "M": 5, "H": 10, "J": 5},
    6: {"J": 10, **{a: 10 - i for i, a in enumerate("ACEGILNPR", 1)},   # A + S = C + Q = ... = 20
        **{b: 10 + i for i, b in enumerate("SQOMKHFDB", 1)}},
    7: {"A": 1, "C": 2, "F": 11, "H": 12, "D": 9, "G": 10, "K": 6, "B": 8, "E": 7, "I": 3, "J": 5, "L": 4},
    9: {"A": 1, "B": 9, "C": 12, "D": 18, "H": 3, "E": 19, "J": 2, "F": 8, "G": 6, "L": 4, "I": 17, "M": 14, "Q": 5,
        "K": 16, "N": 15, "O": 13, "S": 7, "P": 11, "R": 10},
    10: {"A": 1, "B": 4, "C": 6, "D": 5, "E": 2, "F": 3},
    12: {"C": 1, "A": 0, "T": 0, "D": 9, "O": 0, "G": 0, "P": 1, "E": 0, "S": 0},   # 100 + 900 = 1000
}


def swap(values, a, b):
    out = dict(values)
    out[a], out[b] = values[b], values[a]
    return out


@pytest.mark.parametrize("n", sorted(VALID))
def test_placement_checkers_on_valid_and_invalid_answers(n):
    values = VALID[n]
    assert puzzles.check_placement(n, values)
    assert not puzzles.check_placement(n, {k: v for k, v in values.items() if k != "A"})   # a letter missing
    assert not puzzles.check_placement(n, {**values, "A": "x"})                            # not a number
    broken = {1: {**values, "C": 5}, 2: {**values, "D": 6}, 5: swap(values, "A", "C"), 12: {**values, "S": 1}}
    assert not puzzles.check_placement(n, broken.get(n) or swap(values, "A", "B"))


def test_placement_value_rules():
    # 5: only 20/15/10/5, at most six 5s; 8: distinct values in 1..15 (its lines B+D+E and B+E+H force D = H,
    # so, as in the reference, no answer passes); 11: the values are exactly {1, 2, 3, 5, 7, 8}
    assert not puzzles.check_placement(5, {**VALID[5], "A": 25})
    assert not puzzles.check_placement(5, dict.fromkeys(VALID[5], 5))
    assert not puzzles.check_placement(8, dict(zip("ABCDEFGHIJKLM", [7, 6, 7, 3, 11, 7, 6, 3, 6, 11, 6, 7, 7])))
    assert not puzzles.check_placement(11, {"A": 1, "C": 9, "B": 5, "D": 5, "E": 8, "F": 6, "G": 5})   # 9, 6 used
    text = "</think>The answer: A: 6, B: 2, C: 4"
    assert puzzles.check_response("calculate_answer_function_1", "", text) == (True, {"A": 6, "B": 2, "C": 4})
    boxed_json = '</think>\\boxed{{"A": 6, "B": 2, "C": 5}}'   # a JSON object in the box: C / B is not 2
    assert puzzles.check_response("calculate_answer_function_1", "", boxed_json) == (False, {"A": 6, "B": 2, "C": 5})

# -----------------------------------------------------------------------------
# answers matched or compared with the gold


def test_match_functions_against_the_gold():
    assert puzzles.match_answer({"1": "A", "2": ["x", "y"]}, {"1": "A", "2": ["y", "x"]})   # lists as sets
    assert not puzzles.match_answer({"1": "B", "2": ["x", "y"]}, {"1": "A", "2": ["y", "x"]})
    assert puzzles.match_coordinates([{"row": "A", "column": 1}], {"row": "A", "column": 1})
    cells = [{"row": "A", "column": 1}, {"row": "B", "column": 3}]
    assert not puzzles.match_coordinates(cells[::-1], cells)                                 # order counts
    assert puzzles.multiple_match(["C", "A"], [["A", "C"], ["B"]]) and not puzzles.multiple_match(["A"], [["A", "C"]])
    assert puzzles.multiple_match(7, [5, 7]) and not puzzles.multiple_match(6, [5, 7])
    assert puzzles.same_choices("C, A", ["A", "C"]) and not puzzles.same_choices("A", "A, C")
    respond = puzzles.check_response
    assert respond("match_coordinate_function", "", "</think>So (A, 1) and (B, 3).", "[{'row': 'A', 'column': 1}, "
                   "{'row': 'B', 'column': 3}]")[0]
    assert respond("match_answer_function", "", "</think>\\boxed{1: A, 2: C}", "{'1': 'A', '2': 'C'}")[0]
    assert not respond("match_answer_function", "", "</think>\\boxed{1: A, 2: B}", "{'1': 'A', '2': 'C'}")[0]
    assert respond("multiple_match_function", "", "</think>\\boxed{C, A}", "[['A', 'C'], ['B', 'D']]")[0]
    assert respond("choice_function", "", "</think>\\boxed{C, A}", "['A', 'C']")[0]
    assert respond("choice_function", "", "</think>\\boxed{2, 1}", "1, 2")[0]   # a gold that reads as a tuple
    with pytest.raises(ValueError, match="row 7: match_answer_function needs the answer as a Python list/dict"):
        respond("match_answer_function", "", "</think>\\boxed{1: A}", "A", where="row 7")


def test_compare_expression_like_sympy_unevaluated():
    golds = ["(3+5)*3=24", "8*3=24"]
    assert puzzles.same_expression("3*(5+3)=24", golds)        # a product of the same factors, commuted inside
    assert puzzles.same_expression("3*8 = 24", golds)
    assert not puzzles.same_expression("(3+5)*3*1=24", golds)  # three factors, not two
    assert not puzzles.same_expression("3*5+3*3=24", golds)    # a sum, not a product
    assert puzzles.same_expression("1+2+3=6", ["3+(2+1)=6"])   # sums flatten through a +
    assert not puzzles.same_expression("1-2-3", ["1-(2+3)"])   # a - (b + c) is a + (-(b + c)): two terms
    assert not puzzles.same_expression("__import__('os')", golds)
    assert puzzles.check_response("compare_expression_function", "", "</think>\\boxed{3 \\times 8 = 24}",
                                  "['(3+5)*3=24', '8*3=24']")[0]


def test_mme_reasoning_tsv_rows_use_the_new_checkers(tmp_path):
    header = ["index", "question", "answer", "function_id", "special_info", "question_type", "image"]
    islands = json.dumps({"init_islands": [{"cord": "a1", "requirement": 1}, {"cord": "c1", "requirement": 1}]})
    write_tsv(tmp_path / "MME-Reasoning.tsv", header,
              [[0, "Link them", "", "calculate_answer_function_hashi", islands, "open", b64((5, 5, 5))],
               [1, "Which cell?", "{'row': 'B', 'column': 2}", "match_coordinate_function", "", "open",
                b64((5, 5, 6))]])
    first, second = B.load_items(tmp_path / "MME-Reasoning.tsv")
    assert B.own_rule_verdict(first, "</think>a1-c1: 1")["correct"]
    assert not B.own_rule_verdict(first, "</think>a1-c1: 2")["correct"]
    assert B.own_rule_verdict(second, "</think>It is (B, 2).")["correct"]
    assert not B.own_rule_verdict(second, "</think>It is (B, 3).")["correct"]
