# syntax=docker/dockerfile:1
#
# One Dockerfile for the whole workspace, one small image per service:
#
#   docker build --target admission -t ticketing/admission:dev .
#   docker build --target seat-lock -t ticketing/seat-lock:dev .
#   docker build --target inventory -t ticketing/inventory:dev .
#   docker build --target payment   -t ticketing/payment:dev .
#   docker build --target notifier  -t ticketing/notifier:dev .
#   docker build --target stream-setup -t ticketing/stream-setup:dev .   (the stream's Job)
#
# or, with one target and a build argument (same result):
#
#   docker build --target service --build-arg SERVICE=payment -t ticketing/payment:dev .
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe from the manifests)
# -> builder (dependencies cooked in their own layer, cached until Cargo.toml/Cargo.lock change;
# then the five release binaries) -> runtime (distroless, non-root, no shell) -> one target per
# service. All five binaries come from one builder stage, so building every target compiles the
# workspace once. protoc is vendored by the proto crate (protoc-bin-vendored): no system protoc.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# Debian bookworm, as the distroless cc-debian12 runtime: same glibc.
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when the recipe (manifests and lock file) changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json \
        -p admission -p seat-lock -p inventory -p payment -p notifier -p service-runtime
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked \
        -p admission -p seat-lock -p inventory -p payment -p notifier -p service-runtime \
    && mkdir -p /out \
    && cp target/release/admission target/release/admission-audit target/release/seat-lock \
          target/release/inventory target/release/payment target/release/payment-reconcile \
          target/release/notifier target/release/stream-setup /out/

# Runtime base: glibc + libgcc + CA certificates, no shell, no package manager; user 65532.
# Kubernetes runs it with a read-only root filesystem (nothing is written but stderr).
FROM ${RUNTIME_IMAGE} AS runtime
USER 65532:65532
# gRPC (GRPC_ADDR) and Prometheus /metrics (METRICS_ADDR) defaults.
EXPOSE 50051 9090
ENV LOG_FORMAT=json

# Any service by build argument: --target service --build-arg SERVICE=<name>.
FROM runtime AS service
ARG SERVICE=admission
COPY --from=builder /out/${SERVICE} /usr/local/bin/service
ENTRYPOINT ["/usr/local/bin/service"]

# One target per service (the image names in k8s/ match these target names).
FROM runtime AS admission
COPY --from=builder /out/admission /usr/local/bin/admission
# The operator's fairness audit, run in the pod: kubectl exec deploy/admission -- admission-audit ...
COPY --from=builder /out/admission-audit /usr/local/bin/admission-audit
ENTRYPOINT ["/usr/local/bin/admission"]

FROM runtime AS seat-lock
COPY --from=builder /out/seat-lock /usr/local/bin/seat-lock
ENTRYPOINT ["/usr/local/bin/seat-lock"]

FROM runtime AS inventory
COPY --from=builder /out/inventory /usr/local/bin/inventory
ENTRYPOINT ["/usr/local/bin/inventory"]

FROM runtime AS payment
COPY --from=builder /out/payment /usr/local/bin/payment
# The operator's on-demand reconciliation, run in the pod: kubectl exec deploy/payment -- payment-reconcile ...
COPY --from=builder /out/payment-reconcile /usr/local/bin/payment-reconcile
ENTRYPOINT ["/usr/local/bin/payment"]

FROM runtime AS notifier
COPY --from=builder /out/notifier /usr/local/bin/notifier
ENTRYPOINT ["/usr/local/bin/notifier"]

# The Kubernetes Job that creates or updates the JetStream event stream before the services
# start (they refuse to start without it): service-runtime's `stream-setup`.
FROM runtime AS stream-setup
COPY --from=builder /out/stream-setup /usr/local/bin/stream-setup
ENTRYPOINT ["/usr/local/bin/stream-setup"]
