"""
MME-Reasoning's checker-scored puzzles: an answer is right when it solves the puzzle, not when it equals a gold
string. The rules follow the reference checkers (SkyworkAI/Skywork-R1V @ b806cef,
eval/vlmevalkit/vlmeval/dataset/utils/mme_reasoning.py: judge_24points_function L1035, sudoku_4 L877,
sudoku_6 L922, skyscraper L795, yinyang L965); the code is ours (no eval() of model text: the 24-points
expression is walked as an arithmetic tree).

Each row names its checker in `function_id` and carries the puzzle in `special_info` (JSON): init_cards (24
points), base_matrix (the givens, None = blank) and visible_skyscrapers. The reference first has an LLM rewrite
the response into the checker's input; without one we read it from the answer itself (check_response).
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


def check_24points(expression, init_cards):
    """The left side of '=' uses the cards exactly once each (as a multiset) and equals 24 (reference: eval of
    the left side == 24 and the sorted integers in it == sorted init_cards)."""
    left = str(expression).replace("×", "*").replace("÷", "/").replace("\\times", "*").replace("\\div", "/")
    left = left.replace(" ", "").split("=")[0]
    if not left or len(left) > 200:
        return False
    numbers = []
    try:
        value = arithmetic_value(ast.parse(left, mode="eval"), numbers)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError):
        return False
    return value == 24 and sorted(numbers) == sorted(int(c) for c in init_cards)

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


CHECKERS = {   # function_id -> (what the response must give, check(parsed, special_info))
    "judge_24points_function": ("expression", lambda e, s: check_24points(e, s["init_cards"])),
    "calculate_answer_function_sudoku_4": ("grid", lambda g, s: check_sudoku(g, s["base_matrix"], 2, 2)),
    "calculate_answer_function_sudoku_6": ("grid", lambda g, s: check_sudoku(g, s["base_matrix"], 2, 3)),
    "calculate_answer_function_skyscraper": ("grid", lambda g, s: check_skyscraper(
        g, s["base_matrix"], s["visible_skyscrapers"])),
    "calculate_answer_function_yinyang": ("grid", lambda g, s: check_yinyang(g, s["base_matrix"])),
}


def check_response(function_id, special_info, response, where=""):
    """-> (correct, parsed). special_info: the row's JSON (str) or dict. parsed is None when the answer holds no
    expression/grid (scored wrong)."""
    if function_id not in CHECKERS:
        raise ValueError(f"{where}: no checker for function_id {function_id!r} (have {sorted(CHECKERS)})")
    if isinstance(special_info, str):
        try:
            special_info = json.loads(special_info)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: special_info is not JSON: {e}") from None
    wants, check = CHECKERS[function_id]
    answer = rewards.extract_answer(response)
    parsed = answer if wants == "expression" else (last_grid(answer) or last_grid(answer_segment(response)))
    if not parsed:
        return False, None
    try:
        return bool(check(parsed, special_info)), parsed
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{where}: special_info lacks what {function_id} needs ({type(e).__name__}: {e})") from None
