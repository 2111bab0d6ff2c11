r"""
Synthetic visual-reasoning task for the CPU demo: this repo's "shakespeare_char".

An image is a grid x grid board (default 2x2) on white. Each cell is empty or holds one big filled
shape (circle / square / triangle) in one colour (red / green / blue). A question needs the image
plus a short computation: count the shapes of a kind, add two counts, or (out of domain) subtract
two counts. At image_size 112 (tiny_config's), patch 14 and pixel-shuffle 0.5, every cell of a 2x2
board is a 2x2 block of image tokens, big and high-contrast, so a few-M-parameter model learns to
read it in a few hundred steps on a CPU (given a large enough vision init, see the demo recipe).

Pieces, top to bottom: scenes and their hash split, rendering, questions and gold answers,
multiple-choice options, the scripted teacher that writes <think> traces for cold-start SFT
(paper §2/§3.2) with "Wait"/"Hmm"/"Alternatively" detours (the critical tokens of §5.1), the
caption corpus for the alignment stage, the tokenizer corpus, and the writers. A teacher trace for
"How many shapes are red or blue?" (multiple choice ends with "A. 3: no." ... "C. 2: yes." instead):

    <think>
    Top left: a red circle. Red count: 1.
    Top right: empty.
    Bottom left: a blue square. Blue count: 1.
    Bottom right: a green triangle.
    Red shapes: 1.
    Blue shapes: 1.
    1 + 1 = 2.
    </think>

    The answer is \boxed{2}.

    python synthetic.py --out=data/synthetic --n_train=2000 --seed=1337

writes, next to an images/ folder (paths in the files are relative to the file):
    train/val/test/ood.jsonl  {"id", "images": ["images/x.png"], "question", "answer", "options"?, "meta"}
    sft.jsonl, sft_val.jsonl  {"id", "messages": [user, assistant], "images": [...], "meta"}
    caption.jsonl             the same chat format; assistant content is a description, no <think>
    tokenizer_corpus.jsonl    one JSON string per line, to train chat.build_tiny_tokenizer on (unless
                              --write_tokenizer_corpus=False)
    config.json               the Config used
"""

import dataclasses
import hashlib
import json
import os
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

import configurator
import records


@dataclass
class Config:
    out: str = "data/synthetic"
    seed: int = 1337
    # split sizes (items); train/val/test/ood are RL/eval records, sft* are teacher traces
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 200
    n_ood: int = 200
    n_sft: int = 2000
    n_sft_val: int = 100
    n_caption: int = 2000
    write_tokenizer_corpus: bool = True  # False for data read by a model whose tokenizer was fit on other data
    #                                      (demo.sh's hard problems): the corpus asks every question type for every
    #                                      answer value, and with answers 3-4 a count_both of 4 (four identical
    #                                      shapes) is too rare for the scene search at some seeds
    # the board
    image_size: int = 112  # px, = tiny_config's; 112 / patch 14 = 8x8 patches = 4x4 image tokens after pixel
    #                        shuffle, so each cell of a 2x2 board is 2x2 tokens: enough to tell shapes apart
    grid: int = 2  # grid x grid cells (2 or 3)
    min_shapes: int = 1
    max_shapes: int = 4  # capped at grid * grid
    colors: tuple = ("red", "green", "blue")
    shapes: tuple = ("circle", "square", "triangle")
    min_scale: float = 0.6  # shape size as a fraction of the cell side
    max_scale: float = 0.8
    jitter: float = 3.0  # px of random offset of a shape inside its cell
    color_noise: int = 20  # +- per RGB channel, so the ViT cannot key on one exact colour value
    # questions; held-out scenes (val/test/ood) never appear in the train-side splits
    question_types: tuple = ("count_shape", "count_color", "sum_colors")  # in-domain
    ood_types: tuple = ("difference",)  # out-of-domain (Table 3): a question type never trained on
    answer_values: tuple = (0, 1, 2, 3)  # gold counts are drawn uniformly from these: no majority answer
    mc_fraction: float = 0.5  # share of items that are multiple choice (A-D), the rest fill-in-the-blank
    val_fraction: float = 0.1  # share of the scene space held out for val, and again for test/ood
    test_fraction: float = 0.1
    # the teacher
    detour_fraction: float = 0.3  # traces with one "Wait" / "Hmm" / "Alternatively" detour
    detour_kinds: tuple = ("correct", "recheck", "hmm", "alternatively")
    noise_fraction: float = 0.0  # traces where the teacher misreads one cell (wrong answer, on purpose)
    blind_fraction: float = 0.0  # traces that claim not to see the image and then guess (Table 5's "with" row)
    nothink_fraction: float = 0.0  # SFT items answered directly, no <think> block: the model's NoThink mode (Table 4)
    nothink_instruction: bool = False  # those items ask with records.NOTHINK_INSTRUCTION, so that the prompt picks the
    #                                    mode (eval.py --nothink_instruction); off, only chance does
    caption_kinds: tuple = ("list",)  # also "sentence", "cell", "answer" (a question answered directly, boxed, no
    #                                   thinking: Fig. 11's base model then writes the rewarded format); "list" is
    #                                   learnt fastest
    rl_scale: tuple = ()  # (min, max) shape scale of the RL/eval records; () = min_scale/max_scale. A visual shift
    #                       between the SFT/caption boards and the RL boards, for the connector to adapt to (Fig. 6)


