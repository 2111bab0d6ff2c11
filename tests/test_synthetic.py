import os

os.environ.setdefault("WANDB_MODE", "disabled")

import json
import random
import re
import sys
import time

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data
import records
import rewards
import synthetic
from synthetic import Config, generate_split

CRITICAL = re.compile(r"\b(Wait|Hmm|Alternatively|However)\b")
TRACE = re.compile(r"<think>\n(.+)\n</think>\n\nThe answer is \\boxed\{([^{}]+)\}\.", re.S)
CELLS2 = ["top left", "top right", "bottom left", "bottom right"]


def item_json(item):
    return json.dumps({k: v for k, v in item.items() if k != "image"}, sort_keys=True)


def answer_from_text(question, scene):
    """The gold count recomputed from the question's words and the scene, independent of synthetic.py."""
    def n(color=None, shape=None):
        return sum(1 for it in scene if it and color in (None, it[0]) and shape in (None, it[1]))
    if m := re.fullmatch(r"How many more (\w+) shapes than (\w+) shapes are there\?", question):
        return n(color=m[1]) - n(color=m[2])
    if m := re.fullmatch(r"How many shapes are (\w+) or (\w+)\?", question):
        return n(color=m[1]) + n(color=m[2])
    if m := re.fullmatch(r"How many (red|green|blue) shapes are there\?", question):
        return n(color=m[1])
    if m := re.fullmatch(r"How many (red|green|blue) (\w+)s are there\?", question):
        return n(color=m[1], shape=m[2])
    if m := re.fullmatch(r"How many (circle|square|triangle)s are there\?", question):
        return n(shape=m[1])
    if question == "How many shapes are there?":
        return n()
    raise AssertionError(f"unparsed question {question!r}")


def test_deterministic_and_prefix_stable():
    a = generate_split("train", 30, seed=3)
    b = generate_split("train", 30, seed=3)
    assert [item_json(x) for x in a] == [item_json(x) for x in b]
    assert all(x["image"].tobytes() == y["image"].tobytes() for x, y in zip(a, b))
    longer = generate_split("train", 40, seed=3)
    assert [item_json(x) for x in longer[:30]] == [item_json(x) for x in a]
    other = generate_split("train", 30, seed=4)
    assert sum(item_json(x) == item_json(y) for x, y in zip(a, other)) < 3


def test_splits_disjoint_by_scene():
    scenes = {name: {json.dumps(x["meta"]["scene"]) for x in generate_split(name, 150, seed=0)}
              for name in ("train", "val", "test", "ood", "sft", "sft_val", "caption")}
    train_side = scenes["train"] | scenes["sft"] | scenes["caption"]
    assert not train_side & scenes["val"]
    assert not train_side & (scenes["test"] | scenes["ood"])
    assert not scenes["val"] & (scenes["test"] | scenes["ood"])
    assert not scenes["sft_val"] & train_side


def test_rl_answers_recomputed_from_scene_and_question():
    cfg = Config()
    for name, types in (("train", cfg.question_types), ("test", cfg.question_types), ("ood", cfg.ood_types)):
        items = generate_split(name, 200, seed=1)
        n_mc = 0
        for x in items:
            assert x["meta"]["qtype"] in types
            value = answer_from_text(x["question"], x["meta"]["scene"])
            assert value in cfg.answer_values
            if "options" in x:
                n_mc += 1
                assert sorted(x["options"]) == ["A", "B", "C", "D"]
                assert len(set(x["options"].values())) == 4
                assert x["answer"] in "ABCD" and x["options"][x["answer"]] == str(value)
            else:
                assert x["answer"] == str(value)
        assert 0.35 < n_mc / len(items) < 0.65  # mc_fraction = 0.5
        # answers are drawn uniformly: no majority answer to exploit
        counts = [sum(x["meta"]["answer_value"] == v for x in items) for v in cfg.answer_values]
        assert max(counts) < 0.4 * len(items)


def test_every_question_type_answer_matches_text():
    cfg = Config(question_types=tuple(synthetic.QUESTION_TYPES), grid=3, max_shapes=6)
    items = generate_split("train", 300, seed=2, cfg=cfg)
    assert {x["meta"]["qtype"] for x in items} == set(synthetic.QUESTION_TYPES)
    for x in items:
        assert x["meta"]["answer_value"] == answer_from_text(x["question"], x["meta"]["scene"])


