"""
MME-Reasoning's checker-scored rows: an answer is right when it solves the puzzle (or matches the gold in the
row's own way), not when it equals a gold string. The rules follow the reference checkers (SkyworkAI/Skywork-R1V
@ b806cef, eval/vlmevalkit/vlmeval/dataset/utils/mme_reasoning.py, "L" below: judge_24points_function L1035,
sudoku_4 L877, sudoku_6 L922, skyscraper L795, yinyang L965, hashi L701, calculate_answer_function_1..12
L348-620, match_answer_function L622, match_coordinate_function L633, multiple_match_function L647,
compare_expression_function L657, choice_function L687); the code is ours (no eval() of model text: expressions
are walked as arithmetic trees, golds read with ast.literal_eval).

Each row names its checker in `function_id`, its gold in `answer` (a Python literal for the match/compare
functions) and carries the puzzle in `special_info` (JSON): init_cards (24 points), base_matrix (the givens,
None = blank), visible_skyscrapers, init_islands (hashi). The reference first has an LLM rewrite the response
into the checker's input (JSON per prompt_id); our rules read it from the answer itself (check_response), and
only when that fails does judges.mme_judge have the judge rewrite it.
"""

import ast
import json
import operator
import re
from fractions import Fraction

import rewards
from scorers import answer_segment

