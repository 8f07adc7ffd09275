"""Typed quantization configs: one dataclass per method, validated on construction.

Example:
    >>> from edgellm.compress.quant import Int4WeightOnly
    >>> Int4WeightOnly(method="gptq", group_size=128)           # doctest: +ELLIPSIS
    Int4WeightOnly(...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from edgellm import plugins
from edgellm.errors import EdgeLLMError

ALPHA_GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.3, 0.35, ..., 0.95

SCHEMA_VERSION = 1
CALIBRATIONS = ("minmax", "percentile", "entropy")
INT4_METHODS = ("rtn", "gptq", "awq")


@dataclass
class QuantConfig:
    """Fields every method shares.

    Args:
        keep: layer-name patterns (fnmatch; ``lm_head`` also matches ``lm.lm_head``) left in fp32.
        auto_keep: additionally leave the N layers most sensitive to quantization in fp32, found by
            quantizing one layer at a time and measuring the model's output error on calibration data.
    """

    keep: tuple[str, ...] = ()
    auto_keep: int = 0
    recipe: ClassVar[str] = ""
    bits: ClassVar[int] = 8

    def __post_init__(self) -> None:
        self.keep = tuple(self.keep)
        if self.auto_keep < 0:
            raise EdgeLLMError(f"auto_keep={self.auto_keep} is negative", "use 0 or a positive layer count")

    @property
    def needs_calibration(self) -> bool:
        """Whether :func:`~edgellm.compress.quant.quantize` needs calibration batches for this config."""
        return self.auto_keep > 0

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "schema_version": SCHEMA_VERSION, **asdict(self)}


def _check_alpha(alpha: float | str | None, grid: tuple[float, ...]) -> None:
    if alpha is None:
        return
    if isinstance(alpha, str):
        if alpha != "auto":
            raise EdgeLLMError(f"smoothquant_alpha '{alpha}' is not a number", "use e.g. 0.5, or 'auto'")
    elif not 0.0 <= alpha <= 1.0:
        raise EdgeLLMError(f"smoothquant_alpha {alpha} is outside [0, 1]", "use e.g. 0.5, or 'auto'")
    if not grid or not all(0.0 <= a <= 1.0 for a in grid):
        raise EdgeLLMError(
            f"smoothquant_grid {grid} is empty or has values outside [0, 1]", "use e.g. (0.3, 0.5, 0.7, 0.9)"
        )


@dataclass
class Int8Dynamic(QuantConfig):
    """W8 per-channel symmetric int8 weights; activations quantized per tensor at run time (uint8).

    Args:
        per_channel: one weight scale per output channel (else one per tensor).
        smoothquant_alpha: divide activations by per-channel SmoothQuant factors (folded into the
            weights) so that outlier channels stop dominating the per-tensor range; needs calibration.
            ``"auto"``: search alpha per layer on ``smoothquant_grid`` (least quantized-output error).
        smoothquant_grid: the alphas ``"auto"`` tries.
        bias_correction: add each layer's mean output shift from quantization (calibration data) to its
            bias, as NNCF's fast bias correction does (MiniLM in ONNX Runtime, mean / min embedding
            cosine: 0.9934 / 0.9865 without, 0.9937 / 0.9869 with; folded into QAttention's and the
            graph's biases).
    """

    recipe: ClassVar[str] = "int8-dynamic"
    per_channel: bool = True
    smoothquant_alpha: float | str | None = None
    smoothquant_grid: tuple[float, ...] = ALPHA_GRID
    bias_correction: bool = False

    @property
    def needs_calibration(self) -> bool:
        return self.smoothquant_alpha is not None or self.bias_correction or self.auto_keep > 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.smoothquant_grid = tuple(self.smoothquant_grid)
        _check_alpha(self.smoothquant_alpha, self.smoothquant_grid)


@dataclass
class Int8Static(QuantConfig):
    """W8A8 static post-training quantization.

    Args:
        calibration: activation range estimator: ``minmax``, ``percentile`` (clip at ``percentile``)
            or ``entropy`` (KL-divergence threshold, as TensorRT's entropy calibrator).
        percentile: the percentile kept by ``percentile`` calibration (99.99 clips the top 0.01 %).
        per_channel: one weight scale per output channel (else one per tensor).
        smoothquant_alpha: migrate activation outliers into the weights with SmoothQuant at this alpha
            (0.5 balances both; None disables); ``"auto"``: search alpha per layer (per group of layers
            reading one tensor) on ``smoothquant_grid``, keeping the one whose quantized outputs are
            closest to fp32 on calibration rows.
        smoothquant_grid: the alphas ``"auto"`` tries.
        symmetric_activations: int8 activations with zero point 0 (what TensorRT's explicit
            quantization takes) instead of uint8 with a zero point (what ONNX Runtime's CPU prefers).
        bias_correction: add each layer's mean output shift from quantization (``E[W x] - E[Wq dq(x)]``
            over calibration tokens) to its bias, as NNCF's fast bias correction does; the lowering
            folds it into the bias the graph already adds.
    """

    recipe: ClassVar[str] = "int8-static"
    calibration: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = True
    smoothquant_alpha: float | str | None = None
    symmetric_activations: bool = False
    smoothquant_grid: tuple[float, ...] = ALPHA_GRID
    bias_correction: bool = False

    @property
    def needs_calibration(self) -> bool:  # activation ranges come from calibration
        return True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration not in CALIBRATIONS:
            raise EdgeLLMError(
                f"unknown calibration '{self.calibration}'", f"use one of: {', '.join(CALIBRATIONS)}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise EdgeLLMError(f"percentile {self.percentile} is outside (50, 100]", "use e.g. 99.99")
        self.smoothquant_grid = tuple(self.smoothquant_grid)
        _check_alpha(self.smoothquant_alpha, self.smoothquant_grid)


@dataclass
class SmoothQuant(Int8Static):
    """Int8Static with SmoothQuant on (alpha 0.5 by default)."""

    recipe: ClassVar[str] = "int8-smoothquant"
    smoothquant_alpha: float | None = 0.5


@dataclass
class Int8StaticOV(Int8Static):
    """Int8Static tuned to meet NNCF's default INT8 accuracy: SmoothQuant 0.8 + fast bias correction.

    Same QDQ graph as ``int8-static`` (every linear a per-tensor uint8 x per-channel int8 QDQ MatMul
    that ONNX Runtime and OpenVINO run in int8, nothing extra left in float); the bias correction is
    folded into the biases the graph already adds.

    Measured on MiniLM (``python benchmarks/peers_openvino.py --accuracy``: 64 calibration sequences,
    214 held-out pydoc sentences; mean / min sentence-embedding cosine vs torch fp32; every edgellm
    and NNCF artifact runs its 36 linears as u8 FullyConnected in OpenVINO):

    ==================================  ===============  ===============  ===============
    variant                             ONNX Runtime     OpenVINO f32     OpenVINO bf16
    ==================================  ===============  ===============  ===============
    int8-static, SmoothQuant 0.8        0.9981 / 0.9947  0.9982 / 0.9941  0.9982 / 0.9946
    int8-static-ov (this)               0.9985 / 0.9965  0.9985 / 0.9968  0.9985 / 0.9963
    int8-static, alpha "auto" + b.c.    0.9984 / 0.9961  0.9984 / 0.9959  0.9984 / 0.9954
    NNCF 3.4 default (TRANSFORMER)      --               0.9972 / 0.9923  0.9972 / 0.9911
    Optimum avx512_vnni dynamic         0.9927 / 0.9752  --               --
    ==================================  ===============  ===============  ===============

    Bias correction is what closes the gap (SmoothQuant 0.8 alone: min 0.9947); the per-layer alpha
    search (``smoothquant_alpha="auto"``) lands near 0.8 on most layers and measured no better than
    the global 0.8, so it is not the default here.
    """

    recipe: ClassVar[str] = "int8-static-ov"
    smoothquant_alpha: float | str | None = 0.8
    bias_correction: bool = True


@dataclass
class Int4WeightOnly(QuantConfig):
    """W4A16: 4-bit weights in groups along the input dimension; activations stay in floating point.

    Args:
        method: ``rtn`` (round to nearest), ``gptq`` (error-compensating, Hessian from calibration
            inputs) or ``awq`` (activation-aware per-channel scaling, then round to nearest).
        group_size: inputs per scale; a power of two >= 16 that divides every quantized layer's inputs.
        symmetric: zero point fixed at 8 (else one zero point per group).
        damp: GPTQ's damping, as a fraction of the mean Hessian diagonal.
        awq_grid: how many alpha values AWQ tries in [0, 1).
        scale_dtype: ``float32``, or ``float16``: scales rounded to float16 before the codes are chosen,
            so that formats storing float16 scales (GGUF's Q4_0/Q4_1 at group size 32) hold them exactly.
        act_order: GPTQ quantizes inputs in order of decreasing Hessian diagonal, with static groups
            (grids from the original weights; the layout of the codes is unchanged).
        full_range: symmetric grids over all 16 levels (``scale = -(signed max) / 8``, llama.cpp's Q4_0
            rule) instead of ``absmax / 7`` over 15; scales then carry a sign, which GGUF and ONNX
            Runtime take (tiny-llama Q4_0, KL divergence to fp32 on the held-out text: 0.00078 with
            GPTQ, 0.00099 without; benchmarks/bench_targets_llm.py).
    """

    bits: ClassVar[int] = 4
    method: str = "rtn"
    group_size: int = 128
    symmetric: bool = True
    damp: float = 0.01
    awq_grid: int = 20
    scale_dtype: str = "float32"
    act_order: bool = False
    full_range: bool = False

    @property
    def recipe(self) -> str:  # type: ignore[override]
        return f"w4a16-{self.method}"

    @property
    def needs_calibration(self) -> bool:  # GPTQ's Hessian, AWQ's activation scales
        return self.method in ("gptq", "awq") or self.auto_keep > 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale_dtype not in ("float32", "float16"):
            raise EdgeLLMError(
                f"scale_dtype '{self.scale_dtype}' is not float32 or float16", "use float16 for GGUF"
            )
        if self.method not in INT4_METHODS:
            raise EdgeLLMError(
                f"unknown INT4 method '{self.method}'", f"use one of: {', '.join(INT4_METHODS)}"
            )
        g = self.group_size
        if g < 16 or g & (g - 1):
            raise EdgeLLMError(f"group size {g} is not a power of two >= 16", "use 32, 64 or 128")
        if not 0 < self.damp < 1:
            raise EdgeLLMError(f"damp {self.damp} is outside (0, 1)", "use e.g. 0.01")
        if self.awq_grid < 2:
            raise EdgeLLMError(f"awq_grid {self.awq_grid} is < 2", "use e.g. 20")


@dataclass
class Int8WeightOnly(QuantConfig):
    """W8A16 by round to nearest: symmetric int8 codes in groups along the input dimension, activations
    in floating point. At group size 32 with float16 scales it is GGUF's ``Q8_0`` block exactly; the
    generation exporter lowers it to GGUF only (the other formats take ``int8-dynamic``).

    Args:
        group_size: inputs per scale (a power of two >= 16).
        scale_dtype: ``float16`` (GGUF stores float16 scales) or ``float32``.
    """

    recipe: ClassVar[str] = "w8a16-rtn"
    bits: ClassVar[int] = 8
    group_size: int = 32
    scale_dtype: str = "float16"

    def __post_init__(self) -> None:
        super().__post_init__()
        g = self.group_size
        if g < 16 or g & (g - 1):
            raise EdgeLLMError(f"group size {g} is not a power of two >= 16", "use 32 (GGUF's Q8_0 block)")
        if self.scale_dtype not in ("float32", "float16"):
            raise EdgeLLMError(f"scale_dtype '{self.scale_dtype}' is not float32 or float16", "use float16")


RECIPES: dict[str, Any] = {
    "int8-dynamic": lambda **kw: Int8Dynamic(**kw),
    "int8-static": lambda **kw: Int8Static(**kw),
    "int8-smoothquant": lambda **kw: SmoothQuant(**kw),
    "int8-static-ov": lambda **kw: Int8StaticOV(**kw),
    "w8a16-rtn": lambda **kw: Int8WeightOnly(**kw),
    "w4a16-rtn": lambda **kw: Int4WeightOnly(method="rtn", **kw),
    "w4a16-gptq": lambda **kw: Int4WeightOnly(method="gptq", **kw),
    "w4a16-awq": lambda **kw: Int4WeightOnly(method="awq", **kw),
}


@plugins.accepts("edgellm.quant_methods")
def _accept_plugin(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"{obj!r} is not callable")
    RECIPES.setdefault(name, obj)


def config_for(recipe: str, **kwargs: Any) -> QuantConfig:
    """The config of a named recipe (``int8-static``, ``w4a16-gptq``...) with overrides."""
    if recipe not in RECIPES:
        plugins.load("edgellm.quant_methods", recipe)  # a plugin package may provide it
    if recipe not in RECIPES:
        raise EdgeLLMError(f"unknown recipe '{recipe}'", f"use one of: {', '.join([*RECIPES, 'auto'])}")
    try:
        return RECIPES[recipe](**kwargs)
    except TypeError as exc:
        raise EdgeLLMError(
            f"recipe '{recipe}' does not take {exc}".replace("__init__() got an ", ""), "remove the option"
        ) from exc