def test_image_shows_the_scene():
    cfg = Config(color_noise=0, jitter=0.0)
    rgb = {"red": (220, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 220)}
    for x in generate_split("val", 20, seed=5, cfg=cfg):
        img = x["image"]
        assert img.size == (112, 112) and img.mode == "RGB"
        for i, item in enumerate(x["meta"]["scene"]):
            row, col = divmod(i, 2)
            # a point inside every shape at the smallest scale (for the triangle: below its apex)
            px = img.getpixel((col * 56 + 28, row * 56 + 34))
            assert px == ((255, 255, 255) if item is None else rgb[item[0]]), (x["id"], i, item, px)


def test_teacher_traces_well_formed_with_detours():
    cfg = Config(detour_fraction=0.3)
    items = generate_split("sft", 600, seed=0, cfg=cfg)
    n_detour = 0
    for x in items:
        user, assistant = x["messages"]
        assert user["role"] == "user" and user["content"].startswith("<image>\n")
        assert assistant["role"] == "assistant"
        m = TRACE.fullmatch(assistant["content"])
        assert m, assistant["content"]
        think, boxed = m[1], m[2]
        assert "<think>" not in think and "</think>" not in think
        value = answer_from_text(user["content"].split("\n")[1], x["meta"]["scene"])
        if x["meta"]["options"]:
            options = dict(re.findall(r"^([A-D])\. (\d+)$", user["content"], re.M))
            assert len(options) == 4 and options[boxed] == str(value)
            # options are checked in order up to the match, whose letter is boxed
            checked = re.findall(r"^([A-D])\. (\d+): (yes|no)\.$", think, re.M)
            assert checked == [(k, v, "yes" if k == boxed else "no") for k, v in options.items()][:len(checked)]
            assert checked[-1][0] == boxed
        else:
            assert boxed == str(value)
        assert boxed == x["meta"]["gold"]
        # the trace reads every cell right before counting (the "correct" detour first slips once)
        for name, item in zip(CELLS2, x["meta"]["scene"]):
            said = re.findall(rf"{name.capitalize()}: (empty|a \w+ \w+)\.", think)
            truth = "empty" if item is None else f"a {item[0]} {item[1]}"
            assert said[-1] == truth and len(said) <= 1 + (x["meta"]["detour"] in ("correct", "recheck")), think
            if len(said) == 2 and x["meta"]["detour"] == "correct":
                assert said[0] != truth  # the slip the "Wait" catches
        critical = CRITICAL.findall(think)
        if x["meta"]["detour"] is None:
            assert not critical, think
        else:
            n_detour += 1
            assert len(critical) == 1, think
    assert abs(n_detour / len(items) - 0.3) < 0.06
    kinds = {x["meta"]["detour"] for x in items}
    assert kinds == {None, "correct", "recheck", "hmm", "alternatively"}


def test_arithmetic_lines_are_right():
    cfg = Config(question_types=("sum_colors", "difference"), detour_fraction=0.0)
    for x in generate_split("sft", 100, seed=0, cfg=cfg):
        think = x["messages"][1]["content"]
        a, op, b, c = re.search(r"^(\d) ([+-]) (\d) = (\d)\.$", think, re.M).groups()
        assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))


def test_running_counts_match_the_tally():
    cfg = Config(question_types=tuple(synthetic.QUESTION_TYPES), detour_fraction=0.0)
    for x in generate_split("sft", 200, seed=4, cfg=cfg):
        think = x["messages"][1]["content"]
        scene = x["meta"]["scene"]
        # one "<Tag> count: k" per matching cell, numbered 1, 2, ... per tag, on that cell's own line
        for line, item in zip(think.split("\n")[1:5], scene):
            for tag, k in re.findall(r"(\w+(?: \w+)?) count: (\d)\.", line):
                words = tag.lower().split()
                assert item is not None and all(w in ("shape", *item) for w in words), (line, item)
        tallies = dict(re.findall(r"^(\w+(?: \w+)?): (\d)\.$", think, re.M))
        for label, n in tallies.items():
            tag = {"Shapes": "Shape"}.get(label, label.replace(" shapes", "").rstrip("s").capitalize())
            counted = re.findall(rf"(?<![A-Za-z]){tag} count: (\d)\.", think)
            assert int(n) == (int(counted[-1]) if counted else 0) == len(counted), (label, think)


