"""The batching server for the cloud half: KServe v2 over REST and gRPC, dynamic batching, metrics.

Example:
    >>> from edgellm.serve import ModelConfig, Server, ServerConfig       # doctest: +SKIP
    >>> asyncio.run(Server([ModelConfig("edgellm-out/minilm-x86-server")]).serve_forever())  # doctest: +SKIP
"""

from edgellm.serve.config import (
    BatchingConfig,
    CanaryConfig,
    GenerationConfig,
    HttpConfig,
    LimitsConfig,
    LLMConfig,
    ModelConfig,
    ServerConfig,
)
from edgellm.serve.server import Server, serve_in_background

__all__ = [
    "BatchingConfig",
    "CanaryConfig",
    "GenerationConfig",
    "HttpConfig",
    "LimitsConfig",
    "LLMConfig",
    "ModelConfig",
    "Server",
    "ServerConfig",
    "serve_in_background",
]
