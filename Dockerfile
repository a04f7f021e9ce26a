# The fulfillment image: workers, Flower and the CLI all run from it.
# /data belongs to the unprivileged user, so a named volume mounted there (Flower's
# state) is writable without running as root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 fulfillment \
    && mkdir -p /data && chown fulfillment /data
WORKDIR /app
# Dependencies first, in a layer of their own: it is rebuilt only when pyproject.toml
# changes, not on every change to the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm -rf /root/.cache /tmp/requirements.txt
COPY README.md celeryconfig.py ./
COPY fulfillment ./fulfillment
RUN pip install --no-deps . && rm -rf /root/.cache

USER fulfillment
ENV FULFILLMENT_DATA_DIR=/home/fulfillment/data
# A worker is healthy when its own node answers a broadcast ping.
HEALTHCHECK --interval=30s --timeout=15s --start-period=20s --retries=3 \
    CMD celery -A fulfillment inspect ping --destination "celery@$HOSTNAME" --timeout 10 || exit 1
CMD ["celery", "-A", "fulfillment", "worker", "--loglevel=INFO"]