COLOR_RGB = {"red": (220, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 220),
             "yellow": (230, 190, 0), "purple": (140, 40, 170), "black": (20, 20, 20)}
SHAPE_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
CELL_NAMES = {2: ["top left", "top right", "bottom left", "bottom right"],
              3: ["top left", "top middle", "top right", "middle left", "center", "middle right",
                  "bottom left", "bottom middle", "bottom right"]}
BACKGROUND = (255, 255, 255)
OPTION_LETTERS = "ABCD"
# which scenes a split draws from, which question types it asks, and what it emits by default
SPLITS = {"train": ("train", "in", "rl"), "val": ("val", "in", "rl"), "test": ("test", "in", "rl"),
          "ood": ("test", "ood", "rl"), "sft": ("train", "in", "sft"), "sft_val": ("val", "in", "sft"),
          "caption": ("train", "in", "caption"), "caption_val": ("val", "in", "caption")}


def check_config(cfg):
    if cfg.grid not in CELL_NAMES:
        raise ValueError(f"Config.grid={cfg.grid}: only {sorted(CELL_NAMES)} are supported")
    if not 1 <= cfg.min_shapes <= cfg.max_shapes:
        raise ValueError(f"Config: need 1 <= min_shapes ({cfg.min_shapes}) <= max_shapes ({cfg.max_shapes})")
    if cfg.min_shapes > cfg.grid ** 2:
        raise ValueError(f"Config.min_shapes={cfg.min_shapes} > {cfg.grid ** 2} cells")
    if cfg.grid ** 2 + 1 < len(OPTION_LETTERS):
        raise ValueError(f"Config.grid={cfg.grid}: fewer possible counts than {len(OPTION_LETTERS)} options")
    for c in cfg.colors:
        if c not in COLOR_RGB:
            raise ValueError(f"Config.colors: unknown colour {c!r}, known: {sorted(COLOR_RGB)}")
    for s in cfg.shapes:
        if s not in SHAPE_PLURAL:
            raise ValueError(f"Config.shapes: unknown shape {s!r}, known: {sorted(SHAPE_PLURAL)}")
    for t in tuple(cfg.question_types) + tuple(cfg.ood_types):
        if t not in QUESTION_TYPES:
            raise ValueError(f"Config: unknown question type {t!r}, known: {sorted(QUESTION_TYPES)}")
    if {"sum_colors", "difference"} & set(cfg.question_types + cfg.ood_types) and len(cfg.colors) < 2:
        raise ValueError("Config: sum_colors/difference need at least 2 colours")
    for k in cfg.detour_kinds:
        if k not in ("correct", "recheck", "hmm", "alternatively"):
            raise ValueError(f"Config.detour_kinds: unknown detour {k!r}")
    for k in cfg.caption_kinds:
        if k not in ("list", "sentence", "cell", "answer"):
            raise ValueError(f"Config.caption_kinds: unknown caption kind {k!r}")
    if not cfg.answer_values or not all(0 <= v <= min(cfg.max_shapes, cfg.grid ** 2) for v in cfg.answer_values):
        raise ValueError(f"Config.answer_values={cfg.answer_values}: each must be in 0..min(max_shapes, cells)")
    if cfg.rl_scale and not (len(cfg.rl_scale) == 2 and 0 < cfg.rl_scale[0] <= cfg.rl_scale[1] <= 1):
        raise ValueError(f"Config.rl_scale={cfg.rl_scale}: expected () or (min, max) with 0 < min <= max <= 1")
    if cfg.blind_fraction + cfg.nothink_fraction > 1:
        raise ValueError("Config: blind_fraction + nothink_fraction must be <= 1")
    if not 0 < cfg.val_fraction + cfg.test_fraction < 1:
        raise ValueError("Config: val_fraction + test_fraction must be in (0, 1)")


