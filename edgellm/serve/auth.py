"""Bearer-token auth, shared by REST (``Authorization`` header) and gRPC (``authorization`` metadata)."""

from __future__ import annotations

import hmac


def bearer_ok(header: str, key: str) -> bool:
    """``Authorization: Bearer <key>`` with the right key (constant-time compare). The scheme is
    case-insensitive (``bearer``, ``BEARER``), as HTTP auth schemes are (RFC 9110 §11.1)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    return hmac.compare_digest(token.strip().encode(), key.encode())
