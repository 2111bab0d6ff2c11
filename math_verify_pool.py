"""
Math-Verify (huggingface/Math-Verify, LaTeX/sympy equivalence) in worker processes with a hard time
limit per item: the slow half of R_rule (rule_check.py decides what it can in-process first;
rewards.score_batch sends the rest here through math_verify_batch). A hung sympy call holds the GIL,
so Math-Verify's own SIGALRM cannot stop it; pebble kills the worker (the item scores 0, counted)
and starts another. Spawned workers (safe under torchrun) re-import the main module: a script that
scores needs `if __name__ == "__main__":`. start_rule_workers saves the first episode the wait.
cfg below is a rewards.RewardConfig, read for its timeout_s, num_workers, start_method and
worker_memory_mb; not imported (rewards imports this module: no import circle).
"""
from __future__ import annotations

import atexit
import concurrent.futures
import logging
import multiprocessing as mp
import os
import re
import resource
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import pebble
# at the top, though only the workers (and reward_workers=0) call it: sympy, its heaviest part, is loaded in a
# trainer already (torch.distributed.tensor imports it), and `import rewards` alone costs ~0.45 s more
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rule_check import _INVISIBLE, _QUANTITY, _UNICODE, _UNICODE_RE, _WORDS


def _math_verify_text(s: str) -> str:
    # Math-Verify only parses a gold inside a LaTeX environment: "\dfrac{9}{7}" -> [],
    # "$\dfrac{9}{7}$" ok
    s = _INVISIBLE.sub("", s)
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    s = _QUANTITY.sub(r"\1", s)
    s = re.sub(r"\\number\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\$|\\\(|\\\)|\\\[|\\\]", " ", s).strip().rstrip(".;。").strip()
    return f"${s}$"


def _math_verify(gold: str, pred: str, timeout_s: int | None) -> tuple[bool, str, bool]:
    """(equal, reason, timed_out); never raises (an error scores 0). timeout_s: Math-Verify's own
    SIGALRM limit (main thread only) or None."""
    pred_config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    t0 = time.monotonic()
    # prose ("... Thus, it is 300.", "$$2.2$$ (not unique)"): let Math-Verify find the math in it;
    # wrapped whole, the words would parse as products of symbols (slow, and never equal)
    gold, pred = [x if _WORDS.search(x) else _math_verify_text(x) for x in (gold, pred)]
    try:
        gold_parsed = parse(gold, parsing_timeout=timeout_s)
        pred_parsed = parse(pred, pred_config, parsing_timeout=timeout_s)
        if not gold_parsed or not pred_parsed:
            timed_out = timeout_s is not None and time.monotonic() - t0 >= timeout_s
            reason = "math-verify timeout" if timed_out else "math-verify: unparsable"
            return False, reason, timed_out
        t1 = time.monotonic()
        if verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s):
            return True, "math-verify", False
        if timeout_s is not None and time.monotonic() - t1 >= timeout_s:
            return False, "math-verify timeout", True
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:   # Math-Verify's TimeoutException is a BaseException
        return False, f"error: {type(e).__name__}", False
    return False, "math-verify: not equal", False


def _worker_init(memory_bytes: int):
    # Runs once in each worker, in its main thread (so Math-Verify's own SIGALRM limits work there
    # too). pebble's worker installs a Python-level SIGTERM handler (pebble 5.2 pool/process.py:
    # worker_process); a hung sympy call holds the GIL, so that handler never runs and pebble waits
    # term_timeout = 3 s before SIGKILL. The default action ends the worker at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # warm up sympy (its first calls build caches) before the first deadline starts
    for gold, pred in (("$x>1$", "$1<x$"), ("$x^2+y^2=1$", "$y^2=1-x^2$"),
                       ("$[1,2)$", "$\\{1,2\\}$")):
        _math_verify(gold, pred, 2)
    try:   # address-space headroom: a sympy blow-up is a MemoryError here, not the OOM killer's
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (current + memory_bytes, hard))
    except (OSError, ValueError):
        pass


_POOL: pebble.ProcessPool | None = None
_POOL_KEY = None
_POOL_LOCK = threading.RLock()   # shutdown_pool inside _get_pool


