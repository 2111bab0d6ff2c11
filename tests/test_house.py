"""The house rules that a reader can check without running anything: no import circles among the repository's
top-level modules, no top-level .py file over ~650 lines, and every import at the top of its file (the GPU-only vLLM
and the optional W&B excepted). Pure AST and line counts: no project module is imported, so this costs
milliseconds."""
import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 650
# imported where they are used: vLLM is GPU-only (requirements-gpu.txt), W&B optional (a missing package only turns
# W&B logging off)
LAZY_IMPORTS = {"vllm", "wandb"}


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


def imports_below_the_top(path):
    """["file:line module"] of the imports inside a function or class of a .py file, vLLM's and W&B's excepted."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name, found = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path, []
    for scope in ast.walk(tree):
        if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(scope):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or "."] if isinstance(node, ast.ImportFrom) else []
            found += [f"{name}:{node.lineno} {n}" for n in names if n.split(".")[0] not in LAZY_IMPORTS]
    return sorted(set(found))


def test_imports_below_the_top_are_found(tmp_path):
    (tmp_path / "a.py").write_text("import os\n\ndef f():\n    import json\n    import vllm\n\n"
                                   "class C:\n    def g(self):\n        from pathlib import Path\n")
    found = imports_below_the_top(tmp_path / "a.py")
    assert [line.split(":")[1] for line in found] == ["4 json", "9 pathlib"]


def test_imports_at_the_top():
    files = []
    for folder, subfolders, names in os.walk(ROOT):   # not into .venv, .git, ...
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    assert any(p.name == "test_house.py" for p in files)   # the walk sees the tests too
    below = [line for path in files for line in imports_below_the_top(path)]
    assert not below, f"imports inside functions (move them to the top of the file): {below}"
