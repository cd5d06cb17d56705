"""The baselines mailgate is measured against, each as small as it can honestly be.

- :mod:`bench.baselines.bare`: a Flask endpoint that parses the request and answers the same XML,
  with no auth, status record or publish (the ceiling for the accept path on this server);
- :mod:`bench.baselines.naive_celery`: the textbook Celery set-up (default settings, the task
  carries the mail, a new SMTP connection per mail, ``apply_async`` from the view);
- :mod:`bench.baselines.ceiling`: smtplib over one reused connection (one Python client's
  SMTP ceiling).
"""
