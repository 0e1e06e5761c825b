# syntax=docker/dockerfile:1
# One image for every Choreo service: `choreo serve <service>`, `choreo provision`, ...
#
# builder: a virtualenv with the project and its pinned runtime dependencies
# (pyproject.toml `dependencies`, no extras: no test or bench tools).
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first so that a code change does not re-download them.
COPY pyproject.toml README.md* ./
RUN python - <<'PY' > /tmp/requirements.txt
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
RUN pip install -r /tmp/requirements.txt

COPY common ./common
COPY services ./services
# Not editable, not a wheel cache: the venv holds exactly the installed project.
RUN pip install --no-deps . && pip check

# final: the venv only, run as an unprivileged user.
FROM python:3.11-slim

LABEL org.opencontainers.image.title="choreo" \
      org.opencontainers.image.description="The choreography pattern on NATS JetStream" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHOREO_HTTP_HOST=0.0.0.0 \
    CHOREO_DATA_DIR=/data

RUN groupadd --system --gid 10001 choreo \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin choreo \
    && mkdir -p /data && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["choreo"]
CMD ["--help"]
