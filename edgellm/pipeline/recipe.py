"""``recipe.yaml``: one file that says what ``edgellm run`` does, from raw text to a running split model.

Every section is optional except ``name``; unknown keys and wrong types are errors that name the key's
path (``compress.artifacts.1.recipe: ...``). Model references are bundled names, Hugging Face directories,
or ``train`` (the model the ``train`` section produces). Relative paths are relative to the recipe file.

Example (``recipes/demo.yaml`` is the full one)::

    name: quick
    data: {source: pydoc}
    compress:
      artifacts:
        - {model: tiny-llama, recipe: int8-dynamic}
    partition: {model: minilm, device: snapdragon-865, server: x86-server, bandwidth: 10mbit, rtt: 50ms}
    split: {requests: 8}
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, create_model, model_validator

from edgellm.compress.prune.config import PruneConfig
from edgellm.errors import EdgeLLMError, first_error
from edgellm.pipeline.compress_recipe import Strict, TypedQuant
from edgellm.train import TrainConfig


class DataStage(Strict):
    """Clean a corpus and commit it to a dataset store (or use an existing dataset version)."""

    source: str = Field("pydoc", description="file, folder, STORE@REF, or pydoc (the bundled text)")
    version: str | None = Field(
        None, description="STORE@REF: use this dataset version as it is (no cleaning)"
    )
    steps: list[Any] | None = Field(None, description="edgellm data clean steps (default: all)")
    store: str = Field("datasets", description="the dataset store (relative to the output folder)")
    tag: str | None = Field(None, description="tag the committed dataset version (e.g. v1)")
    text_field: str = Field("text", description="the JSONL key holding each record's text")
    workers: int = Field(0, ge=0, description="cleaning processes; 0: one per core")

    @model_validator(mode="after")
    def _one_source(self) -> DataStage:
        if self.version is not None and "source" in self.model_fields_set:
            raise ValueError("give either data.source (to clean) or data.version (to use), not both")
        return self


class _PruneWorkflow(Strict):
    """Structured pruning (heads, FFN channels, blocks; channels of plain torch modules), then an optional
    distillation recovery from the unpruned model; later sections use the result as model ``pruned``.
    The pruning keys are the fields of :class:`~edgellm.compress.prune.PruneConfig`."""

    model: str = Field(..., description="the model to prune: bundled name, directory, or train")
    runs: int = Field(10, ge=1, description="timed rounds of the pruned-vs-unpruned latency comparison")
    recover_steps: int = Field(0, ge=0, description="distillation steps from the unpruned model (0: none)")
    recover_lr: float = Field(2e-4, gt=0, description="learning rate of the recovery")
    _config: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _typed(self) -> _PruneWorkflow:
        """The pruning keys become the stage's own config, validated by it, and stay typed to the verb."""
        try:
            self._config = PruneConfig(
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(PruneConfig)}
            )
        except EdgeLLMError as exc:
            raise ValueError(str(exc)) from exc
        return self

    @property
    def config(self) -> PruneConfig:
        return self._config


# the recipe prunes with Wanda unless told otherwise (the best of the built-in scores on transformers)
_RECIPE_DEFAULTS = {"score": "wanda"}
_hints = typing.get_type_hints(PruneConfig)
PruneStage = create_model(
    "PruneStage",
    __base__=_PruneWorkflow,
    __doc__=_PruneWorkflow.__doc__,
    **{
        f.name: (
            _hints[f.name],
            Field(_RECIPE_DEFAULTS.get(f.name, f.default), description=f.metadata.get("doc", "")),
        )
        for f in dataclasses.fields(PruneConfig)
    },
)


class CompressItem(TypedQuant):
    model: str = Field(..., description="bundled name, directory, train or pruned")
    label: str | None = Field(None, description="folder and table name (default: the recipe's)")
    target: str = Field("x86-server", description="the target profile the artifact is lowered for")
    max_accuracy_drop: str | None = Field(None, description="guard, e.g. cosine>=0.99 or ppl+3%")


class CompressStage(Strict):
    artifacts: list[CompressItem] = Field(default_factory=list, description="one compressed artifact each")
    calibration: Literal["data", "bundled"] = Field(
        "data", description="calibrate and evaluate on disjoint parts of the data section's dataset"
    )
    runs: int = Field(15, ge=1, description="timed rounds against fp32")
    eval_sequences: int = Field(128, ge=8, description="held-out sequences the accuracy is measured on")


class ExportStage(Strict):
    """Every (target, format, precision) of each model; each artifact checked against the reference."""

    models: list[str] = Field(default_factory=lambda: ["minilm"], description="models to export")
    cases: Literal["all"] | list[tuple[str, str, str]] = Field(
        "all", description="all, or [target, format, precision] triples"
    )


class BenchStage(Strict):
    runs: int = Field(30, ge=1, description="timed runs per shape")
    warmup: int = Field(5, ge=0, description="untimed runs first")
    batch: list[int] = Field(default_factory=lambda: [1, 8], description="batch sizes")
    seq: list[int] = Field(default_factory=lambda: [128], description="sequence lengths")
    threads: int | None = Field(None, ge=1, description="intra-op threads (default: the runtime's)")


