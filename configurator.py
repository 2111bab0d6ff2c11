"""
The one config parser of every entry point (nanoGPT's configurator, with types):

    python grpo.py config/grpo_38b.py --lr=1e-6 --trainable=connector,llm
    python entropy.py --checkpoints A B C --data X

Dataclass defaults <- config files (positional, `key = value` Python, applied in order) <-
--key=value or --key VALUE flags. Every value is type-checked against the field's annotation
(Literal choices included); unknown keys are errors naming the file:line or flag, with
suggestions. It imports no torch, so model.py and rewards.py (whose spawn workers re-import it)
use it too.
"""
import ast
import dataclasses
import difflib
import math
import sys
import types
import typing
from pathlib import Path


def parse_config(cfg_cls_or_instance, argv=None):
    """Dataclass defaults <- config files (positional, `key = value` Python, applied in order) <-
    --key=value or --key VALUE (a list field takes every value up to the next --key: --checkpoints
    A B C). Every value is type-checked against the field's annotation; unknown keys are errors
    with suggestions."""
    is_class = isinstance(cfg_cls_or_instance, type)
    cls = cfg_cls_or_instance if is_class else type(cfg_cls_or_instance)
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"parse_config needs a dataclass, got {cls!r}")
    hints = typing.get_type_hints(cls)
    field_types = {f.name: hints.get(f.name, typing.Any) for f in dataclasses.fields(cls) if f.init}
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(f"usage: {Path(sys.argv[0]).name} [config.py ...] [--key=value ...]\n")
        print_config(cfg_cls_or_instance if not is_class else cls())
        raise SystemExit(0)
    values, flags = {}, []   # flags: [key, raw values, takes more values after it]
    for arg in argv:   # --key=value, or --key VALUE (a list field: --key V1 V2 ...)
        if arg.startswith("--"):
            key, has_value, raw = arg[2:].partition("=")
            tp = field_types.get(key.replace("-", "_"))
            flags.append([key, [raw] if has_value else None, not has_value and tp is not bool, arg])
        elif flags and flags[-1][1] is None and arg.lower() in _BOOL_WORDS and \
                field_types.get(flags[-1][0].replace("-", "_")) is bool:   # --wandb false: the flag's value
            flags[-1] = [flags[-1][0], [arg], False, f"{flags[-1][3]} {arg}"]
        elif flags and flags[-1][2]:
            key, raws, _, text = flags[-1]
            more = _is_list(field_types.get(key.replace("-", "_")))
            flags[-1] = [key, (raws or []) + [arg], more, f"{text} {arg}"]
        else:
            values.update(_read_config_file(arg, field_types))   # positional: a config file
    for key, raws, _, text in flags:
        key = key.replace("-", "_")  # --max-steps is --max_steps
        where = f"command line {text!r}"
        _check_known(key, field_types, where)
        tp = field_types[key]
        if raws is None:
            if tp is not bool:
                raise ValueError(f"{where}: expected --{key}=VALUE ({_type_name(tp)})")
            raws = ["True"]  # a bare --flag switches a bool on
        if len(raws) == 1:
            values[key] = _parse_cli_value(raws[0], tp, where)
        else:   # --checkpoints A B C: each item parsed as the list's element type
            elem = (typing.get_args(tp) or (typing.Any,))[0]
            values[key] = _coerce([_parse_cli_value(r, elem, where) for r in raws], tp, where)
    return cls(**values) if is_class else dataclasses.replace(cfg_cls_or_instance, **values)


