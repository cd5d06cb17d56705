"""The ``mailgate`` command and the processes it starts.

- :mod:`mailgate.cli.main`: the click commands (``mailgate web|worker|flower|bounces|supervise``,
  the operator commands: ``user``, ``status``, ``requeue``, ``suppressions``...);
- :mod:`mailgate.cli.server`: ``mailgate web``, the API under granian;
- :mod:`mailgate.cli.procs`: ``mailgate worker``'s fan-out, ``mailgate supervise``, the lifeline;
- :mod:`mailgate.cli.dev`: ``mailgate run`` (embedded Redis, SMTP sink, the welcome banner),
  for development only: no production command imports it (tests/test_packaging.py).
"""

from mailgate.cli.main import main

__all__ = ["main"]
