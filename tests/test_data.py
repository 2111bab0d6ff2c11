import base64
import copy
import os
import json
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, trainers, AddedToken
from transformers import PreTrainedTokenizerFast
from transformers.masking_utils import find_packed_sequence_indices

import benchmarks
import chat
import data
import model

K12 = REPO.parent / "shared/data/mm-eureka-k12/k12.json"
# Qwen2's pre-tokenizer regex: the real boundary behaviour of the 38B model's tokenizer
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
CORPUS = ["<|im_start|>user\n<image>\nHow many circles are there?<|im_end|>\n",
          "<|im_start|>assistant\n<think>\nI see 2 red circles. Wait, 2 + 1 = 3.\n</think>\n\n"
          "The answer is \\boxed{3}.<|im_end|>\n", "A. 1\nB. 2\nC. 3\n0 1 2 3 4 5 6 7 8 9 + - = ( ) { } $",
          "First step\n\nSecond step\n\nThird step"]


@pytest.fixture(scope="module")
def tokenizer():
    """Qwen2-style byte-level BPE (regex split + byte level) with the R1V3 special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.add_tokens([AddedToken(chat.THINK_START, normalized=False), AddedToken(chat.THINK_END, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL[1:])


@pytest.fixture(scope="module")
def config():
    # 112px tiles, dynamic tiling up to 4 tiles + thumbnail; 16 image tokens per tile
    return model.tiny_config(dynamic_image_size=True, max_dynamic_patch=4, use_thumbnail=True)


def write_image(path, size=(112, 112), color=(200, 30, 30)):
    Image.new("RGB", size, color).save(path)
    return path


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False)

# -----------------------------------------------------------------------------
# records


def test_read_records_jsonl(tmp_path):
    (tmp_path / "img").mkdir()
    write_image(tmp_path / "img/a.png")
    absolute = str(write_image(tmp_path / "b.png"))
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"id": "q1", "images": ["img/a.png"], "question": "What colour?", "answer": "red", "difficulty": 3},
        "",
        {"id": 7, "images": [absolute], "question": "Pick", "answer": "B", "options": {"A": "x", "B": "y"},
         "source": "mmmu"},
        {"id": "q3", "images": [], "question": "1+1?", "answer": 2},
    ])
    r1, r2, r3 = data.read_records(path)
    assert (r1.id, r1.images, r1.source, r1.meta, r1.options) == \
        ("q1", [str(tmp_path / "img/a.png")], "train", {"difficulty": 3}, None)
    assert (r2.id, r2.images, r2.source, r2.options, r2.where) == ("7", [absolute], "mmmu", {"A": "x", "B": "y"},
                                                                   f"{path}:3")
    assert (r3.images, r3.answer) == ([], "2")


@pytest.mark.parametrize("bad_line, message", [
    ('{"id": "x", "images": [], "question": "q"', "invalid JSON"),
    ({"id": "x", "images": [], "question": "q"}, "missing field 'answer'"),
    ({"id": "x", "images": "a.png", "question": "q", "answer": "1"}, "field 'images' must be list"),
    ({"id": "x", "images": [3], "question": "q", "answer": "1"}, "list of non-empty path strings"),
    ({"id": "x", "images": [], "question": "q", "answer": True}, "field 'answer' must be"),
    ({"id": "x", "images": [], "question": "q", "answer": "1", "options": {"AA": "t"}}, "letters A-Z"),
    ({"id": "ok", "images": [], "question": "q", "answer": "1"}, "duplicate id 'ok' (first at"),
    ([1, 2], "must be a JSON object"),
])
def test_malformed_record_cites_file_and_line(tmp_path, bad_line, message):
    good = {"id": "ok", "images": [], "question": "q", "answer": "1"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", bad_line])
    with pytest.raises(ValueError) as e:
        data.read_records(path)
    assert str(e.value).startswith(f"{path}:3: ") and message in str(e.value)


def test_malformed_k12_item_cites_item_and_id(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps([{"id": "a", "question": "q", "answer": "1", "image_path": "a.png"},
                                {"id": "b", "question": "q", "image_path": "b.png"}]))
    with pytest.raises(ValueError, match=r"k\.json: item 1 \(id='b'\): missing field 'answer'"):
        data.read_records(path)
    path.write_text('[{"id": "a",\n "question": }]')
    with pytest.raises(ValueError, match=r"k\.json:2: invalid JSON"):
        data.read_records(path)


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    # grpo.py and eval.py read records, sft.py chat samples: all through data.read_utf8
    good = json.dumps({"id": "ok", "images": [], "question": "q", "answer": "1"}) + "\n"
    bad = b'{"id": "x", "images": [], "question": "a\xffb", "answer": "1"}\n'
    path = tmp_path / "bad.jsonl"
    path.write_bytes(good.encode() * 3 + bad)
    with pytest.raises(ValueError, match=r"bad\.jsonl:4: not UTF-8: byte b'\\xff' at column 41"):
        data.read_records(path)
    chat = tmp_path / "chat.jsonl"
    line = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    chat.write_bytes((line + "\n").encode() + line.encode().replace(b"yo", b"y\xc3") + b"\n")
    with pytest.raises(ValueError, match=r"chat\.jsonl:2: not UTF-8"):
        data.read_chat_jsonl(chat)
    k12 = tmp_path / "k.json"
    k12.write_bytes(b'[\n{"id": "a", "question": "q\xfe", "answer": "1", "image_path": "a.png"}]')
    with pytest.raises(ValueError, match=r"k\.json:2: not UTF-8"):
        data.read_records(k12)


def test_bom_torn_last_line_and_nan_gold(tmp_path):
    record = {"id": "a", "images": [], "question": "q", "answer": "1"}
    one = tmp_path / "bom.jsonl"   # a one-line file with a UTF-8 byte-order mark and no final newline
    one.write_bytes(b"\xef\xbb\xbf" + json.dumps(record).encode())
    assert [r.id for r in data.read_records(one)] == ["a"]
    k12 = tmp_path / "bom.json"
    k12.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"id": "a", "question": "q", "answer": "1",
                                                    "image_path": "a.png"}]).encode())
    assert [r.id for r in data.read_records(k12)] == ["a"]
    # an input file's malformed last line without a newline is an error naming it, not a silent drop
    torn = tmp_path / "torn.jsonl"
    torn.write_text(json.dumps(record) + "\n" + json.dumps({**record, "id": "b"})[:-5])
    with pytest.raises(ValueError, match=r"torn\.jsonl:2: invalid JSON: .*the last line, without a newline"):
        data.read_records(torn)
    # ... while a log our runs append to (metrics.jsonl) drops it: the remains of a killed append
    assert [row["id"] for _, row in data.read_jsonl(torn, appended_log=True)] == ["a"]
    for constant in ("NaN", "Infinity", "-Infinity"):
        bad = tmp_path / "nan.jsonl"
        bad.write_text(json.dumps(record) + "\n" + '{"id": "n", "images": [], "question": "q", "answer": '
                       + constant + "}\n")
        with pytest.raises(ValueError, match=r"nan\.jsonl:2: field 'answer' is (nan|inf|-inf) \(JSON NaN/Infinity\)"):
            data.read_records(bad)


def test_16_bit_and_float_images_scale_to_8_bit(tmp_path):
    """A 16-bit grayscale PNG (PIL mode I;16) keeps its gray levels in RGB, from JSONL records and from a TSV's
    base64 cell (PIL's own convert clips everything above 255: all white)."""
    levels = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)   # x 255/65535 -> 0, 1, 128, 255
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"   # a real 16-bit PNG
    rgb = np.asarray(data.load_image(tmp_path / "deep.png"))
    assert rgb.shape == (1, 4, 3) and rgb[0, :, 0].tolist() == [0, 1, 128, 255] and (rgb[..., 0] == rgb[..., 2]).all()
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "images": ["deep.png"], "question": "q", "answer": "1"}])
    pixels = data.image_to_pixel_values(data.load_image(data.read_records(path)[0].images[0]),
                                        model.tiny_config(dynamic_image_size=False))
    assert pixels.std() > 0.1   # gray levels survive, not one white tile
    cell = base64.b64encode((tmp_path / "deep.png").read_bytes()).decode()
    header = ["index", "question", "answer", "image"]
    (tmp_path / "DEEP.tsv").write_text("\t".join(header) + "\n" + "\t".join(["0", "What?", "1", cell]) + "\n")
    item = benchmarks.read_benchmark(tmp_path / "DEEP.tsv")[0]
    assert np.asarray(benchmarks.load_rgb(item.images[0]))[0, :, 1].tolist() == [0, 1, 128, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))   # mode F in 0..1
    assert np.asarray(data.to_rgb(floats))[0, :, 0].tolist() == [0, 128, 255]