def check_values(cfg, positive=(), non_negative=(), nonempty=()):
    """Startup checks of a parsed config, each error naming the field: counts in `positive` must be > 0, those in
    `non_negative` >= 0 (0 = off), lists in `nonempty` non-empty; every float field must be finite, and `lr` in
    (0, 1] (AdamW at lr > 1 diverges at once: --lr=1e3 gave NaN from step 3, --lr=1e999 is inf)."""
    def fail(name, why):
        raise ValueError(f"--{name}={getattr(cfg, name)!r}: {why}")
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            fail(f.name, "must be a finite number")
    if hasattr(cfg, "lr") and not 0 < cfg.lr <= 1:
        fail("lr", "the learning rate must be in (0, 1]")
    for name in positive:
        if not getattr(cfg, name) > 0:
            fail(name, "must be > 0")
    for name in non_negative:
        if not getattr(cfg, name) >= 0:
            fail(name, "must be >= 0 (0 = off)")
    for name in nonempty:
        if not getattr(cfg, name):
            fail(name, "must not be empty")


def check_schedule(name, first_steps):
    """A schedule field's first steps ([(first_step, value), ...] or [(value, first_step), ...]): empty, or
    starting at step 0 and sorted, so that a step's entry is the last one starting at or before it."""
    if first_steps and (first_steps[0] != 0 or first_steps != sorted(first_steps)):
        raise ValueError(f"--{name}: must start at step 0 and be sorted by step, got first steps {first_steps}")


def value_at(step, schedule):
    """schedule [(first_step, value), ...] sorted by step -> the value in force at `step`."""
    return [value for first, value in schedule if first <= step][-1]


def stage_at(step, stages):
    """stages [(data, first_step), ...] -> index of the curriculum stage in force (§5.3)."""
    return [i for i, (_, first) in enumerate(stages) if first <= step][-1]


def _is_list(tp):
    return tp is list or typing.get_origin(tp) is list


def print_config(cfg):
    """Prints `key = value` lines, which are themselves a valid config file."""
    width = max(len(f.name) for f in dataclasses.fields(cfg))
    print("config:")
    for f in dataclasses.fields(cfg):
        print(f"  {f.name:<{width}} = {getattr(cfg, f.name)!r}")


def _read_config_file(path, field_types):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist "
                                f"(positional arguments are config files)")
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    lines = {}  # name -> line of its (last) top-level assignment, for error messages
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            if isinstance(t, ast.Name):
                lines[t.id] = node.lineno
    namespace = {}
    exec(compile(tree, str(path), "exec"), namespace)
    values = {}
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, types.ModuleType):
            continue  # __builtins__, `import math`, private helpers
        where = f"{path}:{lines.get(key, '?')}"
        _check_known(key, field_types, where)
        values[key] = _coerce(value, field_types[key], f"{where}: {key}")
    return values


def _check_known(key, field_types, where):
    if key in field_types:
        return
    close = difflib.get_close_matches(key, field_types, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(close)}?" if close
            else f"known keys: {', '.join(field_types)}")
    raise ValueError(f"{where}: unknown config key {key!r} ({hint})")


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _parse_cli_value(raw, tp, where):
    # candidates in order: a Python literal, the raw string (str fields: --run_name=2024),
    # true/false words (bool fields), a comma list (list[str] fields: --trainable=connector,llm)
    candidates = []
    try:
        candidates.append(ast.literal_eval(raw))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    candidates.append(raw)
    if raw.lower() in _BOOL_WORDS:
        candidates.append(_BOOL_WORDS[raw.lower()])
    candidates.append([s.strip() for s in raw.split(",")])
    for value in candidates:
        try:
            return _coerce(value, tp, where)
        except ValueError:
            pass
    return _coerce(candidates[0], tp, where)  # raises with the most natural reading in the message


def _type_name(tp):
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def _coerce(value, tp, where):
    """value checked against annotation tp (bool/int/float/str/list/tuple/dict/Optional/Union/
    Literal)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    fail = ValueError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is typing.Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(value, a, where)
                except ValueError:
                    pass
        raise fail
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail
        if tp is list or origin is list:
            elem = args[0] if args else typing.Any
            return [_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} items ({_type_name(tp)}), "
                             f"got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise fail
        if not args:
            return dict(value)
        return {_coerce(k, args[0], f"{where} key"): _coerce(v, args[1], f"{where}[{k!r}]")
                for k, v in value.items()}
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise fail
