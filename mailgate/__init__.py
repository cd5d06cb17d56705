"""mailgate: an e-mail gateway for phone systems (the Ozeki ``SendEmail`` API).

The shared core: both ``api`` and ``worker`` import this package, and it imports neither.
"""

__version__ = "0.1.0"