def _get_pool(cfg) -> tuple[pebble.ProcessPool, int]:
    # pebble.ProcessPool kills a worker whose item runs past schedule(timeout=) (counted from the
    # moment a worker picks it up) and starts a replacement; a worker that dies while idle breaks
    # the whole pool (pebble: "All workers expired"), so a pool that is no longer active is replaced
    # here (1 restart).
    global _POOL, _POOL_KEY
    restarts = 0
    key = (cfg.num_workers, cfg.start_method, cfg.worker_memory_mb)
    with _POOL_LOCK:
        if _POOL is not None and (_POOL_KEY != key or not _POOL.active):
            restarts = int(not _POOL.active)
            shutdown_pool()
        if _POOL is None:
            _POOL = pebble.ProcessPool(max_workers=cfg.num_workers, initializer=_worker_init,
                                       initargs=(cfg.worker_memory_mb * 2**20,),
                                       context=mp.get_context(cfg.start_method))
            _POOL_KEY = key
        return _POOL, restarts


def math_verify_batch(keys: list[tuple[str, str]], cfg) -> tuple[list, int]:
    """[(gold, pred)] -> ([(equal, reason, timed_out)], worker restarts): Math-Verify in the
    workers, each item hard-limited to cfg.timeout_s (num_workers=0: in this process, no hard
    limit, for debugging). Raises only when workers cannot start (e.g. an unguarded main script
    under spawn)."""
    if cfg.num_workers <= 0:
        on_main = threading.current_thread() is threading.main_thread()   # SIGALRM's only thread
        timeout_s = max(1, int(cfg.timeout_s)) if on_main else None
        return [_math_verify(gold, pred, timeout_s) for gold, pred in keys], 0
    # Math-Verify's own SIGALRM first; pebble's kill at cfg.timeout_s is the backstop
    inner_timeout_s = max(1, int(cfg.timeout_s // 4))
    results: list = [None] * len(keys)
    restarts = 0
    for _ in range(3):   # a pool broken by a worker that died between items: replaced, items resent
        todo = [j for j, r in enumerate(results) if r is None]
        if not todo:
            break
        pool, replaced = _get_pool(cfg)
        restarts += replaced
        futures = {j: pool.schedule(_math_verify, args=(*keys[j], inner_timeout_s),
                                    timeout=cfg.timeout_s) for j in todo}
        budget_s = 120.0 + cfg.timeout_s * len(todo)   # worker start (spawn + imports), the items
        if concurrent.futures.wait(futures.values(), timeout=budget_s).not_done:
            shutdown_pool()
            raise RuntimeError(f"rewards: no rule-checker result within {budget_s:.0f} s")
        for j, future in futures.items():
            error = future.exception()
            if error is None:
                results[j] = future.result()
            elif isinstance(error, TimeoutError):   # pebble killed the worker and starts another
                results[j] = (False, "timeout", True)
                restarts += 1
            elif isinstance(error, pebble.ProcessExpired):   # segfault, OOM killer: likely the item
                results[j] = (False, "error: worker died", False)
                restarts += 1
            elif not isinstance(error, BrokenProcessPool):
                results[j] = (False, f"error: {type(error).__name__}", False)
    if None in results:
        shutdown_pool()
        raise RuntimeError("rewards: rule-checker workers keep dying before they start; is the "
                           "main script guarded by `if __name__ == '__main__':` (spawn needs it)?")
    return results, restarts


def start_rule_workers(cfg, timeout_s: float = 120.0) -> bool:
    """Start the rule-checker workers now and wait until they answer (e.g. while the policy
    loads), so the first episode does not pay for it. True when they are up."""
    if cfg.num_workers <= 0:
        return True
    pool, _ = _get_pool(cfg)
    futures = [pool.schedule(os.getpid) for _ in range(cfg.num_workers)]
    done = concurrent.futures.wait(futures, timeout=timeout_s).done
    return len(done) == len(futures) and all(f.exception() is None for f in done)


def shutdown_pool():
    """Stop the rule-checker workers (also runs at exit). The next score_batch starts new ones."""
    global _POOL, _POOL_KEY
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.stop()
            _POOL.join(timeout=5)
        _POOL, _POOL_KEY = None, None


atexit.register(shutdown_pool)

