"""The recipe pipeline (``edgellm run``): one YAML from raw text to a checked split deployment.

- :class:`~edgellm.pipeline.recipe.Recipe`: the schema (unknown keys and wrong types are errors).
- :func:`~edgellm.pipeline.run.run_recipe` / :class:`~edgellm.pipeline.run.Pipeline`: content-hashed
  stages, skipped when unchanged, resumed after an interruption; lineage in every manifest.
- :mod:`~edgellm.pipeline.report`: ``report.md`` with tables and plots.
"""

from edgellm.pipeline.recipe import Recipe
from edgellm.pipeline.run import Pipeline, run_recipe

__all__ = ["Pipeline", "Recipe", "run_recipe"]