def test_k12_json_reads_all_records_with_images():
    records = data.read_records(K12)
    assert len(records) == 500 and len({r.id for r in records}) == 500
    assert all(len(r.images) == 1 and Path(r.images[0]).is_file() and r.source == "k12" for r in records)
    assert records[0].images[0] == str(K12.parent / "images" / f"{records[0].id}.png")
    data.check_images(records)
    assert data.load_image(records[0].images[0]).mode == "RGB"


def test_missing_or_unreadable_image_names_the_path(tmp_path, tokenizer, config):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        data.load_image(missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="garbage.png"):
        data.load_image(garbage)
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "images": ["nope.png"], "question": "q", "answer": "1"}])
    records = data.read_records(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.png.*r\.jsonl:1"):
        data.encode_prompt(tokenizer, config, records[0])
    with pytest.raises(FileNotFoundError, match=r"r\.jsonl:1: image not found: .*nope\.png"):
        data.check_images(records)


@pytest.mark.parametrize("size,tiles", [
    ((448, 448), 1),           # exact 1:1, no thumbnail for a single tile
    ((896, 448), 3),           # 2x1 + thumbnail
    ((1344, 448), 4),          # 3x1 + thumbnail
    ((800, 600), 13),          # 4:3 exactly -> 4x3 + thumbnail
    ((1000, 100), 11),         # 10:1 -> 10x1 + thumbnail
    ((100, 1000), 11),
    ((500, 500), 1),           # ties at 1:1 go to bigger grids only if area > half their pixels
    ((1000, 1000), 10),        # 3x3 (1e6 > 0.5*448^2*9) + thumbnail
])
def test_tile_counts_follow_internvl_rule(size, tiles):
    assert len(data.dynamic_preprocess(Image.new("RGB", size), 1, 12, 448, True)) == tiles


def test_pixel_values_are_imagenet_normalised():
    cfg = model.ModelConfig.from_json(REPO / "config" / "internvl3-1b.json")
    pv = data.image_to_pixel_values(Image.new("RGB", (896, 448), (255, 0, 0)), cfg)
    assert pv.shape == (3, 3, 448, 448)
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    assert torch.allclose(pv[:, :, 100, 100], torch.tensor(expected).expand(3, 3), atol=1e-5)

# -----------------------------------------------------------------------------
# prompts


def test_format_question():
    r = data.Record(id="1", question="Which is larger?", answer="A", images=["a.png", "b.png"],
                    options={"A": "3", "B": "2"}, source="t")
    assert data.format_question(r) == ("<image>\n<image>\nWhich is larger?\nA. 3\nB. 2\n\n"
                                       "Please reason step by step, and put your final answer within \\boxed{}.")
    r.question = "Compare <image> with <image>."
    assert data.format_question(r, instruction=None) == "Compare <image> with <image>.\nA. 3\nB. 2"
    r.images = ["a.png"]
    with pytest.raises(ValueError, match="2 <image> markers but the record has 1 images"):
        data.format_question(r)


def test_encode_prompt(tmp_path, tokenizer, config):
    write_image(tmp_path / "wide.png", size=(224, 112))   # 2:1 -> 2x1 grid + thumbnail = 3 tiles
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "images": ["wide.png"], "question": "Area?", "answer": "2"}])
    record = data.read_records(path)[0]
    out = data.encode_prompt(tokenizer, config, record, system="Be brief.")
    assert out["num_tiles"] == [3] and out["pixel_values"].shape == (3, 3, 112, 112)
    context = tokenizer.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    assert out["input_ids"].count(context) == 3 * config.num_image_token == 48
    assert out["prompt"] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>\nArea?\n\n"
                             + data.DEFAULT_INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n<think>\n")
    expanded = out["prompt"].replace("<image>", "<img>" + "<IMG_CONTEXT>" * 48 + "</img>")
    assert decode(tokenizer, out["input_ids"]) == expanded
    assert data.encode_prompt(tokenizer, config, record, mode="nothink")["prompt"].endswith("assistant\n")
    one_tile = data.encode_prompt(tokenizer, config, record, system="Be brief.", max_tiles=1)
    assert one_tile["num_tiles"] == [1] and len(one_tile["input_ids"]) == len(out["input_ids"]) - 32
    n = len(out["input_ids"])
    assert data.encode_prompt(tokenizer, config, record, system="Be brief.", max_prompt_tokens=n) is not None
    assert data.encode_prompt(tokenizer, config, record, system="Be brief.", max_prompt_tokens=n - 1) is None