# -----------------------------------------------------------------------------
# 24 points: an expression over exactly the given cards that equals 24

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def arithmetic_value(node, numbers):
    """Exact value of + - * / over integer literals (and unary minus); every literal is appended to numbers."""
    if isinstance(node, ast.Expression):
        return arithmetic_value(node.body, numbers)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        numbers.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in OPS:
        left, right = arithmetic_value(node.left, numbers), arithmetic_value(node.right, numbers)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ZeroDivisionError
        return OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -arithmetic_value(node.operand, numbers)
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def left_side_tree(expression):
    """'expr = ...' -> ast of expr (× ÷ \\times \\div as * /), or None when it is empty, too long or not Python."""
    left = str(expression).replace("×", "*").replace("÷", "/").replace("\\times", "*").replace("\\div", "/")
    left = left.replace(" ", "").split("=")[0]
    if not left or len(left) > 200:
        return None
    try:
        return ast.parse(left, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def check_24points(expression, init_cards):
    """The left side of '=' uses the cards exactly once each (as a multiset) and equals 24 (reference: eval of
    the left side == 24 and the sorted integers in it == sorted init_cards)."""
    tree, numbers = left_side_tree(expression), []
    try:
        value = arithmetic_value(tree, numbers) if tree is not None else None
    except (ValueError, ZeroDivisionError, RecursionError, MemoryError):
        return False
    return value == 24 and sorted(numbers) == sorted(int(c) for c in init_cards)


def terms(node, op):
    """The operands of a chain of one operator kind, as sympy's parse_expr(evaluate=False) flattens them
    (sympy/parsing/sympy_parser.py L1105-1170, EvaluateFalseTransformer.flatten): a - b is a + (-b) and a / b is
    a * b^-1 (so 1+2+3 has three terms, (1+2)*3 two factors)."""
    kinds = (ast.Add, ast.Sub) if op == "+" else (ast.Mult, ast.Div)
    if isinstance(node, ast.BinOp) and type(node.op) in kinds:
        if isinstance(node.op, (ast.Add, ast.Mult)):   # a + (b + c) flattens; a - (b + c) is a + (-(b + c))
            return terms(node.left, op) + terms(node.right, op)
        return terms(node.left, op) + [("-" if op == "+" else "1/") + canonical(node.right)]
    return [canonical(node)]


def canonical(node):
    """An order-free string of an arithmetic tree: sums and products as sorted operand lists (sympy prints
    commuted terms alike)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return "+(" + ",".join(sorted(terms(node, "+"))) + ")"
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        return "*(" + ",".join(sorted(terms(node, "*"))) + ")"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return f"^({canonical(node.left)},{canonical(node.right)})"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return ("-" if isinstance(node.op, ast.USub) else "") + canonical(node.operand)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return repr(node.value)
    if isinstance(node, ast.Name):
        return node.id
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def same_expression(equation, gold_equations):
    """compare_expression_function (L657): the left sides have the same top operator, and for a sum or product
    the same number of operands with the same set of operands; otherwise the same tree. Any one gold suffices."""
    def top(tree):
        for op, kinds in (("+", (ast.Add, ast.Sub)), ("*", (ast.Mult, ast.Div))):
            if isinstance(tree, ast.BinOp) and type(tree.op) in kinds:
                return op, terms(tree, op)
        return "leaf", [canonical(tree)]
    tree = left_side_tree(equation)
    try:
        op, args = top(tree) if tree is not None else (None, None)
    except (ValueError, RecursionError):
        return False
    for gold in gold_equations:
        try:
            gold_tree = left_side_tree(gold)
            gold_op, gold_args = top(gold_tree) if gold_tree is not None else (None, None)
        except (ValueError, RecursionError):
            continue
        if op is not None and op == gold_op and len(args) == len(gold_args) and set(args) == set(gold_args):
            return True
    return False

# -----------------------------------------------------------------------------
# grid puzzles: the response grid keeps every given cell and obeys the puzzle's rules


def keeps_givens(grid, base):
    n = len(base)
    if not isinstance(grid, list) or len(grid) != n or any(not isinstance(r, list) or len(r) != n for r in grid):
        return False
    return all(base[i][j] is None or base[i][j] == grid[i][j] for i in range(n) for j in range(n))


def all_distinct(cells, n):
    return len(set(map(str, cells))) == n


def check_sudoku(grid, base, box_rows, box_cols):
    """n x n Latin square whose box_rows x box_cols boxes hold n distinct values (4x4: 2x2 boxes; 6x6: 2x3)."""
    n = box_rows * box_cols
    if len(base) != n or not keeps_givens(grid, base):
        return False
    lines = grid + [[row[j] for row in grid] for j in range(n)]
    boxes = [[grid[r][c] for r in range(r0, r0 + box_rows) for c in range(c0, c0 + box_cols)]
             for r0 in range(0, n, box_rows) for c0 in range(0, n, box_cols)]
    return all(all_distinct(cells, n) for cells in lines + boxes)


def visible(line):
    """Towers seen from the start of the line: each one taller than all before it."""
    seen, tallest = 0, None
    for h in line:
        if tallest is None or h > tallest:
            seen, tallest = seen + 1, h
    return seen


def check_skyscraper(grid, base, clues):
    """Latin square; clues = [top (per column, looking down), left (per row), right (per row, looking left),
    bottom (per column, looking up)], None = no clue."""
    n = len(base)
    if not keeps_givens(grid, base) or any(not isinstance(h, int) for row in grid for h in row):
        return False
    columns = [[row[j] for row in grid] for j in range(n)]
    if not all(all_distinct(line, n) for line in grid + columns):
        return False
    views = [columns, grid, [r[::-1] for r in grid], [c[::-1] for c in columns]]
    return all(clue is None or visible(line) == clue
               for side, lines in zip(clues, views) for clue, line in zip(side, lines))


def connected(grid, value):
    cells = {(r, c) for r, row in enumerate(grid) for c, v in enumerate(row) if v == value}
    if not cells:
        return True
    stack, seen = [next(iter(cells))], set()
    while stack:
        r, c = stack.pop()
        if (r, c) in seen:
            continue
        seen.add((r, c))
        stack += [p for p in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)) if p in cells]
    return seen == cells


def check_yinyang(grid, base):
    """0/1 grid: the givens kept, each colour one orthogonally connected region, no 2x2 block of one colour."""
    if not keeps_givens(grid, base) or any(v not in (0, 1) for row in grid for v in row):
        return False
    n = len(grid)
    blocks = any(grid[r][c] == grid[r][c + 1] == grid[r + 1][c] == grid[r + 1][c + 1]
                 for r in range(n - 1) for c in range(n - 1))
    return connected(grid, 0) and connected(grid, 1) and not blocks


def check_hashi(bridges, init_islands):
    """calculate_answer_function_hashi (L701-792), rule by rule as there: bridges [{"start": "b1", "end": "b3",
    "number": 1 or 2}] (letter = column, number = row) between distinct given islands, orthogonal, at most 2 per
    pair, every island's bridge count equal to its requirement, and no grid cell strictly between two islands
    used by two bridges (so, as in the reference, a pair listed twice counts as crossing). Like the reference it
    does not check that the islands end up connected or that a bridge passes over an island."""
    requirement = {island["cord"]: island["requirement"] for island in init_islands}

    def cell(cord):   # "b3" -> (column 1, row 3)
        return ord(cord[0]) - ord("a"), int(cord[1:])
    if not isinstance(bridges, list) or not bridges:
        return False
    per_pair, per_island, used = {}, dict.fromkeys(requirement, 0), set()
    for bridge in bridges:
        if not isinstance(bridge, dict) or type(bridge.get("number")) is not int:
            return False
        start, end, number = str(bridge.get("start")), str(bridge.get("end")), bridge["number"]
        if start == end or start not in requirement or end not in requirement:
            return False
        (x0, y0), (x1, y1) = cell(start), cell(end)
        if x0 != x1 and y0 != y1:
            return False
        pair = tuple(sorted((start, end)))
        per_pair[pair] = per_pair.get(pair, 0) + number
        if per_pair[pair] > 2:
            return False
        per_island[start] += number
        per_island[end] += number
    if per_island != requirement:
        return False
    for bridge in bridges:
        (x0, y0), (x1, y1) = cell(bridge["start"]), cell(bridge["end"])
        between = ([(x0, y) for y in range(min(y0, y1) + 1, max(y0, y1))] if x0 == x1
                   else [(x, y0) for x in range(min(x0, x1) + 1, max(x0, x1))])
        if used & set(between):
            return False
        used |= set(between)
    return True

# -----------------------------------------------------------------------------
# number-placement puzzles: calculate_answer_function_1..12 (L348-620). Each: the letters a response must
# assign, what its values (all of them, as the reference takes response_dict.values()) must be, and the sums


def numbers_only(values):
    return all(type(v) in (int, float) for v in values)


LETTERS = "ABCDEFGHIJKLMNOPQRS"
# n -> (keys, the exact set of values (None: any), lines, each line's sum); 1, 10, 11, 12 are written out
PLACEMENTS = {
    2: (LETTERS[:6], None, ["ABC", "CEF", "ADF"], 25),
    3: (LETTERS[:15], set(range(1, 16)), ["ADEH", "CEGH", "IGJH", "NMJH", "OMHL", "KLHF", "BFHD"], 30),
    4: (LETTERS[:9], set(range(1, 10)), ["ABED", "BCEF", "DEGH", "EFHI", "BDHF", "ACIG"], 20),
    5: (LETTERS[:17], None, ["ABC", "AGO", "OPQ", "CKQ", "ADINQ", "CFILO", "BEIMP", "GHIJK"], 55),
    6: (LETTERS[:19], set(range(1, 20)), ["AJS", "CJQ", "EJO", "GJM", "IJK", "LJH", "NJF", "PJD", "RJB"], 30),
    7: (LETTERS[:12], set(range(1, 13)), ["ACFH", "ADGK", "BCDE", "HIJK", "BFIL", "EGJL"], 26),
    8: (LETTERS[:13], None, ["ABC", "AFK", "BDE", "BEH", "CHM", "DGJ", "EGI", "FIL", "HJI", "KLM"], 20),
    9: (LETTERS[:19], set(range(1, 20)),
        ["ABC", "ADH", "AEJ", "CFJ", "CGL", "HIJ", "HMQ", "JKL", "JNQ", "JOS", "LPS", "QRS"], 22),
}


def check_placement(n, values):
    """calculate_answer_function_n on {letter: number}."""
    if not isinstance(values, dict):
        return False
    if n == 12:   # CAT + DOG = PETS (L612)
        if any(k not in values for k in "CATDOGPES") or not numbers_only(values[k] for k in "CATDOGPES"):
            return False
        v = values
        return 100 * v["C"] + 10 * v["A"] + v["T"] + 100 * v["D"] + 10 * v["O"] + v["G"] == (
            1000 * v["P"] + 100 * v["E"] + 10 * v["T"] + v["S"])
    keys = {1: "ABC", 10: "ABCDEF", 11: "ABCDEFG"}.get(n) or PLACEMENTS[n][0]
    if any(k not in values for k in keys) or not numbers_only(values.values()):
        return False
    v, present = values, list(values.values())
    if n == 1:   # A / B == 3 and C / B == 2 (L348)
        return v["B"] != 0 and v["A"] / v["B"] == 3 and v["C"] / v["B"] == 2
    if n == 10:   # a permutation of 1..6 with A+B+D = D+E+F = A+C+F (L578)
        return set(present) == set(range(1, 7)) and v["A"] + v["B"] + v["D"] == v["D"] + v["E"] + v["F"] == (
            v["A"] + v["C"] + v["F"])
    if n == 11:   # values {1,2,3,5,7,8}; A+C+9 = B+C+D = F+E+D = E+G+6 = 19 (L592)
        return set(present) == {1, 2, 3, 5, 7, 8} and v["A"] + v["C"] + 9 == v["B"] + v["C"] + v["D"] == (
            v["F"] + v["E"] + v["D"]) == v["E"] + v["G"] + 6 == 19
    _, allowed, lines, total = PLACEMENTS[n]
    if allowed is not None and set(present) != allowed:
        return False
    if n == 5:   # only 20/15/10/5, at most 5/3/3/6 of each (L428)
        limits = {20: 5, 15: 3, 10: 3, 5: 6}
        if any(x not in limits for x in present) or any(present.count(x) > m for x, m in limits.items()):
            return False
    if n == 8 and (any(not 1 <= x <= 15 for x in present) or len(present) != len(set(present))):
        return False   # distinct, each in 1..15 (L515)
    return all(sum(v[k] for k in line) == total for line in lines)

# -----------------------------------------------------------------------------
# answers compared with the gold in the row's own way (L622-698)


def as_set(value):
    return frozenset(map(str, value)) if isinstance(value, (list, tuple, set)) else value


def match_answer(values, gold):
    """match_answer_function: every gold key has the gold value (lists compared as sets)."""
    return isinstance(values, dict) and all(as_set(values.get(k)) == as_set(v) for k, v in gold.items())


def match_coordinates(cells, gold):
    """match_coordinate_function: the same (row, column) cells in the same order; gold a dict or a list."""
    def keys(cs):
        return [f"{c['row']}{c['column']}" for c in ([cs] if isinstance(cs, dict) else cs)]
    try:
        return keys(cells) == keys(gold)
    except (KeyError, TypeError):
        return False


def multiple_match(value, golds):
    """multiple_match_function: the one answer is one of the golds (lists compared as sets)."""
    return as_set(value) in [as_set(g) for g in golds]


def same_choices(text, gold):
    """choice_function: the same set of comma-separated choices (a list gold joined by commas)."""
    gold = ",".join(map(str, gold)) if isinstance(gold, (list, tuple)) else str(gold)
    return {a.strip() for a in str(text).split(",")} == {a.strip() for a in gold.split(",")}

# -----------------------------------------------------------------------------
# a response -> the checker's input -> verdict


def last_grid(text):
    """The last [[...], ...] literal in the text (None when there is none that parses)."""
    for match in reversed(list(re.finditer(r"\[\s*\[[^\[\]]*\](?:\s*,\s*\[[^\[\]]*\])*\s*\]", text))):
        try:
            grid = ast.literal_eval(match.group(0).replace("null", "None"))
        except (ValueError, SyntaxError, RecursionError, MemoryError):
            continue
        if isinstance(grid, list) and all(isinstance(r, list) for r in grid):
            return grid
    return None


def literal(text):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def last_literal(text, opening, closing, kind):
    """The last {...} / [...] in the text that parses (JSON or Python) as `kind`, or None. Only the last 20
    openings and literals up to 5,000 characters are tried (a long trace stays cheap)."""
    for start in reversed([m.start() for m in re.finditer(re.escape(opening), text)][-20:]):
        end = text.find(closing, start)
        while end != -1 and end - start < 5000:
            candidate = text[start:end + 1]
            value = literal(candidate.replace("null", "None").replace("true", "True").replace("false", "False"))
            if isinstance(value, kind):
                return value
            end = text.find(closing, end + 1)
    return None


def scalar(text):
    text = text.strip().strip("'\"").strip()
    value = literal(text)
    return value if type(value) in (int, float) else text


def read_pairs(text):
    """'A: 5, B = 1' / '1: A' -> {key: value}: the reference's JSON object, when the answer has none."""
    found = re.findall(r"([A-Za-z0-9]+)\s*[:=]\s*([^,;\n]+)", text)
    return {k: scalar(v) for k, v in found} or None


def read_dict(answer, segment):
    return last_literal(answer, "{", "}", dict) or read_pairs(answer) or last_literal(segment, "{", "}", dict)


def read_cells(answer, segment):
    """[{"row": "A", "column": 1}, ...] as given, or every '(A, 1)' of the answer in order."""
    cells = last_literal(answer, "[", "]", list) or last_literal(segment, "[", "]", list)
    if cells and all(isinstance(c, dict) for c in cells):
        return cells
    found = re.findall(r"\(\s*([A-Za-z])\s*,\s*(\d+)\s*\)", answer)
    return [{"row": r, "column": int(c)} for r, c in found] or None


def read_bridges(answer, segment):
    """[{"start": "a1", "end": "b1", "number": 2}, ...] as given, or every 'a1-b1: 2' of the answer."""
    bridges = last_literal(answer, "[", "]", list) or last_literal(segment, "[", "]", list)
    if bridges and all(isinstance(b, dict) for b in bridges):
        return bridges
    found = re.findall(r"\b([a-z]\d+)\s*-\s*([a-z]\d+)\s*:\s*(\d)", answer)
    return [{"start": a, "end": b, "number": int(n)} for a, b, n in found] or None


def read_one_answer(answer, segment, golds):
    """multiple_match's one value: a list (split at commas) when the golds are lists, else one scalar."""
    value = last_literal(answer, "{", "}", dict) or last_literal(segment, "{", "}", dict)
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value.values()))
    if golds and isinstance(golds[0], list):
        return [scalar(a) for a in answer.strip("[]").split(",") if a.strip()]
    return scalar(answer)


