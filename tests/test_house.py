"""The house rules that a reader can check without running anything: no import circles among the repository's
top-level modules, and no top-level .py file over ~650 lines. Pure AST and line counts: no project module is
imported, so this costs milliseconds."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 650


def top_level_modules():
    return {p.stem: p for p in sorted(ROOT.glob("*.py"))}


def import_graph(modules):
    """module -> the top-level modules it imports anywhere in its file (a function-level import closes a circle
    at run time just as well as one at the top)."""
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        graph[name] = sorted(imported & modules.keys() - {name})
    return graph


def find_cycle(graph):
    """The first import circle found by depth-first search, as [a, b, ..., a], or None."""
    state = {}   # absent: unvisited; 1: on the current path; 2: done

    def visit(node, path):
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep, path + [dep])):
                return cycle
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_a_circle_through_a_function_level_import(tmp_path):
    # the shape of the rewards <-> rule_check circle: one side imports the other inside a function
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from c import X\n")
    (tmp_path / "c.py").write_text("import os\nimport a\n")
    modules = {p.stem: p for p in tmp_path.glob("*.py")}
    graph = import_graph(modules)
    assert graph == {"a": ["b"], "b": ["c"], "c": ["a"]}
    assert find_cycle(graph) in (["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"])
    (tmp_path / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(modules)) is None


def test_no_import_circles():
    graph = import_graph(top_level_modules())
    assert "model" in graph["train_utils"]   # the graph sees the real imports
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_no_file_over_the_line_limit():
    lines = {name + ".py": len(path.read_text().splitlines()) for name, path in top_level_modules().items()}
    over = {f: n for f, n in lines.items() if n > MAX_LINES}
    assert not over, f"over {MAX_LINES} lines (split by concept): {over}"
