"""Session URLs that name their replica, so a router can keep a split session on the pod that holds its
cache (``edgellm deploy k8s``: one Service and one Ingress path per StatefulSet pod).

A server with an ordinal (``edgellm serve --replica-id N``, or the trailing number of ``POD_NAME``:
``edgellm-tl-3`` is replica 3) answers ``POST /v2/generate/{model}/sessions`` with ``"url":
"/v2/generate/{model}/replicas/{N}/sessions/{id}"`` and serves the same session routes under that prefix:

- ``POST /v2/generate/{model}/replicas/{r}/sessions``
- ``POST /v2/generate/{model}/replicas/{r}/sessions/{id}/steps``
- ``DELETE /v2/generate/{model}/replicas/{r}/sessions/{id}``

A request whose ``r`` is not this server's ordinal is answered 404 naming the replica it reached (and,
for a session held here, the URL to use). The routes without ``/replicas/{r}`` stay as they were.

Example:
    >>> replica_ordinal(None, {"POD_NAME": "edgellm-tl-gen-server-3"})
    3
    >>> session_url("tl", 3, "ab12")
    '/v2/generate/tl/replicas/3/sessions/ab12'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.serve.protocol import ProtocolError

PREFIX = "/v2/generate/{model}/replicas/{replica}"


def replica_ordinal(explicit: int | None = None, env: Mapping[str, str] | None = None) -> int | None:
    """``explicit`` when given, else the trailing ordinal of ``POD_NAME`` (a StatefulSet pod's name),
    else ``None`` (no replica URLs)."""
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, int) or explicit < 0:
            raise EdgeLLMError(f"replica id {explicit!r} is not an ordinal", "give an integer >= 0")
        return explicit
    m = re.search(r"-(\d+)$", (os.environ if env is None else env).get("POD_NAME", ""))
    return int(m.group(1)) if m else None


def session_url(model: str, replica: int, session: str) -> str:
    """The path of ``session`` on ``replica`` (steps go to ``.../steps``, ``DELETE`` closes it)."""
    return f"/v2/generate/{model}/replicas/{replica}/sessions/{session}"


def add_replica_routes(router: Any, api: Any) -> None:
    """Add the ``/replicas/{r}`` session routes to an aiohttp ``router``, each checking ``r`` and then
    running ``api``'s handler for the plain route (:class:`~edgellm.serve.rest.RestApi`)."""
    router.add_post(PREFIX + "/sessions", _on_own_replica(api, api._gen_open))
    router.add_post(PREFIX + "/sessions/{session}/steps", _on_own_replica(api, api._gen_step))
    router.add_delete(PREFIX + "/sessions/{session}", _on_own_replica(api, api._gen_close))


def _on_own_replica(api: Any, handler: Any) -> Any:
    async def checked(request: Any) -> Any:
        check_replica(api.s, request.match_info)
        return await handler(request)

    return checked


def check_replica(server: Any, match: Mapping[str, str]) -> None:
    """A 404 naming this server's replica when the path's ``replica`` is another one."""
    own, asked = getattr(server, "replica_id", None), match["replica"]
    model, sid = match["model"], match.get("session")
    if own is None:
        raise ProtocolError(
            f"this server has no replica id, so it serves no /replicas/{asked}/ paths; use "
            f"/v2/generate/{model}/sessions (or start it with --replica-id N)",
            404,
        )
    if asked == str(own):
        return
    g = server.generators.get(model)
    if sid is not None and g is not None and sid in g.sessions:
        where = f"session '{sid}' is on replica {own}: use {session_url(model, own, sid)}"
    elif sid is not None:
        where = f"session '{sid}' is not here either; use the url its POST .../sessions answered"
    else:
        where = f"open sessions at /v2/generate/{model}/replicas/{own}/sessions"
    raise ProtocolError(f"this is replica {own}, not replica {asked}: {where}", 404)
