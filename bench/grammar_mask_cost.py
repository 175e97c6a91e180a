#!/usr/bin/env python3
"""Cost of constrained decoding per library: build the tokenizer index, compile a grammar, and
per generated token compute the allowed-token bitmask and advance the matcher; also whether the
mask computation lets other Python threads run (releases the GIL).

Usage: .venv/bin/python bench/grammar_mask_cost.py [--libs llguidance,xgrammar,outlines_core]
Prints a markdown table. Uses the default model's tokenizer (vocab 49152); libraries that are
not installed are skipped."""

import argparse
import json
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sluice.bench.machine import cpu_description
from sluice.weights import resolve_model

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 32},
        "age": {"type": "integer"},
        "email": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["name", "age", "email", "tags", "address"],
}
SCHEMA_TEXT = (
    '{"name":"Alice Smith","age":31,"email":"alice@example.com",'
    '"tags":["admin","ops","night shift"],"address":{"city":"Paris","zip":"75001"}}'
)
REGEX = r"[0-9]{3}-[a-z]+(\.[a-z]+)*@[a-z]{2,8}\.(com|org|net)"
REGEX_TEXT = "123-jane.doe.smith@example.org"


@dataclass(frozen=True, slots=True)
class Row:
    library: str
    grammar: str
    setup_s: float
    compile_ms: float
    first_mask_us: float
    tokens: int
    mask_us: list[float]
    advance_us: list[float]
    gil_ratio: float
    apply_us: list[float]
    """Applying this grammar's masks to 1, 8 and 32 rows of logits."""


class Library:
    name = ""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)

    def setup(self) -> None: ...
    def compile_schema(self, schema: dict[str, Any]) -> Any: ...
    def compile_regex(self, regex: str) -> Any: ...
    def matcher(self, compiled: Any) -> Any: ...
    def fill(self, matcher: Any, bitmask: torch.Tensor) -> None: ...
    def advance(self, matcher: Any, token_id: int) -> None: ...

    def fill_batch(self, matchers: Sequence[Any], bitmask: torch.Tensor) -> None:
        """One step's masks, one row per matcher, as an engine would compute them."""
        for row, matcher in enumerate(matchers):
            self.fill(matcher, bitmask[row : row + 1])


class Llguidance(Library):
    name = "llguidance"

    def setup(self) -> None:
        import llguidance
        import llguidance.hf

        self.llg = llguidance
        self.llg_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer)

    def compile_schema(self, schema: dict[str, Any]) -> Any:
        return self.llg.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False}
        )

    def compile_regex(self, regex: str) -> Any:
        return self.llg.LLMatcher.grammar_from_regex(regex)

    def matcher(self, compiled: Any) -> Any:
        matcher = self.llg.LLMatcher(self.llg_tokenizer, compiled, log_level=0)
        assert not matcher.is_error(), matcher.get_error()
        return matcher

    def fill(self, matcher: Any, bitmask: torch.Tensor) -> None:
        row = bitmask[0]
        matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * 4)

    def fill_batch(self, matchers: Sequence[Any], bitmask: torch.Tensor) -> None:
        """llguidance's executor: the whole batch in one call that releases the GIL."""
        executor = self.llg.LLExecutor(num_threads=1)
        rows = [(matcher, row) for row, matcher in enumerate(matchers)]
        executor.unsafe_compute_mask_ptr(rows, bitmask.data_ptr(), bitmask.shape[1] * 4, len(rows))

    def advance(self, matcher: Any, token_id: int) -> None:
        assert matcher.consume_token(token_id), matcher.get_error()


class Xgrammar(Library):
    name = "xgrammar"

    def setup(self) -> None:
        import xgrammar

        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size)
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

    def compile_schema(self, schema: dict[str, Any]) -> Any:
        return self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":")
        )

    def compile_regex(self, regex: str) -> Any:
        return self.compiler.compile_regex(regex)

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher: Any, bitmask: torch.Tensor) -> None:
        matcher.fill_next_token_bitmask(bitmask, 0)

    def advance(self, matcher: Any, token_id: int) -> None:
        assert matcher.accept_token(token_id)


