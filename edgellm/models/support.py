"""What edgellm supports, per model family and stage: one declaration that the README's support table
(``scripts/gen_support_table.py``) is rendered from and the family x stage conformance matrix
(``tests/conformance/test_family_matrix.py``) checks cell by cell, so the table cannot drift from what the
code does.

A cell is ``supported`` (the stage runs on a tiny model of the family with parity against torch) or
``refused`` (the stage stops with a clear :class:`~edgellm.errors.EdgeLLMError` that names the family;
``reason`` is what the table tells users). ``pending`` names the work that is making the cell true: the
table shows the cell as pending, and the matrix expects it to fail until that work lands (strict xfail),
so the cell flips as soon as it does.

Example:
    >>> from edgellm.models.support import cell
    >>> cell("bert", "generate").status
    'refused'
"""

from __future__ import annotations

from dataclasses import dataclass

ENCODERS = ("bert", "roberta", "xlm-roberta", "distilbert", "electra")
DECODERS = ("llama", "mistral", "qwen2", "qwen3", "gpt2", "phi3", "gemma", "gemma2", "gemma3_text")
SUPPORTED, REFUSED = "supported", "refused"


@dataclass(frozen=True)
class Stage:
    """A stage of the pipeline as users run it.

    Args:
        name: the key of the stage in :data:`SUPPORT`.
        title: the column header of the support table.
        how: the command (or Python call) that runs it, for the table's legend.
    """

    name: str
    title: str
    how: str


STAGES: tuple[Stage, ...] = (
    Stage("load", "load", "`edgellm.models.load(DIR)`: the family's blocks and its task head"),
    Stage("onnx", "ONNX", "`edgellm export DIR --target x86-server` (fp32, ONNX Runtime)"),
    Stage("openvino", "OpenVINO", "`edgellm export DIR --target x86-server --format openvino`"),
    Stage("ort", "ORT-mobile", "`edgellm export DIR --target snapdragon-865 --format ort`"),
    Stage("tflite", "LiteRT", "`edgellm export DIR --target snapdragon-865 --format tflite`"),
    Stage("pte", "ExecuTorch", "`edgellm export DIR --target snapdragon-8-gen-3 --format pte`"),
    Stage(
        "tensorrt",
        "TensorRT",
        "`edgellm export DIR --target nvidia-a100 --format tensorrt` (the Q/DQ ONNX, checked in ONNX Runtime;"
        " the engine is built where TensorRT and a GPU are)",
    ),
    Stage("int8", "INT8", "`edgellm compress DIR --recipe int8-dynamic` (ONNX Runtime)"),
    Stage("int4", "INT4", "`edgellm compress DIR --recipe w4a16-rtn --group-size 32` (`MatMulNBits`)"),
    Stage("prune", "pruning", "`edgellm compress DIR --prune heads=0.5,ffn=0.25`"),
    Stage("split", "split", "`edgellm partition DIR`, then `edgellm split export DIR --cut 1`"),
    Stage("split-generate", "split generation", "`edgellm split export DIR --generate --cut 1`"),
    Stage("generate", "generation", "`edgellm export DIR --generate` (key/value-cache step graph)"),
    Stage(
        "gguf",
        "GGUF",
        "`edgellm export DIR --generate --format gguf` (run in llama.cpp where `make setup-llama` installed"
        " it; without it the file's tensor layout is checked in torch)",
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
GENERATION_STAGES = ("split-generate", "generate", "gguf")


@dataclass(frozen=True)
class Cell:
    """One family x stage: ``status`` (``supported`` or ``refused``), the ``reason`` of a refusal as
    users read it, and ``pending``: the work that is making the cell true, while it is not yet."""

    status: str
    reason: str = ""
    pending: str = ""

    def __post_init__(self) -> None:
        if self.status not in (SUPPORTED, REFUSED):
            raise ValueError(f"cell status {self.status!r} is neither {SUPPORTED!r} nor {REFUSED!r}")
        if (self.status == REFUSED) != bool(self.reason):
            raise ValueError("a refused cell says why (reason); a supported cell has no reason")


OK = Cell(SUPPORTED)
NOT_A_DECODER = Cell(REFUSED, "decoders only: an encoder has no causal-LM head or key/value cache")
NO_CACHE_GRAPH = Cell(
    REFUSED,
    "no key/value-cache step graph for this family yet (Phi-3's fused projections, Gemma's embedding "
    "scale, soft-capping and sliding windows): it exports, compresses and splits as a whole model",
)


def _row(family: str, **cells: Cell) -> dict[str, Cell]:
    kind = NOT_A_DECODER if family in ENCODERS else OK
    row = {s: (kind if s in GENERATION_STAGES else OK) for s in STAGE_NAMES}
    unknown = set(cells) - set(row)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)} for {family}")
    return {**row, **cells}


def _no_cache_graph(family: str) -> dict[str, Cell]:
    """A decoder whose generation stages have no key/value-cache graph: refused by name."""
    return _row(family, **{s: NO_CACHE_GRAPH for s in GENERATION_STAGES})


SUPPORT: dict[str, dict[str, Cell]] = {
    "bert": _row("bert"),
    "roberta": _row("roberta"),
    "xlm-roberta": _row("xlm-roberta"),
    "distilbert": _row("distilbert"),
    "electra": _row("electra"),
    "llama": _row("llama"),
    "mistral": _row("mistral"),
    "qwen2": _row("qwen2"),
    "qwen3": _row("qwen3"),
    "gpt2": _row("gpt2"),
    "phi3": _no_cache_graph("phi3"),
    "gemma": _no_cache_graph("gemma"),
    "gemma2": _no_cache_graph("gemma2"),
    "gemma3_text": _no_cache_graph("gemma3_text"),
}
FAMILY_NAMES = tuple(SUPPORT)
# model types the loader takes that share a declared family's row (the README does not list them)
ALIASES = {"camembert": "roberta"}

# what the table says about the work a pending cell waits for (none is pending today)
PENDING_NOTES: dict[str, str] = {}


def cell(family: str, stage: str) -> Cell:
    """The declared cell of ``family`` x ``stage``.

    Raises:
        KeyError: a family or stage the declaration does not list.
    """
    if stage not in STAGE_NAMES:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_NAMES)}")
    return SUPPORT[family][stage]


def kind(family: str) -> str:
    """``encoder`` or ``decoder``."""
    return "encoder" if family in ENCODERS else "decoder"