def test_noisy_teacher_is_wrong_on_purpose_but_consistent():
    cfg = Config(noise_fraction=0.5, detour_fraction=0.0)
    items = generate_split("sft", 300, seed=0, cfg=cfg)
    noisy = [x for x in items if x["meta"]["noisy"]]
    assert 0.35 < len(noisy) / len(items) < 0.65
    wrong = 0
    for x in items:
        boxed = TRACE.fullmatch(x["messages"][1]["content"])[2]
        assert boxed == x["meta"]["teacher_answer"]
        seen = x["meta"]["seen_scene"]
        question = x["messages"][0]["content"].split("\n")[1]
        value = answer_from_text(question, seen)  # right for what the teacher saw
        options = dict(re.findall(r"^([A-D])\. (\d+)$", x["messages"][0]["content"], re.M))
        assert (options[boxed] if options else boxed) == str(value)
        if x["meta"]["noisy"]:
            assert sum(a != b for a, b in zip(seen, x["meta"]["scene"])) == 1
            wrong += boxed != x["meta"]["gold"]
        else:
            assert seen == x["meta"]["scene"] and boxed == x["meta"]["gold"]
    assert wrong > 0.3 * len(noisy)  # many misreads change the answer, so SFT cannot saturate


def test_captions_describe_the_scene():
    for x in generate_split("caption", 60, seed=0):
        user, assistant = x["messages"]
        scene, text = x["meta"]["scene"], assistant["content"]
        assert user["content"].startswith("<image>\n") and "<think>" not in text
        if user["content"].endswith("Describe each cell."):
            assert text.split("\n") == [f"{n.capitalize()}: {'empty' if it is None else f'a {it[0]} {it[1]}'}."
                                        for n, it in zip(CELLS2, scene)]
        elif user["content"].endswith("Describe the image."):
            shown = [f"a {it[0]} {it[1]} at {n}" for n, it in zip(CELLS2, scene) if it]
            assert all(phrase in text for phrase in shown) and text.count(" at ") == len(shown), text
        else:
            name = re.search(r"the (.+) cell\?", user["content"])[1]
            it = scene[CELLS2.index(name)]
            assert text == ("It is empty." if it is None else f"It has a {it[0]} {it[1]}.")


def test_write_dataset_layout(tmp_path):
    cfg = Config(image_size=56)  # any size; 56 keeps the test fast
    written = synthetic.write_dataset(tmp_path, n_train=12, n_val=5, n_test=6, n_ood=7, n_sft=8, n_sft_val=3,
                                      n_caption=9, seed=11, cfg=cfg)
    expected = {"train": 12, "val": 5, "test": 6, "ood": 7, "sft": 8, "sft_val": 3, "caption": 9}
    assert written == {f"{k}.jsonl": v for k, v in expected.items()}
    ids = set()
    for name, n in expected.items():
        rows = [json.loads(line) for line in open(tmp_path / f"{name}.jsonl")]
        assert len(rows) == n
        for row in rows:
            assert row["id"] not in ids
            ids.add(row["id"])
            assert len(row["images"]) == 1 and not os.path.isabs(row["images"][0])
            with Image.open(tmp_path / row["images"][0]) as img:
                assert img.size == (56, 56)
            if name in ("train", "val", "test", "ood"):
                assert set(row) <= {"id", "images", "question", "answer", "options", "meta"}
                assert re.fullmatch(r"[0-9]+|[A-D]", row["answer"])
            else:
                assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
                assert row["messages"][0]["content"].count("<image>") == 1
    # same generator, same items: the files are generate_split's output
    first = json.loads(open(tmp_path / "test.jsonl").readline())
    assert first["question"] == generate_split("test", 1, 11, cfg=cfg)[0]["question"]
    # data.py reads every file, and the SFT user turn is what data.format_question makes of the same
    # question as an RL record, so SFT and RL/eval prompts match token for token
    for name in ("train", "val", "test", "ood"):
        assert len(data.read_records(tmp_path / f"{name}.jsonl")) == expected[name]
    for name in ("sft", "sft_val", "caption"):
        assert len(data.read_chat_jsonl(tmp_path / f"{name}.jsonl")) == expected[name]
    sft = [json.loads(line) for line in open(tmp_path / "sft.jsonl")]
    with open(tmp_path / "as_records.jsonl", "w") as f:
        for row in sft:
            record = {"id": row["id"], "images": row["images"], "question": row["meta"]["question"],
                      "answer": row["meta"]["gold"]}
            if row["meta"]["options"]:
                record["options"] = row["meta"]["options"]
            f.write(json.dumps(record) + "\n")
    for row, record in zip(sft, data.read_records(tmp_path / "as_records.jsonl")):
        assert row["messages"][0]["content"] == data.format_question(record)
    corpus = [json.loads(line) for line in open(tmp_path / "tokenizer_corpus.jsonl")]
    assert corpus == synthetic.tokenizer_corpus(seed=11, cfg=cfg)
    assert json.load(open(tmp_path / "config.json"))["seed"] == 11


