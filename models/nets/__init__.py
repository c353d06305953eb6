"""Registered networks. Importing this package registers every architecture."""
from . import cmu, lite, movenet  # noqa: F401
from . import hourglass  # noqa: F401
from . import thunder  # noqa: F401
