"""One generation API over every generation artifact and over a split pair.

:class:`Generator` opens the artifact's step engine (:mod:`edgellm.runtime.engines`), prefills the
prompt in one step, then decodes one token per step, choosing each with
:func:`~edgellm.runtime.sampling.next_token`. :meth:`Generator.stream` yields each token as it is chosen
(with the text it adds, held back while it could still begin a stop string); :meth:`Generator.generate`
returns the whole completion with its timings: time to first token, prefill and decode tokens/s.

Example:
    >>> g = Generator("out/tiny-llama-int4")                                  # doctest: +SKIP
    >>> for tok in g.stream("The with statement", max_new_tokens=16):        # doctest: +SKIP
    ...     print(tok.text, end="", flush=True)
    >>> g.generate("The with statement", max_new_tokens=16).decode_tok_s      # doctest: +SKIP
    212.4
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.runtime.engines import open_engine
from edgellm.runtime.sampling import GenerationConfig, next_token


@dataclass
class Token:
    """One generated token: its id, the text it makes visible, and when it was chosen."""

    id: int
    text: str
    index: int
    ms: float  # since the previous token (the first: since the start, i.e. the time to first token)


@dataclass
class Completion:
    """A finished generation."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    stop_reason: str  # "length", "stop_token", "stop_string"
    ttft_ms: float
    prefill_tok_s: float
    decode_tok_s: float | None
    step_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("step_ms")
        for k in ("ttft_ms", "prefill_tok_s", "decode_tok_s"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 3)
        return d


class Generator:
    """Generation over a generation artifact (a path or loaded artifact) or a split pair's folder.

    Args:
        source: what ``edgellm export --generate``, ``edgellm compress --generate`` or
            ``edgellm split export --generate`` wrote.
        threads: runtime threads (default: the runtime's own choice).
        tokenizer: a tokenizer to use instead of the artifact's own ``tokenizer/``.
        runtime: ``onnxruntime`` or ``openvino`` (default: the artifact's own runtime).
        precision: OpenVINO's inference precision (``auto``: the one the artifact was validated at).
    """

    def __init__(
        self,
        source: Any,
        *,
        threads: int | None = None,
        tokenizer: Any = None,
        runtime: str | None = None,
        precision: str = "auto",
    ) -> None:
        self.engine = open_engine(source, threads=threads, runtime=runtime, precision=precision)
        self.gen: dict[str, Any] = self.engine.gen
        self.path = Path(getattr(source, "path", source))
        self._tokenizer = tokenizer
        self.eos_token_id = self.gen.get("eos_token_id")

    @property
    def context(self) -> int:
        return int(self.engine.context)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from edgellm.models.loader import load_tokenizer

            folder = self.path / "tokenizer"
            tok = load_tokenizer(folder) if folder.is_dir() else None
            if tok is None:
                raise EdgeLLMError(
                    f"'{self.path}' has no tokenizer/ to turn text into token ids",
                    "give token ids instead of text, or re-export from a model directory with its tokenizer",
                )
            self._tokenizer = tok
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        tok = self.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        bos = getattr(tok, "bos_token_id", None)
        return ([bos] if bos is not None else []) + list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _config(self, config: GenerationConfig | None, options: dict[str, Any]) -> GenerationConfig:
        cfg = config or GenerationConfig()
        return replace(cfg, **options) if options else cfg

    def _prompt(self, prompt: str | Sequence[int], cfg: GenerationConfig) -> list[int]:
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise EdgeLLMError("the prompt is empty", "give some text or at least one token id")
        vocab = int(self.gen.get("vocab") or 0)
        if vocab and any(not 0 <= t < vocab for t in ids):
            raise EdgeLLMError(
                f"prompt token ids must be in 0..{vocab - 1}", "use the artifact's own tokenizer"
            )
        if len(ids) >= self.context:
            raise EdgeLLMError(
                f"the prompt has {len(ids)} tokens but the artifact's context holds {self.context}",
                "shorten the prompt, or export with a larger --context",
            )
        return ids

    def stream(
        self, prompt: str | Sequence[int], config: GenerationConfig | None = None, **options: Any
    ) -> Iterator[Token]:
        """Generate token by token; options are :class:`GenerationConfig` fields (``max_new_tokens=``...).
        Generation stops at ``max_new_tokens``, a stop token or a stop string, or the end of the
        context; :attr:`last` then holds the :class:`Completion`."""
        cfg = self._config(config, options)
        ids = self._prompt(prompt, cfg)
        stop_ids = (
            set(cfg.stop_token_ids)
            if cfg.stop_token_ids is not None
            else ({int(self.eos_token_id)} if self.eos_token_id is not None else set())
        )
        text_mode = bool(cfg.stop) or isinstance(prompt, str)
        rng = np.random.default_rng(cfg.seed)
        eng = self.engine
        eng.reset()
        history = list(ids)
        out: list[int] = []
        ts = TextStream(self.decode, cfg.stop)
        step_ms: list[float] = []
        reason = "length"
        budget = min(cfg.max_new_tokens, self.context - len(ids))
        t0 = time.perf_counter()
        logits = eng.step(ids)
        prefill_s = time.perf_counter() - t0
        last = t0
        while True:
            tok = next_token(logits, cfg, rng, history)
            now = time.perf_counter()
            step_ms.append((now - last) * 1000.0)
            last = now
            if tok in stop_ids:
                reason = "stop_token"
                break
            out.append(tok)
            history.append(tok)
            piece = ts.push(tok) if text_mode else ""
            if ts.stopped:
                if piece:
                    yield Token(tok, piece, len(out) - 1, step_ms[-1])
                reason = "stop_string"
                break
            yield Token(tok, piece, len(out) - 1, step_ms[-1])
            if len(out) >= budget:
                break
            logits = eng.step([tok])
        text = (ts.shown if reason == "stop_string" else self.decode(out)) if text_mode else ""
        decode_ms = sum(step_ms[1:])
        self.last = Completion(
            prompt_ids=ids,
            token_ids=out,
            text=text,
            stop_reason=reason,
            ttft_ms=step_ms[0],
            prefill_tok_s=len(ids) / max(prefill_s, 1e-9),
            decode_tok_s=(len(step_ms) - 1) / (decode_ms / 1000.0)
            if len(step_ms) > 1 and decode_ms
            else None,
            step_ms=step_ms,
        )

    def generate(
        self, prompt: str | Sequence[int], config: GenerationConfig | None = None, **options: Any
    ) -> Completion:
        """The whole completion of ``prompt`` (see :meth:`stream` for the options)."""
        for _ in self.stream(prompt, config, **options):
            pass
        return self.last