# -----------------------------------------------------------------------------
# scenes: a list of grid*grid cells, each None (empty) or [colour, shape]

def sample_scene(rng, cfg):
    n_cells = cfg.grid ** 2
    n_shapes = rng.randint(cfg.min_shapes, min(cfg.max_shapes, n_cells))
    scene = [None] * n_cells
    for i in rng.sample(range(n_cells), n_shapes):
        scene[i] = [rng.choice(cfg.colors), rng.choice(cfg.shapes)]
    return scene


def scene_split(scene, cfg):
    # A stable hash of the cell contents (not of the jitter) assigns every possible scene to one
    # side, so held-out splits are unseen scenes no matter which seed or size generated them.
    key = json.dumps(scene).encode()
    u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2 ** 64
    if u < cfg.val_fraction:
        return "val"
    if u < cfg.val_fraction + cfg.test_fraction:
        return "test"
    return "train"


def render_scene(scene, rng, cfg, scale=None):
    """scale: (min, max) shape size as a fraction of the cell side; default (cfg.min_scale, cfg.max_scale)."""
    lo, hi = scale or (cfg.min_scale, cfg.max_scale)
    size = cfg.image_size
    cell = size / cfg.grid
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for i, item in enumerate(scene):
        if item is None:
            continue
        color, shape = item
        row, col = divmod(i, cfg.grid)
        side = cell * rng.uniform(lo, hi)
        slack = min(cfg.jitter, (cell - side) / 2)  # never spill into the next cell
        cx = (col + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (row + 0.5) * cell + rng.uniform(-slack, slack)
        x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
        fill = tuple(min(255, max(0, v + rng.randint(-cfg.color_noise, cfg.color_noise))) for v in COLOR_RGB[color])
        if shape == "circle":
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif shape == "square":
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:  # triangle, pointing up
            draw.polygon([(cx, y0), (x0, y1), (x1, y1)], fill=fill)
    return img


def count(scene, color=None, shape=None):
    return sum(1 for item in scene if item is not None
               and (color is None or item[0] == color) and (shape is None or item[1] == shape))


# -----------------------------------------------------------------------------
# questions: each type samples its arguments, phrases the question, and names the counts the
# teacher lists; answer_for() is the single source of the gold answer

def _pick_count_shape(scene, rng, cfg):
    return {"shape": rng.choice(cfg.shapes)}


def _pick_count_color(scene, rng, cfg):
    return {"color": rng.choice(cfg.colors)}


def _pick_two_colors(scene, rng, cfg):
    a, b = rng.sample(cfg.colors, 2)
    return {"color_a": a, "color_b": b}


def _pick_difference(scene, rng, cfg):
    a, b = rng.sample(cfg.colors, 2)
    if count(scene, color=a) < count(scene, color=b):  # answers stay >= 0
        a, b = b, a
    return {"color_a": a, "color_b": b}


def _pick_count_both(scene, rng, cfg):
    return {"color": rng.choice(cfg.colors), "shape": rng.choice(cfg.shapes)}


QUESTION_TYPES = {
    # name: (pick arguments, question template)
    "count_shape": (_pick_count_shape, "How many {plural} are there?"),
    "count_color": (_pick_count_color, "How many {color} shapes are there?"),
    "count_total": (lambda scene, rng, cfg: {}, "How many shapes are there?"),
    "count_both": (_pick_count_both, "How many {color} {plural} are there?"),
    "sum_colors": (_pick_two_colors, "How many shapes are {color_a} or {color_b}?"),
    "difference": (_pick_difference, "How many more {color_a} shapes than {color_b} shapes are there?"),
}


def question_text(qtype, args):
    fields = dict(args)
    if "shape" in args:
        fields["plural"] = SHAPE_PLURAL[args["shape"]]
    return QUESTION_TYPES[qtype][1].format(**fields)


def count_filters(qtype, args):
    """The (label, colour, shape) filters whose counts the answer combines, in order."""
    if qtype == "count_shape":
        return [(SHAPE_PLURAL[args["shape"]].capitalize(), None, args["shape"])]
    if qtype == "count_color":
        return [(f"{args['color'].capitalize()} shapes", args["color"], None)]
    if qtype == "count_total":
        return [("Shapes", None, None)]
    if qtype == "count_both":
        return [(f"{args['color'].capitalize()} {SHAPE_PLURAL[args['shape']]}", args["color"], args["shape"])]
    if qtype in ("sum_colors", "difference"):
        return [(f"{c.capitalize()} shapes", c, None) for c in (args["color_a"], args["color_b"])]
    raise ValueError(f"unknown question type {qtype!r}")


def answer_for(qtype, args, scene):
    counts = [count(scene, color, shape) for _, color, shape in count_filters(qtype, args)]
    if qtype == "sum_colors":
        return counts[0] + counts[1]
    if qtype == "difference":
        return counts[0] - counts[1]
    return counts[0]


def make_options(answer, rng, cfg):
    """Four distinct counts in 0..cells, one of them the answer; returns ({letter: text}, letter)."""
    distractors = rng.sample([v for v in range(cfg.grid ** 2 + 1) if v != answer], len(OPTION_LETTERS) - 1)
    values = distractors + [answer]
    rng.shuffle(values)
    options = {letter: str(v) for letter, v in zip(OPTION_LETTERS, values)}
    return options, OPTION_LETTERS[values.index(answer)]


# -----------------------------------------------------------------------------
# the scripted teacher (cold-start SFT traces)

def describe(item):
    return "empty" if item is None else f"a {item[0]} {item[1]}"


def misread(scene, rng, cfg):
    """The scene with one cell seen wrong (what a noisy teacher 'sees')."""
    contents = [None] + [[c, s] for c in cfg.colors for s in cfg.shapes]
    seen = [None if item is None else list(item) for item in scene]
    i = rng.randrange(len(scene))
    seen[i] = rng.choice([c for c in contents if c != scene[i]])
    if all(item is None for item in seen):  # keep at least one shape, as every real scene has
        return misread(scene, rng, cfg)
    return seen


def teacher_trace(scene, qtype, args, options, rng, cfg, detour=None):
    """Assistant content: <think> step-by-step reading and arithmetic </think> then the boxed answer.
    `scene` is what the teacher sees (a misread scene gives a wrong but self-consistent trace);
    `detour` is one of Config.detour_kinds or None. Returns (content, boxed answer, detour used)."""
    names = CELL_NAMES[cfg.grid]
    filters = count_filters(qtype, args)
    # Each cell line decides on the spot whether the cell counts and carries a running count
    # ("Top left: a red circle. Red count: 1."): a local step per line, which a tiny LM learns far
    # sooner than picking the matching cells out of the list afterwards.
    running = [0] * len(filters)
    cell_lines = []
    for i, item in enumerate(scene):
        line = f"{names[i].capitalize()}: {describe(item)}."
        for f, (label, color, shape) in enumerate(filters):
            if item is not None and color in (None, item[0]) and shape in (None, item[1]):
                running[f] += 1
                tag = " ".join(x for x in (color, shape) if x) or "shape"
                line += f" {tag.capitalize()} count: {running[f]}."
        cell_lines.append(line)
    counts = [count(scene, color, shape) for _, color, shape in filters]
    answer = answer_for(qtype, args, scene)
    count_lines = [f"{label}: {n}." for (label, _, _), n in zip(filters, counts)]
    if qtype == "sum_colors":
        count_lines.append(f"{counts[0]} + {counts[1]} = {answer}.")
    elif qtype == "difference":
        count_lines.append(f"{counts[0]} - {counts[1]} = {answer}.")
    if detour == "alternatively" and (len(filters) != 1 or qtype == "count_total"):
        detour = "recheck"  # the complement count only makes sense for a single filtered count
    if detour == "correct" and all(item is None for item in scene):
        detour = "recheck"

    if detour == "correct":  # a slip, caught: the classic "aha" pattern
        i = rng.choice([i for i, item in enumerate(scene) if item is not None])
        color, shape = scene[i]
        wrong = rng.choice([[c, s] for c in cfg.colors for s in cfg.shapes if [c, s] != [color, shape]])
        cell_lines[i] = (f"{names[i].capitalize()}: {describe(wrong)}.\n"
                         f"Wait, let me re-check. {cell_lines[i]}")
    elif detour == "hmm":
        i = rng.randrange(len(scene))
        check = "It is empty." if scene[i] is None else f"No, it has {describe(scene[i])}."
        cell_lines.insert(i + 1, f"Hmm, is the {names[i]} cell empty? {check}")
    elif detour == "recheck":
        i = rng.randrange(len(scene))
        count_lines.append(f"Wait, let me re-check the {names[i]} cell. "
                           f"{names[i].capitalize()}: {describe(scene[i])}. So the answer stays {answer}.")
    elif detour == "alternatively":
        label, color, shape = filters[0]
        total = count(scene)
        count_lines.append(f"Alternatively, count the rest: {total} shape{'s' * (total != 1)}, {total - answer} of them not "
                           f"{label.lower()}, and {total} - {total - answer} = {answer}.")
    elif detour is not None:
        raise ValueError(f"unknown detour {detour!r}")

    final = str(answer)
    if options:  # option by option, stopping at the match: the letter to box ends the last line read
        for letter, value in options.items():
            match = value == str(answer)
            count_lines.append(f"{letter}. {value}: {'yes' if match else 'no'}.")
            if match:
                final = letter
                break
    think = "\n".join(cell_lines + count_lines)
    return f"<think>\n{think}\n</think>\n\nThe answer is \\boxed{{{final}}}.", final, detour


def blind_trace(options, rng, cfg):
    """A trace that claims not to see the image and guesses (as R1V3 sometimes does, §6.4): the thinking has a
    rewards.UNSEEN_IMAGE_PHRASES phrase and no reading of the board, so the boxed answer is right by chance only.
    Returns (content, boxed answer)."""
    guess = rng.choice(list(options)) if options else str(rng.choice(cfg.answer_values))
    think = "I can't see the image clearly. I will guess."
    return f"<think>\n{think}\n</think>\n\nThe answer is \\boxed{{{guess}}}.", guess


def caption_pair(scene, rng, cfg):
    """(user text, assistant text) describing the image, for the alignment stage. "answer": a question of the
    in-domain types answered directly (no thinking), as an instruction-tuned base model would."""
    names = CELL_NAMES[cfg.grid]
    kind = rng.choice(cfg.caption_kinds)
    if kind == "answer":
        qtype = rng.choice(cfg.question_types)
        args = QUESTION_TYPES[qtype][0](scene, rng, cfg)
        question = records.format_question(records.Record(id="", question=question_text(qtype, args), answer="",
                                                          options=None, images=["image"], source="synthetic"))
        return question.removeprefix("<image>\n"), f"The answer is \\boxed{{{answer_for(qtype, args, scene)}}}."
    if kind == "list":  # the same lines the teacher's traces start with
        return "Describe each cell.", "\n".join(f"{names[i].capitalize()}: {describe(item)}."
                                                for i, item in enumerate(scene))
    if kind == "sentence":
        parts = [f"{describe(item)} at {names[i]}" for i, item in enumerate(scene) if item is not None]
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        n = len(parts)
        return "Describe the image.", f"The image shows {n} shape{'s' if n > 1 else ''}: {listed}."
    i = rng.randrange(len(scene))
    answer = "It is empty." if scene[i] is None else f"It has {describe(scene[i])}."
    return f"What is in the {names[i]} cell?", answer


# -----------------------------------------------------------------------------
# splits

def generate_split(name, n, seed, kind=None, cfg=None):
    """n items of split `name` (a key of SPLITS). kind: "rl" (question/answer records), "sft"
    (teacher traces in chat format) or "caption"; default per split. Every item carries its PIL
    image under "image" (write_dataset saves it) and its scene under "meta" so answers can be
    recomputed. The same (name, n, seed, cfg) always gives the same items, and a larger n extends
    a smaller one."""
    cfg = cfg or Config()
    check_config(cfg)
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}, known: {sorted(SPLITS)}")
    scene_side, domain, default_kind = SPLITS[name]
    kind = kind or default_kind
    if kind not in ("rl", "sft", "caption"):
        raise ValueError(f"unknown kind {kind!r}: expected 'rl', 'sft' or 'caption'")
    qtypes = cfg.question_types if domain == "in" else cfg.ood_types
    rng = random.Random(f"synthetic/{seed}/{name}")  # one stream per (seed, split): disjoint draws
    items = []
    while len(items) < n:
        if kind == "caption":
            scene = sample_scene(rng, cfg)
            if scene_split(scene, cfg) != scene_side:
                continue
        else:  # answer first, then a (scene, question) with that answer: answers come out uniform
            qtype = rng.choice(qtypes)
            lowest = cfg.min_shapes if qtype == "count_total" else 0  # every scene has a shape
            feasible = [v for v in cfg.answer_values if v >= lowest]
            if not feasible:
                raise ValueError(f"Config.answer_values={cfg.answer_values}: none is possible for {qtype}")
            target = rng.choice(feasible)
            for _ in range(100_000):
                scene = sample_scene(rng, cfg)
                if scene_split(scene, cfg) != scene_side:
                    continue
                args = QUESTION_TYPES[qtype][0](scene, rng, cfg)
                if answer_for(qtype, args, scene) == target:
                    break
            else:
                raise ValueError(f"Config.answer_values: no {name} scene gives a {qtype} answer of {target}")
        item_id = f"{name}-{len(items):05d}"
        image = render_scene(scene, rng, cfg, cfg.rl_scale if kind == "rl" and cfg.rl_scale else None)
        meta = {"scene": scene, "grid": cfg.grid}
        if kind == "caption":
            user, assistant = caption_pair(scene, rng, cfg)
            items.append({"id": item_id, "image": image, "meta": meta, "messages": [
                {"role": "user", "content": "<image>\n" + user}, {"role": "assistant", "content": assistant}]})
            continue
        question = question_text(qtype, args)
        answer = answer_for(qtype, args, scene)
        options, gold = make_options(answer, rng, cfg) if rng.random() < cfg.mc_fraction else (None, str(answer))
        meta.update(qtype=qtype, args=args, answer_value=answer)
        if kind == "rl":
            record = {"id": item_id, "image": image, "question": question, "answer": gold, "meta": meta}
            if options:
                record["options"] = options
            items.append(record)
            continue
        detour = rng.choice(cfg.detour_kinds) if rng.random() < cfg.detour_fraction else None
        seen, noisy = scene, False
        if rng.random() < cfg.noise_fraction:
            for _ in range(20):  # a misread whose answer is still among the options
                candidate = misread(scene, rng, cfg)
                if not options or str(answer_for(qtype, args, candidate)) in options.values():
                    seen, noisy = candidate, True
                    break
        # the user turn is exactly what grpo.py / eval.py will prompt with (data.format_question, from records.py)
        record = records.Record(id=item_id, question=question, answer=gold, images=["image"], options=options,
                                source="synthetic")
        user_text = records.format_question(record)
        assistant, said, detour = teacher_trace(seen, qtype, args, options, rng, cfg, detour)
        style, u = "think", rng.random() if cfg.blind_fraction or cfg.nothink_fraction else 1.0  # same draws as before
        if u < cfg.blind_fraction:
            (assistant, said), style, detour = blind_trace(options, rng, cfg), "blind", None
        elif u < cfg.blind_fraction + cfg.nothink_fraction:
            assistant, style, detour = f"The answer is \\boxed{{{said}}}.", "nothink", None
            if cfg.nothink_instruction:   # the same item otherwise: no draw is added or moved
                user_text = records.format_question(record, records.NOTHINK_INSTRUCTION)
        meta["style"] = style
        meta.update(detour=detour, noisy=noisy, seen_scene=seen, teacher_answer=said, gold=gold,
                    question=question, options=options)
        items.append({"id": item_id, "image": image, "meta": meta, "messages": [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": assistant}]})
    return items


def tokenizer_corpus(n=400, seed=0, cfg=None):
    """Texts covering everything the tiny model reads or writes (questions of every type with and
    without options, traces with every detour, captions, digits), to train its BPE on."""
    cfg = cfg or Config()
    every_type = dataclasses.replace(cfg, question_types=tuple(QUESTION_TYPES), detour_fraction=0.5)
    texts = []
    for item in generate_split("sft", n, seed, cfg=every_type) + generate_split("caption", n, seed, cfg=cfg):
        texts.extend(m["content"] for m in item["messages"])
    texts.append(" ".join(str(i) for i in range(100)) + " " + " ".join(OPTION_LETTERS))
    texts.append("<|im_start|>system\n<|im_start|>user\n<|im_start|>assistant\n")  # ChatML role names
    return texts


# -----------------------------------------------------------------------------
# writing

def write_dataset(out_dir, n_train=2000, n_val=200, n_test=200, n_ood=200, n_sft=1000, n_sft_val=100,
                  n_caption=2000, seed=1337, cfg=None):
    """Writes every split under out_dir (layout in the module docstring); returns {file: count}."""
    cfg = cfg or Config()
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    sizes = {"train": n_train, "val": n_val, "test": n_test, "ood": n_ood,
             "sft": n_sft, "sft_val": n_sft_val, "caption": n_caption}
    written = {}
    for name, n in sizes.items():
        path = os.path.join(out_dir, f"{name}.jsonl")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            for item in generate_split(name, n, seed, cfg=cfg):
                image_rel = f"images/{item['id']}.png"
                item.pop("image").save(os.path.join(out_dir, image_rel))
                item["images"] = [image_rel]
                f.write(json.dumps(item) + "\n")
        os.replace(tmp, path)  # a half-written file never looks complete
        written[f"{name}.jsonl"] = n
    if cfg.write_tokenizer_corpus:
        with open(os.path.join(out_dir, "tokenizer_corpus.jsonl"), "w") as f:  # one JSON string per line
            for text in tokenizer_corpus(seed=seed, cfg=cfg):
                f.write(json.dumps(text) + "\n")
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dict(dataclasses.asdict(cfg), seed=seed), f, indent=1)
    return written


def main(argv=None):
    cfg = configurator.parse_config(Config, argv)   # --key=value or --key value
    check_config(cfg)
    print(json.dumps(dataclasses.asdict(cfg)))
    written = write_dataset(cfg.out, cfg.n_train, cfg.n_val, cfg.n_test, cfg.n_ood, cfg.n_sft, cfg.n_sft_val,
                            cfg.n_caption, seed=cfg.seed, cfg=cfg)
    for name, n in written.items():
        print(f"{os.path.join(cfg.out, name)}: {n}")


if __name__ == "__main__":
    main()
