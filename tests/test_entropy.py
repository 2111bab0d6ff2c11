import json
import math
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

import chat
import data
import entropy as E
import logprobs as L
import model
import token_entropy as TE


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny tensors gain nothing from intra-op threads, and on a shared 2-core box they fight (5x slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def naive_logprob_entropy(logits, targets, temperature=1.0):
    """The reference: full log_softmax over [N, V]."""
    logp_all = torch.log_softmax(logits.float() / temperature, -1)
    logp = logp_all.gather(-1, targets[:, None])[:, 0]
    probs = logp_all.exp()
    entropy = -(probs * torch.where(probs > 0, logp_all, torch.zeros_like(logp_all))).sum(-1)
    return logp, entropy

# -----------------------------------------------------------------------------
# math


def test_uniform_entropy_is_log_v_and_one_hot_is_zero():
    V = 1000
    logp, ent = L.logprobs_and_entropy_from_logits(torch.zeros(3, V), torch.tensor([0, 5, 999]), chunk_size=2)
    assert torch.allclose(ent, torch.full((3,), math.log(V)), atol=1e-5)
    assert torch.allclose(logp, torch.full((3,), -math.log(V)), atol=1e-5)
    # the same from hidden states: zero hidden -> zero logits -> uniform
    logp, ent = L.token_logprobs_and_entropy(torch.zeros(4, 8), torch.randn(V, 8), torch.tensor([1, 2, 3, 4]))
    assert torch.allclose(ent, torch.full((4,), math.log(V)), atol=1e-5)

    one_hot = torch.full((2, V), float("-inf"))
    one_hot[0, 7] = 0.0
    one_hot[1, 3] = 12.0
    logp, ent = L.logprobs_and_entropy_from_logits(one_hot, torch.tensor([7, 4]))
    assert ent.tolist() == [0.0, 0.0]
    assert logp[0].item() == 0.0 and logp[1].item() == float("-inf")
    gap = torch.zeros(1, V)
    gap[0, 0] = 1e4  # a finite logit gap that large is one-hot in fp32
    assert abs(L.logprobs_and_entropy_from_logits(gap, torch.tensor([0]))[1].item()) < 1e-6


def test_hand_computed_two_token_distribution():
    logits = torch.log(torch.tensor([[0.25, 0.75]]))
    logp, ent = L.logprobs_and_entropy_from_logits(logits + 3.0, torch.tensor([1]))  # shift-invariant
    assert ent.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)  # 0.5623351
    assert logp.item() == pytest.approx(math.log(0.75), abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_equals_naive_values_and_grads_from_hidden(temperature):
    torch.manual_seed(0)
    N, D, V = 37, 16, 50  # 37 rows in chunks of 8: a ragged last chunk
    hidden = torch.randn(N, D, requires_grad=True)
    weight = torch.randn(V, D, requires_grad=True)
    targets = torch.randint(0, V, (N,))
    a, b = torch.randn(N), torch.randn(N)

    logp, ent = L.token_logprobs_and_entropy(hidden, weight, targets, chunk_size=8, with_grad=True,
                                             temperature=temperature)
    (a * logp + b * ent).sum().backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ref_logp, ref_ent = naive_logprob_entropy(hidden @ weight.T, targets, temperature)
    (a * ref_logp + b * ref_ent).sum().backward()

    assert torch.allclose(logp, ref_logp, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-5)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-5, rtol=1e-4)
    assert torch.allclose(grads[1], weight.grad, atol=1e-5, rtol=1e-4)
    # the logging path: same numbers, no graph
    logp2, ent2 = L.token_logprobs_and_entropy(hidden, weight, targets, chunk_size=8, temperature=temperature)
    assert logp2.grad_fn is None and ent2.grad_fn is None
    assert torch.allclose(logp2, ref_logp, atol=1e-5) and torch.allclose(ent2, ref_ent, atol=1e-5)


def test_from_logits_grads_with_banned_tokens():
    torch.manual_seed(1)
    N, V = 10, 30
    allowed = torch.ones(V, dtype=torch.bool)
    allowed[[2, 11, 29]] = False  # banned: -inf logits
    base = torch.randn(N, V) * 3
    logits = base.masked_fill(~allowed, float("-inf")).requires_grad_()
    targets = torch.randint(0, int(allowed.sum()), (N,))
    full_targets = allowed.nonzero()[:, 0][targets]  # the same tokens in the full vocabulary
    logp, ent = L.logprobs_and_entropy_from_logits(logits, full_targets, chunk_size=3, with_grad=True)
    (logp + 0.5 * ent).sum().backward()

    kept = base[:, allowed].clone().requires_grad_()  # reference: the banned columns removed altogether
    ref_logp, ref_ent = naive_logprob_entropy(kept, targets)
    (ref_logp + 0.5 * ref_ent).sum().backward()
    assert torch.allclose(logp, ref_logp, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-5)
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, ~allowed] == 0).all()
    assert torch.allclose(logits.grad[:, allowed], kept.grad, atol=1e-6)


