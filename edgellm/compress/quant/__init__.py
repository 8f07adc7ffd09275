"""Quantization: INT8 (static, SmoothQuant, dynamic) and INT4 weight-only (RTN, GPTQ, AWQ) -> ``QuantSpec``."""