class TextStream:
    """The text of generated token ids as it grows: :meth:`push` returns what a new token makes visible,
    holding back a tail that may still become a stop string and an incomplete character; once a stop
    string appears, :attr:`stopped` is true and the text is cut before it. :meth:`finish` returns what was
    held back when generation ends otherwise.

    Example:
        >>> ts = TextStream(lambda ids: "".join(chr(i) for i in ids), ("!?",))
        >>> [ts.push(i) for i in b"hi!?x"], ts.stopped, ts.shown
        (['h', 'i', '', '', ''], True, 'hi')
    """

    def __init__(self, decode: Any, stop: tuple[str, ...] = ()) -> None:
        self.decode, self.stop = decode, tuple(stop)
        self.ids: list[int] = []
        self.shown = ""
        self.stopped = False

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(int(token))
        full = self.decode(self.ids)
        cut = _first_stop(full, self.stop)
        end = cut if cut is not None else _safe_prefix(full, self.stop)
        piece = full[len(self.shown) : end] if end > len(self.shown) else ""
        if end > len(self.shown) or cut is not None:
            self.shown = full[:end]
        self.stopped = cut is not None
        return piece

    def finish(self) -> str:
        """The held-back tail (a partial stop string that never completed, or trailing characters)."""
        if self.stopped or not self.ids:
            return ""
        full = self.decode(self.ids)
        piece = full[len(self.shown) :] if full.startswith(self.shown) else ""
        self.shown = full if piece else self.shown
        return piece


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _safe_prefix(text: str, stops: tuple[str, ...]) -> int:
    """How much of ``text`` can be shown: not a trailing part that may still grow into a stop string,
    nor an incomplete character (the tokenizer's replacement mark)."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[:end].endswith(s[:k]):
                hold = max(hold, k)
                break
    return end - hold