def test_huge_question_is_skipped_before_tokenizing(tmp_path, tokenizer, config, monkeypatch):
    """A question far over max_prompt_tokens is refused by its length alone: the tokenizer never sees it (one
    100 MB line took 267 s and 18.7 GB to tokenise before the length check)."""
    limit = 300
    huge = "How many? " * (2 * limit * max(len(t) for t in tokenizer.get_vocab()))   # far over the limit
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": "1", "images": [], "question": "Area?", "answer": "2"},
                                              {"id": "2", "images": [], "question": huge, "answer": "2"}])
    small, big = data.read_records(path)
    seen = []
    real = tokenizer.encode
    monkeypatch.setattr(tokenizer, "encode", lambda text, **kw: seen.append(len(text)) or real(text, **kw))
    assert data.encode_prompt(tokenizer, config, big, max_prompt_tokens=limit) is None
    assert seen == []   # not tokenised
    assert data.encode_prompt(tokenizer, config, small, max_prompt_tokens=limit) is not None and len(seen) == 1
    # without a limit it is tokenised, and it is indeed over the limit: the bound never skips a prompt that fits
    assert len(data.encode_prompt(tokenizer, config, big)["input_ids"]) > limit

# -----------------------------------------------------------------------------
# SFT chat data


THINK1 = "<think>\nThe square is red. Wait, 2 + 1 = 3.\n</think>\n\nThe answer is \\boxed{3}."
ANSWER2 = "B. 2"


