# dbn-serve: multi-stage build. The dependency layer is cached apart from the source, the
# runtime image is Debian slim with one binary, running as a non-root user.
# Verified on a machine without a Docker engine by docker/verify.sh (podman); see the README.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# A lean binary for the image: no debug info, symbols stripped.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/engine.rs && echo 'fn main() {}' > benches/generation.rs \
 && cargo build --release --locked --bin dbn-serve \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin dbn-serve \
 && cp target/release/dbn-serve /usr/local/bin/dbn-serve

FROM docker.io/library/debian:bookworm-slim
# CA certificates: the S3 client verifies https endpoints against the system's store.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/dbn-serve --create-home dbn \
 && mkdir -p /mnist
COPY --from=build /usr/local/bin/dbn-serve /usr/local/bin/dbn-serve
USER 10001:10001
ENV DBN_ADDR=0.0.0.0:8080 \
    DBN_DATA_DIR=/var/lib/dbn-serve \
    DBN_MNIST_DIR=/mnist \
    DBN_LOG_FORMAT=json
# Models, checkpoints, uploaded datasets and the job database.
VOLUME /var/lib/dbn-serve
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/dbn-serve", "healthcheck"]
# Stop with SIGTERM: running jobs stop at their last checkpoint and resume at the next start.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/dbn-serve"]
CMD ["serve"]
