"""The model hub: a local, content-addressed registry of models and artifacts with their lineage.

Layout of a hub directory (``--hub DIR``, else ``$EDGELLM_HUB``, else ``~/.edgellm/hub``; a shared
directory serves a team):

- ``objects/ab/cdef...``: every file once, named by its sha256 (``edgellm.hub.objects``, the same object
  store the dataset store keeps its shards in);
- ``entries/NAME/VERSION.json``: one entry per push: its files (path -> sha256, bytes), the lineage
  gathered from what it is (an artifact's manifest: dataset, recipe, source model, compression record,
  parity, benchmark figures; a model directory's ``lineage.json`` / ``pruning.json`` /
  ``train_summary.json``: ``edgellm.hub.lineage``), who pushed it from where, and when;
- ``tags/NAME.json``: tag -> version.

References (``edgellm.hub.refs``): ``NAME`` (the latest version), ``NAME@3`` (version 3), ``NAME@prod``
(a tag). A name may carry a variant after a colon: ``minilm:int8@3``. Versions are allocated under a lock
file, files are written to a temporary name and renamed, so two team members pushing at once never
collide. ``pull`` verifies every file's sha256 and refuses an entry whose files do not match;
``resolve`` makes a verified checkout that ``serve``, ``split`` and ``load`` take wherever they take a
directory (``edgellm.hub.registry``).

Example:
    >>> hub = Hub("/shared/edgellm-hub")                                  # doctest: +SKIP
    >>> e = hub.push("edgellm-out/minilm-int8", "minilm:int8", tags=["staging"])   # doctest: +SKIP
    >>> hub.resolve("minilm:int8@staging")                                # doctest: +SKIP
"""

from edgellm.hub.lineage import LINEAGE_FILES, gather_lineage
from edgellm.hub.objects import ObjectStore
from edgellm.hub.refs import NAME_RE, TAG_RE, default_root, parse_ref
from edgellm.hub.registry import Hub, resolve_path

__all__ = [
    "LINEAGE_FILES",
    "NAME_RE",
    "TAG_RE",
    "Hub",
    "ObjectStore",
    "default_root",
    "gather_lineage",
    "parse_ref",
    "resolve_path",
]