def chat_file(tmp_path):
    write_image(tmp_path / "one.png", size=(224, 112))   # 3 tiles
    write_image(tmp_path / "two.png", size=(112, 112))   # 1 tile
    return write_jsonl(tmp_path / "sft.jsonl", [{"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "<image>\nHow many circles?"},
        {"role": "assistant", "content": THINK1},
        {"role": "user", "content": "And here? <image>\nA. 1\nB. 2"},
        {"role": "assistant", "content": ANSWER2}], "images": ["one.png", "two.png"]}])


def test_label_masking_exact_multi_turn_with_images(tmp_path, tokenizer, config):
    sample = data.read_chat_jsonl(chat_file(tmp_path))[0]
    out = data.tokenize_chat(tokenizer, config, sample)
    ids, labels = out["input_ids"], out["labels"]
    assert out["num_tiles"] == [3, 1] and out["pixel_values"].shape == (4, 3, 112, 112) and not out["truncated"]
    assert len(ids) == len(labels)

    # labelled spans: exactly the two assistant contents, each with its <|im_end|>
    spans, start = [], None
    for t, label in enumerate(labels + [-100]):
        if label != -100 and start is None:
            start = t
        if label == -100 and start is not None:
            spans.append((start, t))
            start = None
    assert [decode(tokenizer, ids[a:b]) for a, b in spans] == [THINK1 + "<|im_end|>", ANSWER2 + "<|im_end|>"]
    assert all(labels[t] == ids[t] for a, b in spans for t in range(a, b))
    # what precedes each span is the unlabelled prefix, what follows is the unlabelled "\n"
    for a, b in spans:
        assert decode(tokenizer, ids[:a]).endswith("<|im_end|>\n<|im_start|>assistant\n")
        assert decode(tokenizer, ids[b:b + 1]) == "\n" and labels[b] == -100
    assert b == len(ids) - 1   # the sequence ends with the last assistant turn's trailing "\n"

    # turn-by-turn tokenisation equals tokenising the full ChatML text (Qwen2 pre-tokenizer)
    expanded = [dict(m) for m in sample["messages"]]
    expanded[1]["content"] = chat.expand_image_tokens(expanded[1]["content"], [3], config.num_image_token)
    expanded[3]["content"] = chat.expand_image_tokens(expanded[3]["content"], [1], config.num_image_token)
    full = chat.build_prompt(expanded, add_generation_prompt=False, tokenizer=tokenizer)
    assert ids == tokenizer.encode(full, add_special_tokens=False)
    context = tokenizer.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    assert ids.count(context) == 4 * config.num_image_token


