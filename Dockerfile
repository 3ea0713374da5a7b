# One image for every Clinic Relay process (api, worker, beat, flower, audit, tebra-sim); compose.yaml picks
# the command. Settings come from the environment (.env via compose); nothing secret is baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The project and its dependencies (setup.cfg); gunicorn_conf.py and flowerconfig.py are read by path from /app.
COPY setup.cfg pyproject.toml README.md ./
COPY config ./config
COPY tasks ./tasks
COPY workers ./workers
COPY app ./app
COPY tebra_sim ./tebra_sim
COPY scripts ./scripts
RUN pip install . \
    && useradd --create-home --uid 10001 relay \
    && mkdir -p /app/var/audit \
    && chown -R relay /app/var

# Not root: a process that is broken into cannot rewrite the image or the audit key files of others.
USER relay

EXPOSE 8000 5555 8089 9808
CMD ["gunicorn", "-c", "app/gunicorn_conf.py", "app.wsgi:app"]