def test_bf16_hidden_keeps_dtypes_and_matches_its_own_logits():
    torch.manual_seed(2)
    hidden = torch.randn(20, 32, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(64, 32, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 64, (20,))
    logp, ent = L.token_logprobs_and_entropy(hidden, weight, targets, chunk_size=7, with_grad=True)
    assert logp.dtype == ent.dtype == torch.float32
    ref_logp, ref_ent = naive_logprob_entropy(hidden @ weight.T, targets)  # bf16 logits, fp32 softmax
    assert torch.allclose(logp, ref_logp, atol=1e-4) and torch.allclose(ent, ref_ent, atol=1e-4)
    ent.sum().backward()
    assert hidden.grad.dtype == weight.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_lm_head_weight_gradient_gemm_runs_in_tf32_for_a_bf16_model(dtype):
    """The [V, C] @ [C, D] fp32 GEMM of the lm_head weight gradient (one per chunk) runs with cuBLAS's fp32
    precision at "tf32" for a bf16 model, and only that GEMM: the forward's and the hidden gradient's matmuls and
    everything after see the process's setting; an fp32 model stays IEEE. Read inside each aten call."""

    class PrecisionAtEachCall(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.addmm_.default, torch.ops.aten.mm.default):
                self.calls.append((func.__name__, torch.backends.cuda.matmul.fp32_precision))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(3)
    hidden = torch.randn(20, 32, dtype=dtype, requires_grad=True)
    weight = torch.randn(64, 32, dtype=dtype, requires_grad=True)
    before = torch.backends.cuda.matmul.fp32_precision
    logp, ent = L.token_logprobs_and_entropy(hidden, weight, torch.randint(0, 64, (20,)), chunk_size=8,
                                             with_grad=True)
    with PrecisionAtEachCall() as mode:
        (logp + ent).sum().backward()
    weight_grad_gemms = [p for f, p in mode.calls if f.startswith("addmm_")]
    assert len(weight_grad_gemms) == 3   # ceil(20 / 8) chunks
    assert set(weight_grad_gemms) == {"tf32" if dtype == torch.bfloat16 else before}
    assert {p for f, p in mode.calls if not f.startswith("addmm_")} == {before}   # the other matmuls
    assert torch.backends.cuda.matmul.fp32_precision == before and weight.grad is not None


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="does not match hidden"):
        L.token_logprobs_and_entropy(torch.zeros(3, 8), torch.zeros(10, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="one id per row"):
        L.logprobs_and_entropy_from_logits(torch.zeros(3, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="torch.long"):
        L.logprobs_and_entropy_from_logits(torch.zeros(3, 8), torch.zeros(3, dtype=torch.int32))

# -----------------------------------------------------------------------------
# critical tokens


@pytest.fixture(scope="module")
def tokenizer():
    return chat.build_tiny_tokenizer()


def expected_word_starts(tokenizer, text):
    """Independent reference: regex word matches (longest phrase first) -> the token holding the first letter."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    pattern = r"\b(But wait|Let me check|Wait|Alternatively|Hmm|However)\b"
    starts = [m.start() for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
    return enc["input_ids"], [next(i for i, (s, e) in enumerate(enc["offset_mapping"]) if s <= c < e) for c in starts]


def test_critical_positions_single_and_multi_token_words(tokenizer):
    seqs = TE.critical_token_sequences(tokenizer)
    single = tokenizer.encode(" Wait", add_special_tokens=False)
    assert len(single) == 1 and single in seqs                      # " Wait" is one token of the tiny vocabulary
    assert tokenizer.encode("Wait", add_special_tokens=False) in seqs  # "Wait" after a newline: two tokens
    assert len(tokenizer.encode("Wait", add_special_tokens=False)) == 2
    but_wait = tokenizer.encode("But wait", add_special_tokens=False)
    assert len(but_wait) > 2 and but_wait in seqs

    text = ("Hmm, 2 + 1 = 3. Wait, let me check again.\nWait, that is wrong. But wait, count. "
            "Alternatively, the answer is 3.\nHowever it is 4.")
    ids, expected = expected_word_starts(tokenizer, text)
    assert len(expected) == 7
    got = TE.critical_positions(ids, seqs)
    assert got == expected
    # the "But wait" phrase starts at "B", and its " wait" is not a second start
    b = ids.index(tokenizer.encode("B", add_special_tokens=False)[0])
    assert b in got and not any(b < t < b + len(but_wait) for t in got)
    # batched mask (GRPO's use) == per-row positions; padding never matches
    batch = torch.full((2, len(ids) + 3), tokenizer.pad_token_id)
    batch[0, :len(ids)] = torch.tensor(ids)
    batch[1, :5] = torch.tensor(ids[:5])
    mask = TE.critical_mask(batch, seqs)
    assert mask[0].nonzero()[:, 0].tolist() == expected
    assert mask[1].nonzero()[:, 0].tolist() == [t for t in expected if t + 1 <= 5]


def test_critical_positions_custom_words_and_alignment_convention(tokenizer):
    seqs = TE.critical_token_sequences(tokenizer, words=["Hmm"])
    response = tokenizer.encode("So 3. Hmm, no.", add_special_tokens=False)
    (t,) = TE.critical_positions(response, seqs)
    assert tokenizer.decode(response[t:]).startswith(" Hmm")
    # entropy[t] belongs to the distribution that emitted response[t]: a hand-made entropy row picks it
    ent = torch.arange(len(response), dtype=torch.float32)
    m = TE.entropy_metrics(ent, critical=TE.critical_mask(response, seqs))
    assert m["critical_entropy_mean"] == float(t) and m["critical_count"] == 1

# -----------------------------------------------------------------------------
# metrics and correlations


def test_entropy_metrics_hand_computed():
    ent = torch.tensor([[1.0, 2.0, 7.0, float("nan")], [7.5, 3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    crit = torch.tensor([[0, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)  # [0,3] is padding: ignored
    m = TE.entropy_metrics(ent, mask, crit, high_threshold=6.8, bins=4, hist_max=8.0)
    assert m["num_tokens"] == 5 and m["critical_count"] == 3
    assert m["mean_token_entropy"] == pytest.approx((1 + 2 + 7 + 7.5 + 3) / 5)
    assert m["critical_entropy_mean"] == pytest.approx((2 + 7 + 7.5) / 3)
    assert m["high_entropy_frac"] == pytest.approx(2 / 5)
    ps = m["per_sample"]
    assert ps["mean_token_entropy"] == pytest.approx([10 / 3, 5.25])
    assert ps["critical_entropy_mean"] == pytest.approx([4.5, 7.5])
    assert ps["critical_count"] == [2, 1] and ps["num_tokens"] == [3, 2]
    assert ps["high_entropy_frac"] == pytest.approx([1 / 3, 1 / 2])
    assert m["histogram"]["edges"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert m["histogram"]["counts"] == [1, 2, 0, 2]
    with pytest.raises(ValueError, match="same shape"):
        TE.entropy_metrics(ent, mask.T.reshape(2, 4).T, crit)  # same numel, wrong layout
    none = TE.entropy_metrics(torch.ones(3))
    assert none["critical_count"] == 0 and math.isnan(none["critical_entropy_mean"])


def test_pearson_spearman_with_ties():
    assert E.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert E.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert E.average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert E.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    x = [0.1, 1.0, 2.0, 5.0]
    assert E.spearman(x, [math.exp(v) for v in x]) == pytest.approx(1.0)
    assert E.pearson(x, [math.exp(v) for v in x]) < 0.99
    assert math.isnan(E.pearson([1, 1, 1], [1, 2, 3]))

# -----------------------------------------------------------------------------
# CLI end to end on two tiny checkpoints


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("entropy_cli")
    tok = chat.build_tiny_tokenizer()
    ckpts = []
    for seed, acc in ((0, 0.25), (1, 0.75)):
        torch.manual_seed(seed)
        cfg = model.tiny_config(vocab_size=len(tok))
        net = model.build_model(cfg)
        with torch.no_grad():  # distinct, peakier output distributions per checkpoint
            net.language_model.lm_head.weight.mul_(4.0 * (seed + 1))
        path = root / f"step_{seed:03d}"
        model.save_model(path, net.state_dict(), cfg, tokenizer=tok)
        (path / "eval").mkdir()
        (path / "eval" / "summary.json").write_text(json.dumps({"accuracy": acc}))
        ckpts.append(path)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "red.png")
    records = [{"id": "q1", "images": [], "question": "What is 2 + 1?", "answer": "3"},
               {"id": "q2", "images": ["red.png"], "question": "What colour is the image?", "answer": "red"}]
    (root / "val.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    gens = [{"id": "q1", "response": "Hmm, 2 + 1 = 3. Wait, let me check again. But wait, it is 3.</think>3"},
            {"id": "q2", "response": "I see red. Alternatively it is pink.\nHowever, red.</think>red"}]
    (root / "gens.jsonl").write_text("\n".join(json.dumps(g) for g in gens) + "\n")
    return root, ckpts, tok, gens


def test_cli_scores_generations_ranks_and_correlates(tiny_run):
    root, ckpts, tok, gens = tiny_run
    out = root / "out"
    E.main(["--checkpoints", *map(str, ckpts), "--data", str(root / "val.jsonl"),
            "--generations", str(root / "gens.jsonl"), "--out", str(out), "--chunk_size", "5"])
    table = json.loads((out / "entropy_table.json").read_text())
    assert (out / "entropy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = table["checkpoints"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["critical_entropy_mean"] > rows[1]["critical_entropy_mean"]

    # independent reference: full logits of a plain forward, log_softmax, entropy at the regex word starts
    records = {r.id: r for r in data.read_records(root / "val.jsonl")}
    for ckpt in ckpts:
        net = model.load_model(ckpt).eval()
        ents, n_tok = [], 0
        for g in gens:
            enc = data.encode_prompt(tok, net.config, records[g["id"]])
            ids, starts = expected_word_starts(tok, g["response"])
            full = torch.tensor([enc["input_ids"] + ids])
            with torch.no_grad():
                logits = net(full, pixel_values=enc["pixel_values"])[0]
            P = len(enc["input_ids"])
            _, ent = naive_logprob_entropy(logits[P - 1:-1], full[0, P:])
            ents += ent[starts].tolist()
            n_tok += len(ids)
        row = next(r for r in rows if r["checkpoint"] == str(ckpt))
        assert row["critical_count"] == len(ents) == 6 and row["num_tokens"] == n_tok
        assert row["critical_entropy_mean"] == pytest.approx(sum(ents) / len(ents), abs=1e-4)
        assert row["accuracy"] == (0.25 if ckpt.name == "step_000" else 0.75)
    # two points: |r| = 1, and its sign says whether higher critical entropy came with higher accuracy
    sign = 1.0 if rows[0]["accuracy"] > rows[1]["accuracy"] else -1.0
    assert table["correlation"]["n"] == 2
    assert table["correlation"]["pearson"] == pytest.approx(sign)
    assert table["correlation"]["spearman"] == pytest.approx(sign)


def test_cli_reuses_the_scores_of_an_earlier_table(tiny_run, monkeypatch):
    """demo.sh's Fig. 10 reuses Fig. 5's scores: a checkpoint scored on the same responses, records and settings
    takes the earlier table's row, and the table is the one a fresh run writes (accuracy and rank are this run's);
    other responses are scored again."""
    root, ckpts, tok, gens = tiny_run
    calls = []
    score = E.score_response
    monkeypatch.setattr(E, "score_response", lambda *a: calls.append(1) or score(*a))
    (root / "other_acc.json").write_text(json.dumps({"accuracy": 0.5}))
    common = ["--data", str(root / "val.jsonl"), "--generations", str(root / "gens.jsonl"), "--chunk_size", "5"]
    E.main(["--checkpoints", str(ckpts[1]), "--accuracies", str(root / "other_acc.json"), "--out",
            str(root / "first"), *common])
    assert len(calls) == 2
    fresh = E.main(["--checkpoints", *map(str, ckpts), "--out", str(root / "fresh"), *common])
    assert len(calls) == 6
    reused = E.main(["--checkpoints", *map(str, ckpts), "--out", str(root / "reused"),
                     "--reuse", str(root / "first" / "entropy_table.json"), *common])
    assert len(calls) == 8   # only the first checkpoint was scored
    tables = [json.loads((root / out / "entropy_table.json").read_text()) for out in ("fresh", "reused")]
    assert tables[0]["checkpoints"] == tables[1]["checkpoints"] and reused["correlation"] == fresh["correlation"]
    assert [r["accuracy"] for r in tables[1]["checkpoints"] if r["checkpoint"] == str(ckpts[1])] == [0.75]
    assert {k: v for k, v in tables[0]["config"].items() if k not in ("reuse", "out")} == \
        {k: v for k, v in tables[1]["config"].items() if k not in ("reuse", "out")}
    (root / "gens2.jsonl").write_text(json.dumps(dict(gens[0], response=gens[0]["response"] + " 3")) + "\n")
    E.main(["--checkpoints", str(ckpts[1]), "--out", str(root / "other"), "--data", str(root / "val.jsonl"),
            "--generations", str(root / "gens2.jsonl"), "--reuse", str(root / "first" / "entropy_table.json")])
    assert len(calls) == 9


def test_cli_samples_with_generate_and_aligns_with_its_logprobs(tiny_run):
    root, ckpts, tok, _ = tiny_run
    out = root / "out_sampled"
    accs = [root / "acc0.json", root / "acc1.json"]
    for p, acc in zip(accs, (0.5, 0.6)):
        p.write_text(json.dumps({"accuracy": acc, "std": 0.0}))
    result = E.main(["--checkpoints", *map(str, ckpts), "--data", str(root / "val.jsonl"), "--out", str(out),
                     "--max_new_tokens", "6", "--samples_per_prompt", "2", "--accuracies", *map(str, accs)])
    assert {r["accuracy"] for r in result["checkpoints"]} == {0.5, 0.6}
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 and {r["checkpoint"] for r in rows} == set(map(str, ckpts))
    # teacher-forced log-probs == the sampler's own log-probs at T=1: position t scores response token t.
    # decode.generate reports raw log-probs (the full vocabulary), though it never samples <IMG_CONTEXT>
    net = model.load_model(rows[0]["checkpoint"]).eval()
    records = {r.id: r for r in data.read_records(root / "val.jsonl")}
    lm_head = net.language_model.get_output_embeddings()
    for row in rows[:4]:
        pv = data.encode_prompt(tok, net.config, records[row["id"]])["pixel_values"]
        P, response = len(row["prompt_ids"]), torch.tensor(row["response_ids"])
        with torch.no_grad():
            hidden = net(torch.tensor([row["prompt_ids"] + row["response_ids"]]), pixel_values=pv,
                         return_hidden=True)[0]
            logits = lm_head(hidden[P - 1:-1])
        logp, _ = L.logprobs_and_entropy_from_logits(logits, response, chunk_size=4)
        assert torch.allclose(logp, torch.tensor(row["logprobs"]), atol=1e-4)
        scored, _ = E.score_response(net, row["prompt_ids"], row["response_ids"], pv, chunk_size=4)
        assert torch.allclose(scored, naive_logprob_entropy(lm_head(hidden[P - 1:-1]), response)[0], atol=1e-5)


def test_cli_errors_name_the_file_and_line(tiny_run, tmp_path):
    root, ckpts, _, _ = tiny_run
    bad = tmp_path / "gens.jsonl"
    bad.write_text(json.dumps({"id": "q1", "response": "ok"}) + "\n" + json.dumps({"id": "q2"}) + "\n")
    with pytest.raises(ValueError, match=r"gens.jsonl:2: needs 'response_ids'"):
        E.main(["--checkpoints", str(ckpts[0]), "--data", str(root / "val.jsonl"), "--generations", str(bad),
                "--out", str(tmp_path / "o")])
    (tmp_path / "s.json").write_text(json.dumps({"acc": 1}))
    with pytest.raises(ValueError, match=r"s.json: field 'accuracy'"):
        E.read_accuracy(tmp_path / "s.json")


def test_high_entropy_threshold_scales_with_log_vocab():
    # 6.8 nats at Qwen's 151,674 tokens; a 587-token vocabulary: 6.8 * ln 587 / ln 151674 = 6.8 * 6.3750 / 11.9295
    assert TE.high_entropy_threshold(151_674) == pytest.approx(6.8)
    assert TE.high_entropy_threshold(587) == pytest.approx(6.8 * 6.37501 / 11.92948, rel=1e-5)
    assert TE.high_entropy_threshold(587) < math.log(587)   # reachable by a 587-token model (6.8 is not)


def test_stage_label_names_the_run():
    assert E.stage_label("out/demo/sft/step_000300") == "sft/step_000300"
    assert E.stage_label("out/demo/grpo/step_000020") == "grpo/step_000020"
    assert E.stage_label("checkpoints/R1V3") == "R1V3"