def test_label_boundary_with_leading_whitespace(tokenizer, config):
    # "assistant\n" + "\n\nx": the BPE pre-tokenizer would merge the newlines across the prefix/content
    # boundary in full-text tokenisation; turn by turn keeps the label boundary exact (documented choice)
    sample = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\n\nx"}],
              "images": []}
    out = data.tokenize_chat(tokenizer, config, sample)
    labelled = [t for t, label in zip(out["input_ids"], out["labels"]) if label != -100]
    assert decode(tokenizer, labelled) == "\n\nx<|im_end|>"
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n\n\nx<|im_end|>\n"
    assert decode(tokenizer, out["input_ids"]) == text
    assert out["input_ids"] != tokenizer.encode(text, add_special_tokens=False)   # the merge it avoids
    assert out["pixel_values"] is None and out["num_tiles"] == []


def test_overlong_chat_truncate_skip_error(tmp_path, tokenizer, config):
    sample = data.read_chat_jsonl(chat_file(tmp_path))[0]
    full = data.tokenize_chat(tokenizer, config, sample)
    img_start = tokenizer.convert_tokens_to_ids(chat.IMG_START_TOKEN)
    second_image = [t for t, i in enumerate(full["input_ids"]) if i == img_start][1]
    cut = second_image + 5   # inside the second image's token run
    out = data.tokenize_chat(tokenizer, config, sample, max_len=cut)
    assert out["truncated"] and out["input_ids"] == full["input_ids"][:second_image]
    assert out["num_tiles"] == [3] and torch.equal(out["pixel_values"], full["pixel_values"][:3])
    assert out["labels"] == full["labels"][:second_image]
    assert data.tokenize_chat(tokenizer, config, sample, max_len=cut, overflow="skip") is None
    with pytest.raises(ValueError, match="tokens > max_len"):
        data.tokenize_chat(tokenizer, config, sample, max_len=cut, overflow="error")
    assert data.tokenize_chat(tokenizer, config, sample, max_len=20) is None   # no assistant token left
    assert data.tokenize_chat(tokenizer, config, sample, max_len=len(full["input_ids"]))["truncated"] is False


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "user", "content": "<image> <image>"}, {"role": "assistant", "content": "a"}],
      "images": ["a.png"]}, "2 <image> markers but 1 images"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "roles must be"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "q2"}]}, "roles must be"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<image>"}],
      "images": ["a.png"]}, "only allowed in user turns"),
    ({"messages": [{"role": "human", "content": "q"}]}, "messages[0] must be"),
    ({"messages": []}, "non-empty list"),
])
def test_malformed_chat_cites_file_and_line(tmp_path, row, message):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "c.jsonl", [good, row])
    with pytest.raises(ValueError) as e:
        data.read_chat_jsonl(path)
    assert str(e.value).startswith(f"{path}:2: ") and message in str(e.value)