def test_tokenizer_corpus_covers_the_vocabulary():
    text = "\n".join(synthetic.tokenizer_corpus(n=150, seed=0))
    for word in ["Wait", "Hmm", "Alternatively", "\\boxed{", "reason step by step", "\nB. ", "more", "or", "circles", "triangles",
                 "green", "bottom right", "Describe", "</think>"] + [str(d) for d in range(10)]:
        assert word in text, word


def test_hard_problems_write_no_tokenizer_corpus(tmp_path):
    """demo.sh's hard problems (sums on dense boards, answers 3-4) at seed 11: their data has no tokenizer corpus,
    whose every-type traces would ask for a count_both answer of 4 that the scene search can miss (it did)."""
    hard = ["--question_types=('sum_colors',)", "--min_shapes=3", "--answer_values=(3, 4)", "--seed=11",
            "--n_train=6", "--n_test=4", "--n_val=0", "--n_ood=0", "--n_sft=0", "--n_sft_val=0", "--n_caption=0"]
    synthetic.main([f"--out={tmp_path}", *hard, "--write_tokenizer_corpus=False"])
    assert not (tmp_path / "tokenizer_corpus.jsonl").exists()
    rows = [json.loads(line) for line in open(tmp_path / "train.jsonl")]
    assert len(rows) == 6 and {r["meta"]["answer_value"] for r in rows} <= {3, 4}
    assert all(sum(cell is not None for cell in r["meta"]["scene"]) >= 3 for r in rows)
    with pytest.raises(ValueError, match="no sft scene gives a count_both answer of 4"):   # the corpus: named
        synthetic.main([f"--out={tmp_path / 'with_corpus'}", *hard])


def test_main_parses_args_and_rejects_bad_ones(tmp_path):
    synthetic.main([f"--out={tmp_path}", "--n_train", "4", "--n_val=2", "--n_test=2", "--n_ood=2", "--n_sft=2",
                    "--n_sft_val=1", "--n_caption=2", "--seed=5", "--ood_types=('count_both',)", "--mc_fraction=0"])
    rows = [json.loads(line) for line in open(tmp_path / "ood.jsonl")]
    assert len(rows) == 2 and all(r["meta"]["qtype"] == "count_both" and "options" not in r for r in rows)
    assert len(open(tmp_path / "train.jsonl").readlines()) == 4
    with pytest.raises(ValueError, match="unknown config key 'n_trian'"):
        synthetic.main(["--n_trian=3"])
    with pytest.raises(ValueError, match="expected int"):
        synthetic.main(["--n_train=lots"])
    with pytest.raises(ValueError, match="grid"):
        generate_split("train", 1, 0, cfg=Config(grid=5))
    with pytest.raises(ValueError, match="answer_values"):
        generate_split("train", 1, 0, cfg=Config(answer_values=(7,)))
    with pytest.raises(ValueError, match="unknown split"):
        generate_split("dev", 1, 0)


def test_generation_is_fast():
    t = time.time()
    generate_split("sft", 500, seed=0)
    assert time.time() - t < 5.0