class PartitionStage(Strict):
    model: str = Field("minilm", description="the model to cut")
    device: str = Field("snapdragon-865", description="the phone's target profile")
    server: str = Field("x86-server", description="the server's target profile")
    bandwidth: str = Field("10mbit", description="uplink bandwidth")
    downlink: str | None = Field(None, description="downlink bandwidth (default: the uplink's)")
    rtt: str = Field("50ms", description="round-trip time")
    device_memory: str | None = Field(None, description="weights the phone may hold, e.g. 512MB")
    min_device_blocks: int = Field(1, ge=0, description="blocks that must run on the phone")
    codecs: list[str] = Field(
        default_factory=lambda: ["fp32", "fp16", "int8", "int8+zstd"],
        description="activation codecs to consider",
    )
    seq: int = Field(128, ge=1, description="sequence length to plan for")
    runs: int = Field(10, ge=1, description="profiling runs per block")


class SplitStage(Strict):
    """Export the plan's two halves, serve the server half on loopback, send real requests through it."""

    requests: int = Field(8, ge=1, description="requests sent through the split model")
    cut: int | None = Field(None, ge=0, description="check this cut instead of the plan's best")
    codec: str | None = Field(None, description="with cut: the activation codec (default fp16)")
    device_format: str | None = None
    seq_len: int | None = Field(None, ge=1, description="static sequence length of a TFLite half")


class GenerateItem(Strict):
    """One generation artifact: a decoder with a key/value cache for a target, optionally quantized."""

    model: str = Field("tiny-llama", description="bundled name, directory, train or pruned")
    target: str = Field("x86-server", description="the target profile")
    format: str | None = Field(
        None, description="onnx, ort, tflite or tensorrt (default: the target's first)"
    )
    precision: Literal["fp32", "fp16", "int8", "int4"] = Field("int4", description="the weights' precision")
    recipe: str | None = Field(
        None, description="quantization method, e.g. w4a16-gptq (default: RTN / dynamic)"
    )
    group_size: int | None = Field(None, ge=16, description="INT4 group size")
    keep: list[str] = Field(default_factory=list, description="layer patterns left in fp32, e.g. lm_head")
    context: int | None = Field(None, ge=2, description="positions the cache holds")
    label: str | None = Field(None, description="folder and table name")


class GenerateStage(Strict):
    """Generation artifacts, each checked by its greedy tokens, then run on a fixed prompt and timed."""

    artifacts: list[GenerateItem] = Field(default_factory=list, description="one generation artifact each")
    prompt: str = Field("The with statement is used to", description="the fixed prompt every artifact runs")
    max_new_tokens: int = Field(32, ge=1, description="tokens generated from the prompt")
    check_tokens: int = Field(64, ge=1, description="greedy tokens checked against the reference")
    bench_prompt: list[int] = Field(default_factory=lambda: [128], description="prompt lengths timed")
    bench_new: int = Field(64, ge=1, description="tokens decoded per timing")


class Recipe(Strict):
    name: str = Field(..., description="the run's name (titles the report)")
    output: str = Field("edgellm-out", description="folder for everything (relative to the working dir)")
    seed: int = Field(0, description="seed of every random choice the run makes")
    data: DataStage | None = Field(None, description="clean and version a corpus")
    train: TrainConfig | None = Field(
        None, description="train or fine-tune (any edgellm train key); model train"
    )
    prune: PruneStage | None = Field(None, description="structured pruning and recovery; model pruned")
    compress: CompressStage | None = Field(None, description="INT8/INT4 artifacts with accuracy and speed")
    partition: PartitionStage | None = Field(
        None, description="where to cut a model between phone and server"
    )
    export: ExportStage | None = Field(None, description="every target's artifacts, checked for parity")
    bench: BenchStage | None = Field(None, description="latency of every exported artifact")
    split: SplitStage | None = Field(None, description="the split model through the real server on loopback")
    generate: GenerateStage | None = Field(
        None, description="LLM generation artifacts (INT4/INT8, server and phone formats) with token rates"
    )
    report: bool = Field(True, description="write report.md with tables and plots")

    @model_validator(mode="after")
    def _references(self) -> Recipe:
        uses = [("compress", i.model) for i in (self.compress.artifacts if self.compress else [])]
        uses += [("partition", self.partition.model)] if self.partition else []
        uses += [("export", m) for m in (self.export.models if self.export else [])]
        uses += [("prune", self.prune.model)] if self.prune else []
        uses += [("generate", i.model) for i in (self.generate.artifacts if self.generate else [])]
        for where, m in uses:
            if m == "train" and self.train is None:
                raise ValueError(f"{where} uses model 'train' but the recipe has no train section")
            if m == "pruned" and (self.prune is None or where == "prune"):
                raise ValueError(f"{where} uses model 'pruned' but the recipe has no prune section")
        if self.split is not None and self.partition is None:
            raise ValueError("split needs a partition section (the plan it exports and checks)")
        if self.bench is not None and self.export is None:
            raise ValueError("bench needs an export section (the artifacts it times)")
        if self.compress and self.compress.calibration == "data" and self.data is None:
            self.compress.calibration = "bundled"
        return self

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        import yaml
        from pydantic import ValidationError

        p = Path(path)
        if not p.is_file():
            raise EdgeLLMError(
                f"recipe '{path}' does not exist", "give a recipe YAML, e.g. recipes/demo.yaml"
            )
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise EdgeLLMError(f"{path} is not valid YAML: {exc}", "fix the file") from exc
        if not isinstance(data, dict):
            raise EdgeLLMError(f"{path} must be a mapping of sections", "see recipes/demo.yaml")
        try:
            return cls(**data)
        except ValidationError as exc:
            raise EdgeLLMError(
                f"{path}: {first_error(exc)}",
                "fix that key; unknown keys are errors (the sections are listed in edgellm run --help)",
            ) from exc
