# tmi-cluster: one supervisor per container (`tmi-cluster run`), or any other command
# (`docker run IMAGE dashboard --host 0.0.0.0`). Redis and the database are outside the image:
# set TMI_CLUSTER_REDIS__URL and TMI_CLUSTER_DATABASE__URL (docs/deployment.md).

FROM python:3.11-slim-bookworm AS build
# A C compiler only here: mypyc compiles the parser's hot loop into the wheel.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --system --create-home --uid 10001 tmi
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /home/tmi
ENV PYTHONUNBUFFERED=1 \
    TMI_CLUSTER_WEB__HOST=0.0.0.0
EXPOSE 8080
# The supervisor of this container is alive and runs its workers (not the whole cluster).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s \
    CMD ["tmi-cluster", "health", "--host-only"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tmi-cluster"]
CMD ["run"]
