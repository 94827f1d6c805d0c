# The enqueue API (and the webhook deliverer, which needs nothing more): slim, no torch, non-root.
#   docker build -f deploy/docker/api.Dockerfile -t genfleet-api .
FROM python:3.11-slim
# genfleet/ links to api/, shared/ and workers/ (one import namespace); the copies below fill in what it links to.

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY genfleet genfleet
COPY shared shared
COPY api api
COPY workers/__init__.py workers/webhooks.py workers/
RUN pip install . && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin genfleet

USER 10001
EXPOSE 8000 9102
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["genfleet", "api", "--host", "0.0.0.0", "--port", "8000"]
