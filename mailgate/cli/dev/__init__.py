"""``mailgate run`` and what it starts beside the gateway: the development tooling.

:mod:`~mailgate.cli.dev.run` (the runner, under honcho), :mod:`~mailgate.cli.dev.embedded` (the
embedded Redis), :mod:`~mailgate.cli.dev.sink` (the SMTP sink),
:mod:`~mailgate.cli.dev.welcome` (the first account and the banner). They need the run extra.
"""
