"""Registered networks. Importing this package registers every architecture."""
from . import cmu, lite  # noqa: F401
from . import hourglass  # noqa: F401
