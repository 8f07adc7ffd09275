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

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgellm.errors import EdgeLLMError, first_error
from edgellm.train.trainer import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataStage(_Strict):
    """Clean a corpus and commit it to a dataset store (or use an existing dataset version)."""

    source: str = Field("pydoc", description="file, folder, STORE@REF, or pydoc (the bundled text)")
    version: str | None = Field(
        None, description="STORE@REF: use this dataset version as it is (no cleaning)"
    )
    steps: list[Any] | None = Field(None, description="edgellm data clean steps (default: all)")
    store: str = Field("datasets", description="the dataset store (relative to the output folder)")
    tag: str | None = None
    text_field: str = "text"
    workers: int = Field(0, ge=0, description="cleaning processes; 0: one per core")

    @model_validator(mode="after")
    def _one_source(self) -> DataStage:
        if self.version is not None and "source" in self.model_fields_set:
            raise ValueError("give either data.source (to clean) or data.version (to use), not both")
        return self


class PruneStage(_Strict):
    """Structured pruning (heads, FFN channels, blocks; channels of plain torch modules), then an optional
    distillation recovery from the unpruned model; later sections use the result as model ``pruned``."""

    model: str
    heads: float = Field(0.0, ge=0, lt=1)
    ffn: float = Field(0.0, ge=0, lt=1)
    blocks: float = Field(0.0, ge=0, lt=1)
    channels: float = Field(0.0, ge=0, lt=1, description="plain torch modules: coupled channels to remove")
    score: Literal["l1", "l2", "taylor", "wanda"] = "wanda"
    scope: Literal["layer", "global"] = "layer"
    multiple_of: int = Field(1, ge=1)
    runs: int = Field(10, ge=1, description="timed rounds of the pruned-vs-unpruned latency comparison")
    recover_steps: int = Field(0, ge=0, description="distillation steps from the unpruned model (0: none)")
    recover_lr: float = Field(2e-4, gt=0)


class CompressItem(_Strict):
    model: str
    recipe: str = Field(..., description="int8-dynamic, int8-static, w4a16-gptq, ... or auto")
    options: dict[str, Any] = Field(default_factory=dict, description="the recipe's options")
    label: str | None = Field(None, description="folder and table name (default: the recipe's)")
    target: str = "x86-server"
    max_accuracy_drop: str | None = Field(None, description="guard, e.g. cosine>=0.99 or ppl+3%")


class CompressStage(_Strict):
    artifacts: list[CompressItem] = Field(default_factory=list)
    calibration: Literal["data", "bundled"] = Field(
        "data", description="calibrate and evaluate on disjoint parts of the data section's dataset"
    )
    runs: int = Field(15, ge=1, description="timed rounds against fp32")
    eval_sequences: int = Field(128, ge=8)


class ExportStage(_Strict):
    """Every (target, format, precision) of each model; each artifact checked against the reference."""

    models: list[str] = Field(default_factory=lambda: ["minilm"])
    cases: Literal["all"] | list[tuple[str, str, str]] = Field(
        "all", description="all, or [target, format, precision] triples"
    )


class BenchStage(_Strict):
    runs: int = Field(30, ge=1)
    warmup: int = Field(5, ge=0)
    batch: list[int] = Field(default_factory=lambda: [1, 8])
    seq: list[int] = Field(default_factory=lambda: [128])
    threads: int | None = Field(None, ge=1)


class PartitionStage(_Strict):
    model: str = "minilm"
    device: str = "snapdragon-865"
    server: str = "x86-server"
    bandwidth: str = "10mbit"
    downlink: str | None = None
    rtt: str = "50ms"
    device_memory: str | None = None
    min_device_blocks: int = Field(1, ge=0)
    codecs: list[str] = Field(default_factory=lambda: ["fp32", "fp16", "int8", "int8+zstd"])
    seq: int = Field(128, ge=1)
    runs: int = Field(10, ge=1)


class SplitStage(_Strict):
    """Export the plan's two halves, serve the server half on loopback, send real requests through it."""

    requests: int = Field(8, ge=1, description="requests sent through the split model")
    cut: int | None = Field(None, ge=0, description="check this cut instead of the plan's best")
    codec: str | None = Field(None, description="with cut: the activation codec (default fp16)")
    device_format: str | None = None
    seq_len: int | None = Field(None, ge=1, description="static sequence length of a TFLite half")


class Recipe(_Strict):
    name: str
    output: str = Field("edgellm-out", description="folder for everything (relative to the working dir)")
    seed: int = 0
    data: DataStage | None = None
    train: TrainConfig | None = None
    prune: PruneStage | None = None
    compress: CompressStage | None = None
    partition: PartitionStage | None = None
    export: ExportStage | None = None
    bench: BenchStage | None = None
    split: SplitStage | None = None
    report: bool = True

    @model_validator(mode="after")
    def _references(self) -> Recipe:
        uses = [("compress", i.model) for i in (self.compress.artifacts if self.compress else [])]
        uses += [("partition", self.partition.model)] if self.partition else []
        uses += [("export", m) for m in (self.export.models if self.export else [])]
        uses += [("prune", self.prune.model)] if self.prune else []
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
