"""The ``mailgate`` command and the processes it starts.

- :mod:`mailgate.cli.commands`: the click commands (``mailgate web|worker|flower|bounces``,
  ``supervise``, and the operator commands: ``user``, ``status``, ``requeue``...);
- :mod:`mailgate.cli.server`: ``mailgate web``, the API under granian;
- :mod:`mailgate.cli.procs`: ``mailgate worker``'s fan-out, ``mailgate supervise``, the lifeline;
- :mod:`mailgate.cli.dev`: ``mailgate run`` (embedded Redis, SMTP sink, the welcome banner),
  for development only: no production command imports it (tests/test_packaging.py).
"""

from mailgate.cli.commands import main

__all__ = ["main"]