def test_docstring_trace_is_what_the_teacher_writes():
    scene = [["red", "circle"], None, ["blue", "square"], ["green", "triangle"]]
    content, boxed, detour = synthetic.teacher_trace(scene, "sum_colors", {"color_a": "red", "color_b": "blue"},
                                                     None, random.Random(0), Config())
    assert (boxed, detour) == ("2", None)
    assert content in synthetic.__doc__.replace("\n    ", "\n")


def test_blind_and_nothink_traces():
    """Table 5's lever: blind traces claim not to see the image (rewards' phrase list finds it) and guess; Table 4's:
    nothink traces answer with the right boxed answer and no thinking block. Shares follow the fractions."""
    cfg = Config(blind_fraction=0.2, nothink_fraction=0.3)
    items = generate_split("sft", 400, 3, cfg=cfg)
    styles = [it["meta"]["style"] for it in items]
    assert 0.12 < styles.count("blind") / 400 < 0.28 and 0.22 < styles.count("nothink") / 400 < 0.38
    for it in items:
        text, meta = it["messages"][1]["content"], it["meta"]
        assert rewards.claims_unseen_image(text) == (meta["style"] == "blind")
        if meta["style"] == "nothink":
            assert "<think>" not in text and text == f"The answer is \\boxed{{{meta['gold']}}}."
        if meta["style"] == "think":
            assert text.startswith("<think>\n") and f"\\boxed{{{meta['gold']}}}" in text
    # off by default, with the draws of before (the same traces as a config without the new fields)
    assert [it["messages"] for it in generate_split("sft", 50, 3)] == \
        [it["messages"] for it in generate_split("sft", 50, 3, cfg=Config(blind_fraction=0.0))]
    with pytest.raises(ValueError):
        synthetic.check_config(Config(blind_fraction=0.6, nothink_fraction=0.6))


def test_nothink_instruction_lets_the_prompt_pick_the_mode():
    """Table 4's prompt lever: with nothink_instruction the direct answers (and only they) are asked with
    NOTHINK_INSTRUCTION, in the text eval.py's nothink prompt uses (format_question's); every draw is as without it."""
    plain = generate_split("sft", 200, 5, cfg=Config(nothink_fraction=0.3))
    picked = generate_split("sft", 200, 5, cfg=Config(nothink_fraction=0.3, nothink_instruction=True))
    assert sum(it["meta"]["style"] == "nothink" for it in picked) > 30
    for a, b in zip(plain, picked):
        assert a["meta"] == b["meta"] and a["messages"][1] == b["messages"][1]
        user_a, user_b = a["messages"][0]["content"], b["messages"][0]["content"]
        if b["meta"]["style"] == "nothink":
            assert user_b == user_a.removesuffix(records.DEFAULT_INSTRUCTION) + records.NOTHINK_INSTRUCTION
        else:
            assert user_b == user_a and user_a.endswith(records.DEFAULT_INSTRUCTION)


def test_answer_captions_are_direct_right_answers():
    """Fig. 11's lever: "answer" captions ask an in-domain question (the RL prompt's text) and box its answer."""
    items = generate_split("caption", 60, 0, cfg=Config(caption_kinds=("answer",)))
    for it in items:
        user, answer = it["messages"][0]["content"], it["messages"][1]["content"]
        assert "\\boxed{}" in user and re.fullmatch(r"The answer is \\boxed\{[0-4]\}\.", answer), (user, answer)


def test_rl_scale_draws_smaller_shapes_on_rl_boards():
    """Fig. 6's lever: RL/eval boards use rl_scale; SFT boards keep min/max_scale. Measured as coloured pixels."""
    cfg = Config(rl_scale=(0.3, 0.35), min_scale=0.75, max_scale=0.8, jitter=0.0)

    def ink(item):   # non-white pixels per shape
        shapes = max(1, sum(c is not None for c in item["meta"]["scene"]))
        return int((np.asarray(item["image"].convert("RGB")) != 255).any(axis=2).sum()) / shapes
    rl = [ink(it) for it in generate_split("train", 20, 0, cfg=cfg)]
    sft = [ink(it) for it in generate_split("sft", 20, 0, cfg=cfg)]
    assert max(rl) < min(sft)
    with pytest.raises(ValueError):
        synthetic.check_config(Config(rl_scale=(0.5,)))