def test_chat_without_markers_gets_them_prepended(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "images": ["x.png", "sub/y.png"]}])
    sample = data.read_chat_jsonl(path)[0]
    assert sample["messages"][1]["content"] == "<image>\n<image>\nq"
    assert sample["images"] == [str(tmp_path / "x.png"), str(tmp_path / "sub/y.png")]
    assert sample["where"] == f"{path}:1"

# -----------------------------------------------------------------------------
# collation


def fake(n, tiles=0, first=1):
    ids = list(range(first, first + n))
    return {"input_ids": ids, "labels": [-100] + ids[1:],
            "pixel_values": torch.full((tiles, 3, 8, 8), float(first)) if tiles else None}


def test_collate_right_padded_and_dummy_tile():
    batch = data.collate_right_padded([fake(3, tiles=2, first=10), fake(5), fake(2, tiles=1, first=20)],
                                      pad_id=0, image_size=8)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 0, 0], [1, 2, 3, 4, 5], [20, 21, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 11, 12, -100, -100], [-100, 2, 3, 4, 5], [-100, 21, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["pixel_values"].shape == (3, 3, 8, 8) and batch["image_flags"].tolist() == [1, 1, 1]
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [10, 10, 20]   # sample order = <IMG_CONTEXT> run order

    text_only = data.collate_right_padded([fake(3), fake(2)], pad_id=0, image_size=8)
    assert text_only["pixel_values"].shape == (1, 3, 8, 8) and text_only["image_flags"].tolist() == [0]
    assert text_only["pixel_values"].abs().sum() == 0
    no_dummy = data.collate_right_padded([fake(3)], pad_id=0, image_size=None)
    assert no_dummy["pixel_values"] is None and no_dummy["image_flags"] is None


def test_pack_samples_and_token_budget_groups():
    samples = [fake(5, tiles=1, first=10), fake(4, first=30), fake(6, tiles=2, first=50)]
    samples[1]["labels"] = samples[1]["input_ids"]   # fully labelled: packing must still cut the boundary loss
    packed = data.pack_samples(samples, max_len=10, pad_id=0, image_size=8)
    assert packed["seq_lens"] == [[5, 4], [6]]
    assert packed["input_ids"].tolist() == [[10, 11, 12, 13, 14, 30, 31, 32, 33], [50, 51, 52, 53, 54, 55, 0, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 0, 0]]
    assert packed["labels"][0, 5] == -100 and packed["labels"][0, 6] == 31 and packed["labels"][1, 6:].eq(-100).all()
    assert packed["image_flags"].tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="11 tokens > pack max_len 10"):
        data.pack_samples([fake(11)], max_len=10)
    one_row = data.pack_samples([{"input_ids": [1, 2]}, {"input_ids": [3, 4, 5]}], max_len=5)   # no labels
    assert one_row["input_ids"].tolist() == [[1, 2, 3, 4, 5]] and "labels" not in one_row
    # what transformers reads from these position ids: one sequence per sample, each pad a sequence of its own
    assert find_packed_sequence_indices(packed["position_ids"]).tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 1],
                                                                             [0, 0, 0, 0, 0, 0, 1, 2, 3]]

    assert data.token_budget_groups([5, 4, 6, 12, 1, 1], 10) == [[0, 1], [2], [3], [4, 5]]
    assert data.token_budget_groups([], 10) == []
    with pytest.raises(ValueError, match="token budget"):
        data.token_budget_groups([1], 0)


def test_collate_left_padded():
    batch = data.collate_left_padded([{"input_ids": [5, 6, 7], "pixel_values": None}, [8]], pad_id=0, image_size=8)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["prompt_lens"] == [3, 1] and batch["image_flags"].tolist() == [0]

# -----------------------------------------------------------------------------
# data order


