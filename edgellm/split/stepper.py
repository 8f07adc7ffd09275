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
    (TFLite, ``slots`` set) one token per call into its fixed-size cache."""

    def __init__(
        self,
        run: Any,
        past: list[str],
        present: list[str],
        kv_heads: int,
        head_dim: int,
        slots: int | None = None,
    ) -> None:
        self.run, self.past_names, self.present_names, self.slots = run, past, present, slots
        n = 0 if slots is None else slots
        self.past = {p: np.zeros((1, kv_heads, n, head_dim), np.float32) for p in past}
        self.length = 0

    def __call__(self, ids: list[int]) -> np.ndarray:
        if self.slots is None:
            new = len(ids)
            d = self.run(
                {
                    "input_ids": np.asarray([ids], np.int64),
                    "attention_mask": np.ones((1, self.length + new), np.int64),
                    "position_ids": np.arange(self.length, self.length + new, dtype=np.int64)[None],
                    **self.past,
                }
            )
            self.past = {p: d[q] for p, q in zip(self.past_names, self.present_names)}
            self.length += new
            return d[HIDDEN]
        hidden = []
        for t in ids:
            if self.length >= self.slots:
                raise EdgeLLMError(
                    f"the phone half's cache holds {self.slots} positions and is full",
                    "generate fewer tokens, or export with a larger --device-cache",
                )
            write = np.zeros((1, self.slots), np.float32)
            write[0, self.length] = 1.0
            mask = np.zeros((1, self.slots), np.int64)
            mask[0, : self.length + 1] = 1
            d = self.run(
                {
                    "input_ids": np.asarray([[t]], np.int64),
                    "position_ids": np.asarray([[self.length]], np.int64),
                    "cache_mask": mask,
                    "write": write,
                    **self.past,
                }
            )
            self.past = {p: d[q] for p, q in zip(self.past_names, self.present_names)}
            self.length += 1
            hidden.append(d[HIDDEN])
        return np.concatenate(hidden, axis=1)


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