def read_equation(answer, segment):
    value = last_literal(answer, "{", "}", dict) or last_literal(segment, "{", "}", dict)
    return str(value["equation"]) if isinstance(value, dict) and "equation" in value else answer


READERS = {   # what a response must give -> reader(extracted answer, text after </think>, gold)
    "expression": lambda a, s, g: a,
    "grid": lambda a, s, g: last_grid(a) or last_grid(s),
    "dict": lambda a, s, g: read_dict(a, s),
    "cells": lambda a, s, g: read_cells(a, s),
    "bridges": lambda a, s, g: read_bridges(a, s),
    "one": lambda a, s, g: read_one_answer(a, s, g),
    "equation": lambda a, s, g: read_equation(a, s),
    "text": lambda a, s, g: a,
}
# function_id -> (what the response must give, whether the gold is a literal it needs, check(parsed, info, gold))
CHECKERS = {
    "judge_24points_function": ("expression", False, lambda e, s, g: check_24points(e, s["init_cards"])),
    "calculate_answer_function_sudoku_4": ("grid", False, lambda x, s, g: check_sudoku(x, s["base_matrix"], 2, 2)),
    "calculate_answer_function_sudoku_6": ("grid", False, lambda x, s, g: check_sudoku(x, s["base_matrix"], 2, 3)),
    "calculate_answer_function_skyscraper": ("grid", False, lambda x, s, g: check_skyscraper(
        x, s["base_matrix"], s["visible_skyscrapers"])),
    "calculate_answer_function_yinyang": ("grid", False, lambda x, s, g: check_yinyang(x, s["base_matrix"])),
    "calculate_answer_function_hashi": ("bridges", False, lambda b, s, g: check_hashi(b, s["init_islands"])),
    **{f"calculate_answer_function_{n}": ("dict", False, lambda d, s, g, n=n: check_placement(n, d))
       for n in range(1, 13)},
    "match_answer_function": ("dict", True, lambda d, s, g: match_answer(d, g)),
    "match_coordinate_function": ("cells", True, lambda c, s, g: match_coordinates(c, g)),
    "multiple_match_function": ("one", True, lambda v, s, g: multiple_match(v, g)),
    "compare_expression_function": ("equation", True, lambda e, s, g: same_expression(e, g)),
    "choice_function": ("text", False, lambda t, s, g: same_choices(t, literal(str(g)) or str(g))),
}


