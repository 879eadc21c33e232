# syntax=docker/dockerfile:1
# mailrelay: multi-stage build, runs as an unprivileged user.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAILRELAY_VAR_DIR=/var/lib/mailrelay \
    MAILRELAY_DATABASE_URL=sqlite+aiosqlite:////var/lib/mailrelay/mailrelay.db \
    MAILRELAY_ENV=production
RUN groupadd --system mailrelay \
    && useradd --system --gid mailrelay --home-dir /var/lib/mailrelay --create-home mailrelay
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/mailrelay
# Alembic finds alembic.ini and migrations/ in the working directory.
COPY alembic.ini ./
COPY migrations ./migrations
VOLUME ["/var/lib/mailrelay"]
USER mailrelay
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"]
CMD ["mailrelay", "serve", "--host", "0.0.0.0", "--port", "8000"]
