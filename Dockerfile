# The `frontier` image: one binary that runs as the coordinator (`serve`, the default command) or
# as a worker (`worker`). CPU by default; the GPU image builds the `cuda` feature on an NVIDIA CUDA
# runtime base:
#
#   docker build -t frontier:cpu .
#   docker build -t frontier:cuda --build-arg FEATURES=cuda \
#       --build-arg RUNTIME_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04 .
#
# Build arguments:
#   RUST_VERSION         the builder's toolchain (the official Rust image on Debian bookworm).
#   FEATURES             cargo features of the `frontier` package: empty (CPU) or `cuda`.
#   RUNTIME_IMAGE        the final image's base. For `cuda`, an NVIDIA CUDA *runtime* image: it ships
#                        libnvrtc, which compiles the GPU kernels when the worker runs (the build needs
#                        no CUDA toolkit; the driver's libcuda comes from the host through the NVIDIA
#                        container toolkit). Its glibc must be at least bookworm's 2.36: Ubuntu 24.04
#                        bases, not 22.04.
#   CUDARC_CUDA_VERSION  the CUDA API the GPU build binds to, e.g. 12080 to match a CUDA 12.8 runtime
#                        base and driver; empty: the newest that burn 0.21's cudarc knows (13.x),
#                        which needs a CUDA 13 runtime base and a driver that supports CUDA 13.
#
# The binary embeds its migrations (sqlx::migrate!), the web UI's templates and static files, so
# the runtime image holds the binary alone, plus curl for health checks and the example specs.

ARG RUST_VERSION=1.95
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG FEATURES=""
ARG CUDARC_CUDA_VERSION=""
WORKDIR /src

# Dependencies first, in their own layer: the manifests, the lockfile and stub sources, so a change
# to Frontier's code rebuilds Frontier's crates only, not burn, sqlx and the rest.
COPY Cargo.toml Cargo.lock ./
COPY search-space/Cargo.toml search-space/
COPY lut/Cargo.toml lut/
COPY scaling-law/Cargo.toml scaling-law/
COPY services/api/Cargo.toml services/api/
COPY services/coordinator/Cargo.toml services/coordinator/
COPY services/worker/Cargo.toml services/worker/
COPY services/frontier/Cargo.toml services/frontier/
COPY testdata/Cargo.toml testdata/
COPY tools/Cargo.toml tools/
COPY deploy/docker/stub-workspace.sh /usr/local/bin/stub-workspace
# cudarc reads CUDARC_CUDA_VERSION when it is set at all, so an empty one is unset.
RUN set -eu; \
    stub-workspace; \
    if [ -z "$CUDARC_CUDA_VERSION" ]; then unset CUDARC_CUDA_VERSION; fi; \
    cargo build --release --locked -p frontier --features "$FEATURES"

COPY . .
# The real sources may carry older timestamps than the stub build's outputs: touch them so cargo
# rebuilds Frontier's own crates.
RUN set -eu; \
    find . -name '*.rs' -not -path './target/*' -exec touch {} +; \
    if [ -z "$CUDARC_CUDA_VERSION" ]; then unset CUDARC_CUDA_VERSION; fi; \
    cargo build --release --locked -p frontier --features "$FEATURES"; \
    install -m 0755 target/release/frontier /usr/local/bin/frontier

FROM ${RUNTIME_IMAGE}
RUN set -eu; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 10001 frontier; \
    useradd --uid 10001 --gid frontier --no-log-init --create-home --home-dir /var/lib/frontier \
        --shell /usr/sbin/nologin frontier; \
    mkdir -p /data /var/cache/frontier; \
    chown frontier:frontier /var/cache/frontier
COPY --from=builder /usr/local/bin/frontier /usr/local/bin/frontier
COPY examples /usr/share/frontier/examples

# In a container the coordinator listens on every interface; workers read corpora under /data
# (a relative `proxy.corpus` in a spec is resolved there) and keep tokenized shards in the cache.
ENV FRONTIER_BIND=0.0.0.0:8080 \
    FRONTIER_DATA_DIR=/data \
    FRONTIER_CACHE_DIR=/var/cache/frontier
USER 10001:10001
WORKDIR /var/lib/frontier
EXPOSE 8080
ENTRYPOINT ["frontier"]
CMD ["serve"]
