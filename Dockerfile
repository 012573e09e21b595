# llm-router container image. Build from the repository root:
#
#   docker build -t llm-router .
#
# See DEPLOY.md for running it with docker, compose and Kubernetes.

# ---------------------------------------------------------------- builder ----
# Same Rust release as the development machines and CI (rustc 1.95).
FROM rust:1.95-slim-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Profile-guided optimisation (scripts/build-release; docs/benchmarks.md,
# Change 10): an instrumented build of the router serves a short training load
# on loopback, driven by wrk, and llvm-profdata merges what it recorded (LLVM 19
# reads rustc 1.95's profiles). The training also needs the benchmark's mock
# upstream and streaming client (examples/) and its request (bench/).
# Unpinned on purpose, as in the runtime stage below.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends llvm-19 wrk \
    && rm -rf /var/lib/apt/lists/*

# No dependency-cache layer: the dependencies are compiled with the profile of
# the training run, which needs the real sources, so a placeholder build could
# not be reused. The build command is ./scripts/build-release, the one used
# outside Docker too; LLM_ROUTER_PGO=on makes it fail rather than ship a build
# without PGO.
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY .cargo/ .cargo/
COPY src/ src/
COPY examples/ examples/
COPY scripts/ scripts/
COPY bench/chat.lua bench/request.json bench/
RUN LLM_ROUTER_PGO=on ./scripts/build-release \
    && ./target/release/llm-router --version | grep '^llm-router '

# ---------------------------------------------------------------- runtime ----
# Debian slim rather than distroless: the HEALTHCHECK needs curl (distroless has
# no shell and no curl), and the binary links against the same bookworm glibc.
# ca-certificates: upstream TLS is verified against the system trust store.
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="llm-router" \
      org.opencontainers.image.description="OpenAI-compatible LLM gateway: priority failover, model-aware routing, sliding-window rate limits, SSE streaming" \
      org.opencontainers.image.licenses="MIT"

# Unpinned on purpose: bookworm's security updates replace exact versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 llm-router \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin llm-router \
    && mkdir -p /app

COPY --from=builder /src/target/release/llm-router /usr/local/bin/llm-router

# The router reads a `.env` file from its working directory: /app is empty, so
# nothing is read unless one is mounted at /app/.env on purpose.
WORKDIR /app

# Numeric user, so that Kubernetes' runAsNonRoot can verify it is not root.
USER 10001:10001

ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000

# /health is liveness only and needs no client key. It checks loopback, so HOST
# must include it (0.0.0.0, the default, does). Shell form, so that a PORT
# given at run time is the port checked.
# hadolint ignore=DL3025
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:${PORT:-8000}/health || exit 1

# SIGTERM: stop accepting, let in-flight requests finish for
# SHUTDOWN_GRACE_PERIOD seconds (default 30), exit 0. Give `docker stop` more
# than that: docker stop -t 35 (compose: stop_grace_period: 35s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["llm-router"]
CMD ["serve"]
