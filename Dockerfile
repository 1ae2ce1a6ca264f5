# One small, static, non-root image for every vigie role:
#   docker run vigie:0.1.0 backend --color blue
# Build: docker compose build, or DOCKER_BUILDKIT=1 docker build -t vigie:0.1.0 .
# (amd64 and arm64 alike). BuildKit is needed: it sets TARGETARCH, skips the
# stage VIGIE_BINARY does not select, and makes WORKDIRs owned by USER; the
# legacy builder does none of these.
#
# The binary comes from one of two stages, chosen by VIGIE_BINARY:
#   build     (default) compiled here, a static musl binary for the
#             platform being built (TARGETARCH picks the Rust target);
#   prebuilt  a static Linux binary already at target/image/vigie, e.g.
#             RUSTFLAGS='-C target-feature=+crt-static' cargo build --release
#             --target x86_64-unknown-linux-gnu -p vigie (what the compose
#             tests do: no Rust image is pulled).
# The runtime stage below is the same for both. A second image, the lab
# service, is the target lab-service (see its stage).
#
# VIGIE_VERSION (build argument) is the release string the binary reports
# (vigie_build_info, every log line, the router's /status), so two images of
# the same code differ: docker build --build-arg VIGIE_VERSION=0.2.0 -t
# vigie:0.2.0 . — empty means the crate version. 1 to 64 characters of
# A-Z a-z 0-9 . - _ + (the build fails on others). The prebuilt stage takes
# the version its binary was compiled with (VIGIE_VERSION in the environment
# of that cargo build).
ARG VIGIE_BINARY=build

# --- toolchain: Rust with the musl target of the platform being built ------
FROM rust:1.95.0-slim-bookworm AS toolchain
ARG TARGETARCH
# hadolint ignore=DL3008
RUN case "$TARGETARCH" in \
        amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
        arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
        "") echo "vigie: TARGETARCH is empty: build with BuildKit (docker compose build, or DOCKER_BUILDKIT=1 docker build)" >&2; exit 1 ;; \
        *) echo "vigie: no Rust target known for TARGETARCH=$TARGETARCH (amd64, arm64)" >&2; exit 1 ;; \
    esac \
    && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates

# --- build: a static musl binary (SQLite is compiled in) -------------------
FROM toolchain AS build
# Read by the compiler (option_env!) from the RUN's environment.
ARG VIGIE_VERSION=
RUN target="$(cat /rust-target)" \
    && cargo build --release --locked --target "$target" -p vigie \
    && cp "target/$target/release/vigie" /vigie

# --- prebuilt: the binary from the build context ----------------------------
FROM scratch AS prebuilt
COPY target/image/vigie /vigie

FROM ${VIGIE_BINARY} AS binary

# --- lab-service: the stand-in for a NestJS backend (crates/lab) -----------
# An image the stack can run as blue and green instead of vigie's backend
# (docs/stack.md, "Watch your own service"); built only when asked for:
#   DOCKER_BUILDKIT=1 docker build --target lab-service -t vigie-lab:0.1.0 .
FROM toolchain AS lab-build
RUN target="$(cat /rust-target)" \
    && cargo build --release --locked --target "$target" -p lab-service \
    && cp "target/$target/release/lab-service" /lab-service

FROM scratch AS lab-service
COPY image/etc/passwd image/etc/group /etc/
COPY --from=lab-build /lab-service /usr/local/bin/lab-service
USER 65532:65532
ENV PORT=3000
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/lab-service"]
CMD ["serve"]

# --- runtime: nothing but the binary (the default target: keep it last) ---
FROM scratch
ARG VIGIE_VERSION=
LABEL org.opencontainers.image.title="vigie" \
      org.opencontainers.image.version="${VIGIE_VERSION}"
COPY image/etc/passwd image/etc/group /etc/
COPY --from=binary /vigie /usr/local/bin/vigie
# State directories. BuildKit creates a WORKDIR owned by the current USER:
# the parents as root, each state directory as the runtime user, so fresh
# named volumes mounted over them start writable by it.
WORKDIR /var/lib/vigie
USER 65532:65532
WORKDIR /var/lib/vigie/router
WORKDIR /var/lib/vigie/targets
WORKDIR /var/lib/vigie/secrets
WORKDIR /data
ENV VIGIE_DATABASE=/data/vigie.db
# Health checks are set per role in compose.yaml (`vigie healthcheck URL`).
EXPOSE 3000 8080 8081
ENTRYPOINT ["/usr/local/bin/vigie"]
CMD ["--help"]