class OutlinesCore(Library):
    name = "outlines_core"

    def setup(self) -> None:
        import outlines_core

        self.oc = outlines_core
        decoder = _byte_decoder()
        eos = self.tokenizer.eos_token_id
        tokens: dict[bytes, list[int]] = {}
        for token, token_id in self.tokenizer.get_vocab().items():
            if token_id == eos or token in self.tokenizer.all_special_tokens:
                continue
            raw = bytes(decoder[c] for c in token) if all(c in decoder for c in token) else None
            tokens.setdefault(raw or token.encode(), []).append(token_id)
        self.vocabulary = outlines_core.Vocabulary(eos, tokens)

    def compile_schema(self, schema: dict[str, Any]) -> Any:
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
        return self.oc.Index(regex, self.vocabulary)

    def compile_regex(self, regex: str) -> Any:
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled: Any) -> Any:
        return self.oc.Guide(compiled)

    def fill(self, matcher: Any, bitmask: torch.Tensor) -> None:
        matcher.write_mask_into(bitmask.data_ptr(), bitmask.numel(), 4)

    def advance(self, matcher: Any, token_id: int) -> None:
        matcher.advance(token_id, return_tokens=False)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: printable stand-in character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def measure(lib: Library, grammar: str, repeats: int) -> Row:
    started = time.perf_counter()
    lib.setup()
    setup_s = time.perf_counter() - started
    if grammar == "json schema":
        compile_grammar: Callable[[], Any] = lambda: lib.compile_schema(SCHEMA)  # noqa: E731
        text = SCHEMA_TEXT
    else:
        compile_grammar = lambda: lib.compile_regex(REGEX)  # noqa: E731
        text = REGEX_TEXT
    token_ids = lib.tokenizer(text, add_special_tokens=False)["input_ids"]
    bitmask = torch.zeros(1, (lib.vocab_size + 31) // 32, dtype=torch.int32)
    compile_ms: list[float] = []
    first_mask_us: list[float] = []
    for _ in range(3):  # compile + first mask: some libraries compile lazily, during masks
        started = time.perf_counter()
        compiled = compile_grammar()
        matcher = lib.matcher(compiled)
        compiled_at = time.perf_counter()
        lib.fill(matcher, bitmask)
        compile_ms.append((compiled_at - started) * 1e3)
        first_mask_us.append((time.perf_counter() - compiled_at) * 1e6)
    mask_us: list[float] = []
    advance_us: list[float] = []
    masks: list[torch.Tensor] = []
    for _ in range(repeats):
        matcher = lib.matcher(compiled)
        for token_id in token_ids:
            started = time.perf_counter()
            lib.fill(matcher, bitmask)
            filled = time.perf_counter()
            allowed = bool((bitmask[0, token_id // 32] >> (token_id % 32)) & 1)
            assert allowed, f"{lib.name}: token {token_id} not allowed"
            checked = time.perf_counter()
            lib.advance(matcher, token_id)
            mask_us.append((filled - started) * 1e6)
            advance_us.append((time.perf_counter() - checked) * 1e6)
            if len(masks) < len(token_ids):
                masks.append(bitmask[0].clone())
    time.sleep(1.0)  # let a library's background threads settle before timing torch work
    masks_t = torch.stack(masks)
    apply_us = [apply_cost(masks_t, n) for n in (1, 8, 32)]
    return Row(
        lib.name,
        grammar,
        setup_s,
        statistics.median(compile_ms),
        statistics.median(first_mask_us),
        len(token_ids),
        mask_us,
        advance_us,
        gil_ratio(lib, compiled, token_ids),
        apply_us,
    )


BATCH = 64


def gil_ratio(lib: Library, compiled: Any, token_ids: Sequence[int]) -> float:
    """Main-thread Python progress while a second thread computes one step's masks for BATCH
    fresh matchers (at the state halfway through the text), as a share of its progress alone,
    median of 9: well below 1.0 when the mask computation holds the GIL."""
    ratios = []
    for _ in range(9):
        matchers = []
        for _ in range(BATCH):
            matcher = lib.matcher(compiled)
            for token_id in token_ids[: len(token_ids) // 2]:
                lib.advance(matcher, token_id)
            matchers.append(matcher)
        bitmask = torch.zeros(BATCH, (lib.vocab_size + 31) // 32, dtype=torch.int32)
        done = threading.Event()

        def masks(
            matchers: list[Any] = matchers,
            bitmask: torch.Tensor = bitmask,
            done: threading.Event = done,
        ) -> None:
            lib.fill_batch(matchers, bitmask)
            done.set()

        worker = threading.Thread(target=masks)
        n, started = 0, time.perf_counter()
        worker.start()
        while not done.is_set():
            n += 1
        elapsed = time.perf_counter() - started
        worker.join()
        alone, started = 0, time.perf_counter()
        while time.perf_counter() - started < elapsed:
            alone += 1
        ratios.append(n / max(alone, 1))
    return statistics.median(ratios)


def apply_cost(masks: torch.Tensor, rows: int) -> float:
    """Median microseconds to unpack `rows` real bitmasks ([rows, vocab/32] int32) and set the
    disallowed logits of [rows, vocab] to -inf, as the sampler does on the CPU. One torch
    thread: on a loaded 2-core machine, a 2-thread op waits a whole time slice (~30 ms) for
    its second thread now and then, which measures the machine, not the op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    masks = masks.repeat(-(-rows // len(masks)), 1)
    words = masks.shape[1]
    vocab_size = words * 32
    shifts = torch.arange(32, dtype=torch.int32)
    times = []
    for start in range(0, max(1, len(masks) - rows + 1)):
        bitmask = masks[start : start + rows]
        logits = torch.randn(len(bitmask), vocab_size)
        began = time.perf_counter()
        disallowed = ((bitmask[:, :, None] >> shifts) & 1).eq(0).flatten(1)
        logits.masked_fill_(disallowed, float("-inf"))
        times.append(time.perf_counter() - began)
    torch.set_num_threads(threads)
    return statistics.median(times) * 1e6


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--libs", default="llguidance,xgrammar,outlines_core")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model().path)
    classes = {cls.name: cls for cls in (Llguidance, Xgrammar, OutlinesCore)}
    rows: list[Row] = []
    for name in args.libs.split(","):
        for grammar in ("json schema", "regex"):
            lib = classes[name](tokenizer)
            try:
                rows.append(measure(lib, grammar, args.repeats))
            except ImportError as error:
                print(f"skipping {name}: {error}")
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"commit {commit}, {cpu_description()}, torch {torch.__version__}")
    print(f"vocab {len(tokenizer)}, {torch.get_num_threads()} torch threads\n")
    print(
        "| library | grammar | tokenizer setup s | compile ms | first mask µs | tokens "
        f"| mask µs p50 / p90 / max | advance µs p50 / max | main thread during {BATCH} masks "
        "| apply 1 / 8 / 32 rows µs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        apply = " / ".join(f"{us:.0f}" for us in r.apply_us)
        print(
            f"| {r.library} | {r.grammar} | {r.setup_s:.2f} | {r.compile_ms:.1f} "
            f"| {r.first_mask_us:.0f} | {r.tokens} "
            f"| {_pct(r.mask_us, 0.5):.0f} / {_pct(r.mask_us, 0.9):.0f} / {max(r.mask_us):.0f} "
            f"| {_pct(r.advance_us, 0.5):.0f} / {max(r.advance_us):.0f} | {r.gil_ratio:.2f} "
            f"| {apply} |"
        )


if __name__ == "__main__":
    main()