def test_epoch_order_and_sharding():
    order = data.epoch_order(10, seed=3, epoch=0)
    assert sorted(order) == list(range(10)) and order == data.epoch_order(10, seed=3, epoch=0)
    assert order != data.epoch_order(10, seed=3, epoch=1) and order != data.epoch_order(10, seed=4, epoch=0)
    shards = [data.shard_indices(order, rank, 3) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10)) and [len(s) for s in shards] == [4, 3, 3]


def test_next_batch_resumes_exactly():
    state, straight = (0, 0), []
    for _ in range(5):
        batch, state = data.next_batch(10, 4, seed=1, state=state)
        straight.append(batch)
    # epoch 0: [0:4], [4:8] (tail of 2 dropped), epoch 1: [0:4], [4:8], epoch 2: [0:4]
    assert straight[0] + straight[1] == data.epoch_order(10, 1, 0)[:8]
    assert straight[2] + straight[3] == data.epoch_order(10, 1, 1)[:8] and state == (2, 4)
    state, resumed = (0, 0), []
    for _ in range(2):
        batch, state = data.next_batch(10, 4, seed=1, state=state)
        resumed.append(batch)
    saved = json.loads(json.dumps(state))   # as it would round-trip through a checkpoint
    state = tuple(saved)
    for _ in range(3):
        batch, state = data.next_batch(10, 4, seed=1, state=state)
        resumed.append(batch)
    assert resumed == straight
    with pytest.raises(ValueError, match="batch_size 11"):
        data.next_batch(10, 11, seed=1, state=(0, 0))


def test_label_masking_with_the_checkpoint_template(tmp_path, tokenizer, config):
    sample = data.read_chat_jsonl(chat_file(tmp_path))[0]
    plain = data.tokenize_chat(tokenizer, config, sample)
    demo = copy.deepcopy(tokenizer)
    demo.chat_template = chat.CHAT_TEMPLATE   # the demo tokenizer's template: exactly today's samples
    same = data.tokenize_chat(demo, config, sample)
    assert torch.equal(same.pop("pixel_values"), plain.pop("pixel_values")) and same == plain

    # a template that injects a default system turn when the sample has none
    injected = "<|im_start|>system\nYou are Skywork-R1V.<|im_end|>\n"
    templated = copy.deepcopy(tokenizer)
    templated.chat_template = ("{%- if messages[0]['role'] != 'system' %}{{- '" + injected.replace("\n", "\\n")
                               + "' }}{%- endif %}" + chat.CHAT_TEMPLATE)
    sample["messages"] = sample["messages"][1:]   # drop the sample's own system turn
    out = data.tokenize_chat(templated, config, sample)
    ids, labels = out["input_ids"], out["labels"]
    assert decode(templated, ids).startswith(injected + "<|im_start|>user\n<img>")
    assert all(label == -100 for label in labels[:len(templated.encode(injected, add_special_tokens=False))])
    labelled = [i for i, label in enumerate(labels) if label != -100]
    spans = [[labelled[0]]]
    for t in labelled[1:]:
        spans[-1].append(t) if t == spans[-1][-1] + 1 else spans.append([t])
    assert [decode(templated, [ids[t] for t in s]) for s in spans] == [THINK1 + "<|im_end|>", ANSWER2 + "<|im_end|>"]
    expanded = [dict(m) for m in sample["messages"]]   # token for token apply_chat_template's output
    expanded[0]["content"] = chat.expand_image_tokens(expanded[0]["content"], [3], config.num_image_token)
    expanded[2]["content"] = chat.expand_image_tokens(expanded[2]["content"], [1], config.num_image_token)
    assert ids == templated.apply_chat_template(expanded, tokenize=True, return_dict=False)

    # a template that rewrites past assistant turns (drops their think block) cannot give exact labels
    templated.chat_template = chat.CHAT_TEMPLATE.replace("message['content']",
                                                         "message['content'].split('</think>')[-1]")
    with pytest.raises(ValueError, match="does not write assistant turn 1 verbatim"):
        data.tokenize_chat(templated, config, sample)
