"""The phone half of split generation over a sequence: :class:`DeviceStepper` runs the device step graph
(:mod:`edgellm.models.decoder_step`) holding its cache, :func:`greedy_split` chains both halves (through a
codec) for the greedy tokens an export must reproduce.

Example:
    >>> halves = cache_halves(edgellm.models.load("tiny-llama"), 2)                            # doctest: +SKIP
    >>> greedy_split(torch_runner(halves.device, "device"), torch_runner(halves.server, "server"),
    ...              halves, prompt_ids, 16)                                                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.models.decoder_step import HIDDEN, CacheHalves, step_names


class DeviceStepper:
    """The phone half over a sequence, holding its cache: ``stepper(ids)`` returns the hidden states
    ``[1, len(ids), hidden]`` of the new tokens. A dynamic half (ORT) takes them in one call; a slot half
    (TFLite, ``slots`` set) one token per call into its fixed-size cache. The stepping is the runtime's
    (:class:`~edgellm.runtime.engines.ConcatEngine` / :class:`~edgellm.runtime.engines.SlotEngine`)."""

    def __init__(
        self,
        run: Any,
        past: list[str],
        present: list[str],
        kv_heads: int,
        head_dim: int,
        slots: int | None = None,
    ) -> None:
        from edgellm.runtime.engines import ConcatEngine, SlotEngine

        gen = {
            "cache": {"past_inputs": past, "present_outputs": present},
            "context": slots or 1 << 30,
            "kv_heads": kv_heads,
            "head_dim": head_dim,
        }
        cls = SlotEngine if slots else ConcatEngine
        self.slots = slots
        self.engine = cls(_Runner(run), gen, first="input_ids", out=HIDDEN)

    @property
    def length(self) -> int:
        return self.engine.length

    def __call__(self, ids: list[int]) -> np.ndarray:
        if self.slots is not None and self.length + len(ids) > self.slots:
            raise EdgeLLMError(
                f"the phone half's cache holds {self.slots} positions and is full",
                "generate fewer tokens, or export with a larger --device-cache",
            )
        return self.engine.feed(np.asarray([ids], np.int64))


class _Runner:
    """A ``run(feeds) -> outputs`` callable as the runner an engine drives."""

    def __init__(self, run: Any) -> None:
        self.run = run


def greedy_split(
    run_device: Any,
    run_server: Any,
    halves: CacheHalves,
    prompt: list[int],
    max_new_tokens: int,
    codec: Any = None,
    *,
    slots: int | None = None,
) -> list[int]:
    """Greedy generation through both halves, one sequence: ``run_*`` take and return named numpy
    feeds (a torch half, an ONNX Runtime session...; ``slots`` for a slot device half). The hidden
    states cross from device to server through ``codec`` (encode then decode) when given."""
    dev_in, dev_out = step_names(halves.device, "device")
    srv_in, srv_out = step_names(halves.server, "server")
    device = DeviceStepper(run_device, dev_in[3:], dev_out[1:], halves.kv_heads, halves.head_dim, slots)
    srv_past = dict(zip(srv_in[3:], halves.empty_past("server")))
    ids = list(prompt)
    done = 0
    out: list[int] = []
    for _ in range(max_new_tokens):
        new = len(ids)
        hidden = device(ids)
        if codec is not None:
            hidden = codec.decode(*codec.encode(hidden))
        mask = np.ones((1, done + new), np.int64)
        pos = np.arange(done, done + new, dtype=np.int64)[None]
        s = run_server(
            {HIDDEN: hidden.astype(np.float32), "attention_mask": mask, "position_ids": pos, **srv_past}
        )
        srv_past = {p: s[q] for p, q in zip(srv_in[3:], srv_out[1:])}
        token = int(s["logits"][0, -1].argmax())
        out.append(token)
        done += new
        ids = [token]
    return out
