"""mailgate's benchmark harness (``python -m bench``, ``make bench``): not part of ``make test``.

It starts its own Redis (AOF, everysec), a counting SMTP sink and the gateway as the Procfile
runs it, all on loopback, drives them with wrk (or a Python client) and compares the figures
with three baselines: a bare Flask endpoint, a naive Celery task and smtplib over one
connection.
"""