def check_response(function_id, special_info, response, gold=None, where="", rewritten=None):
    """-> (correct, parsed). special_info: the row's JSON (str, "" = none) or dict; gold: the row's answer (a
    Python literal for the match/compare functions). parsed is None when the answer holds nothing of the kind the
    checker reads (scored wrong). rewritten: the judge's rewrite of the response (JSON-decoded, or the text for
    24 points and choices), checked instead of what we read from the answer (judges.mme_judge)."""
    if function_id not in CHECKERS:
        raise ValueError(f"{where}: no checker for function_id {function_id!r} (have {sorted(CHECKERS)})")
    if isinstance(special_info, str):
        try:
            special_info = json.loads(special_info) if special_info.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: special_info is not JSON: {e}") from None
    wants, needs_gold, check = CHECKERS[function_id]
    if needs_gold:
        gold = gold if isinstance(gold, (list, dict)) else literal(str(gold))
        if not isinstance(gold, (list, dict)):
            raise ValueError(f"{where}: {function_id} needs the answer as a Python list/dict literal")
    if rewritten is None:
        parsed = READERS[wants](rewards.extract_answer(response), answer_segment(response), gold)
    elif wants == "one" and isinstance(rewritten, dict) and len(rewritten) == 1:   # {"id": [...]} (L647)
        parsed = next(iter(rewritten.values()))
    elif wants == "equation" and isinstance(rewritten, dict):                      # {"equation": ...} (L657)
        parsed = str(rewritten.get("equation", ""))
    else:
        parsed = rewritten
    if parsed is None or parsed == "" or parsed == []:
        return False, None
    try:
        return bool(check(parsed, special_info, gold)), parsed
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{where}: special_info lacks what {function_id} needs ({type(e).__name__}: {e})") from None
