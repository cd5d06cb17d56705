"""mailgate: an e-mail gateway for phone systems (the Ozeki ``SendEmail`` API).

The shared core: both ``api`` and ``worker`` import this package, and it imports neither.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mailgate")
    """The one version string is pyproject.toml's; this reads it from the installed package."""
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
