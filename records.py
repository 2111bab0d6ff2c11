"""
Question records, the one JSONL reader and writer, and the question text: what every script that reads data needs,
without torch, so that tables.py and synthetic.py start in a fraction of a second (data.py, which tokenizes,
tiles images and collates for training, re-exports all of it as data.X).

  Record / read_records    our JSONL or a JSON list (the K12 file), each malformed record a ValueError at file:line
  read_jsonl / write_jsonl any JSONL (metrics, generations), read with file:line on every row
  format_question          the user-turn text of a record: <image> markers, question, options, instruction
"""

import codecs
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_MARKER = "<image>"                          # placeholder that chat.expand_image_tokens expands
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# the demo's NoThink prompt (Table 4): its SFT pairs it with direct answers, so the prompt, not chance, picks the mode
NOTHINK_INSTRUCTION = "Answer directly, and put your final answer within \\boxed{}."
OPTION_LETTER = re.compile(r"^[A-Z]$")


@dataclass
class Record:
    id: str
    question: str
    answer: str
    images: list[str]                  # absolute paths
    options: dict[str, str] | None     # {"A": text, ...} for multiple choice, else None
    source: str                        # the record's "source" field, else the data file's stem (e.g. "k12")
    meta: dict = field(default_factory=dict)   # any other fields of the record, untouched
    where: str = ""                    # "file:line" (JSONL) or "file: item N" (json list), for error messages


def read_utf8(path) -> str:
    """The text of a data file, without a leading UTF-8 byte-order mark (Windows editors write one); bytes that are
    not UTF-8 are a ValueError citing file:line (not a byte offset)."""
    raw = Path(path).read_bytes()
    raw = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{path}:{line}: not UTF-8: byte {raw[e.start:e.start + 1]!r} at column {column} "
                         f"({e.reason}); re-encode the file as UTF-8") from None


def read_jsonl(path, appended_log: bool = False) -> list[tuple[str, object]]:
    """JSONL -> [("file:line", parsed value)], blank lines skipped; invalid JSON is a ValueError citing
    file:line, the last line's too: in an input file a cut-off last line is a damaged file. appended_log=True for
    the files our runs append to (metrics.jsonl, generations, progress): there a LAST line without its newline
    that does not parse is the remains of an interrupted append (a crash, a full disk): dropped, with a note."""
    located = []
    text = read_utf8(path)
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            located.append((f"{path}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as e:
            torn = lineno == len(lines) and not text.endswith("\n")
            if torn and appended_log:
                print(f"{path}:{lineno}: dropping a torn last line (an interrupted write)")
                break
            cut = " (the last line, without a newline: is the file cut off?)" if torn else ""
            raise ValueError(f"{path}:{lineno}: invalid JSON: {e.msg}{cut}") from None
    return located


def write_jsonl(path, rows):
    """Rows as JSONL, atomically (a temporary file renamed over path)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def read_records(path) -> list[Record]:
    """Our JSONL or a JSON list (the K12 file). Any malformed record is a ValueError citing its location."""
    path = Path(path)
    text = read_utf8(path)
    if text.lstrip().startswith("["):   # a JSON list: the K12 format (our JSONL records are accepted in it too)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        located = []
        for n, item in enumerate(items):
            item_id = item.get("id") if isinstance(item, dict) else None
            located.append((f"{path}: item {n} (id={item_id!r})", item))
    else:
        located = read_jsonl(path)

    records, first_seen = [], {}
    for where, item in located:
        record = _record_from_dict(item, path, where)
        if record.id in first_seen:
            raise ValueError(f"{where}: duplicate id {record.id!r} (first at {first_seen[record.id]})")
        first_seen[record.id] = where
        records.append(record)
    return records


def _record_from_dict(item, path: Path, where: str) -> Record:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: a record must be a JSON object, got {type(item).__name__}")
    item = dict(item)

    def take(key, types, required=True):
        if key not in item:
            if required:
                raise ValueError(f"{where}: missing field {key!r}")
            return None
        value = item.pop(key)
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise ValueError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}: {value!r:.80}")
        return value

    record_id = str(take("id", (str, int)))
    question = take("question", str)
    answer = take("answer", (str, int, float))   # gold numbers written as JSON numbers are fine
    if isinstance(answer, float) and not math.isfinite(answer):   # json.loads reads NaN / Infinity
        raise ValueError(f"{where}: field 'answer' is {answer} (JSON NaN/Infinity), not a gold answer")
    if not record_id or not question.strip() or str(answer).strip() == "":
        raise ValueError(f"{where}: empty id, question or answer")

    if "images" in item and "image_path" in item:
        raise ValueError(f"{where}: give either 'images' or 'image_path', not both")
    if "image_path" in item:   # the K12 json: one image per record
        images = [take("image_path", str)]
    else:
        images = take("images", list)
    for image in images:
        if not isinstance(image, str) or not image:
            raise ValueError(f"{where}: 'images' must be a list of non-empty path strings, got {images!r:.120}")
    images = [str(path.parent / image) for image in images]   # an absolute image path wins over the parent

    options = take("options", (dict, list), required=False)
    if isinstance(options, list):   # ["x", "y"] means {"A": "x", "B": "y"}
        options = {chr(ord("A") + i): text for i, text in enumerate(options)}
    if options is not None:
        if not options or len(options) > 26:
            raise ValueError(f"{where}: 'options' must have 1..26 entries")
        for letter, text in options.items():
            if not OPTION_LETTER.match(letter) or not isinstance(text, str):
                raise ValueError(f"{where}: 'options' must map letters A-Z to strings, got {letter!r}: {text!r:.80}")

    source = item.pop("source", None)
    source = source if isinstance(source, str) and source else path.stem
    return Record(id=record_id, question=question, answer=str(answer), images=images,
                  options=options, source=source, meta=item, where=where)


def format_question(record: Record, instruction: str | None = DEFAULT_INSTRUCTION) -> str:
    """User-turn text: "<image>\\n" per image + question + "A. text\\nB. text" options + instruction.
    A question that already places its <image> markers keeps them (their count must match the images)."""
    n_markers = record.question.count(IMAGE_MARKER)
    if n_markers == 0:
        text = IMAGE_MARKER + "\n"
        text = text * len(record.images) + record.question.strip()
    elif n_markers == len(record.images):
        text = record.question.strip()
    else:
        raise ValueError(f"{record.where}: question has {n_markers} {IMAGE_MARKER} markers "
                         f"but the record has {len(record.images)} images")
    if record.options:
        text += "\n" + "\n".join(f"{letter}. {option}" for letter, option in record.options.items())
    if instruction:
        text += "\n\n" + instruction
    return text
