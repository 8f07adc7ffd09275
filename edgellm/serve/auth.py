"""Bearer-token auth, shared by REST (``Authorization`` header) and gRPC (``authorization`` metadata)."""

from __future__ import annotations

import hmac


def bearer_ok(header: str, key: str) -> bool:
    """``Authorization: Bearer <key>`` with the right key (constant-time compare)."""
    token = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(token.encode(), key.encode())
