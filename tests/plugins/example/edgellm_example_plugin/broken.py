"""A plugin whose import fails: edgellm names it, the other plugins keep working."""

import a_library_that_is_not_installed  # noqa: F401

Runner = None
