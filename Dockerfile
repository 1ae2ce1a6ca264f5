# One small, static, non-root image for every vigie role:
#   docker run vigie:0.1.0 backend --color blue
# Build: docker build -t vigie:0.1.0 .

# --- build: a static musl binary (SQLite is compiled in) -------------------
FROM rust:1.95.0-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p vigie \
    && cp target/x86_64-unknown-linux-musl/release/vigie /vigie
# State directories, owned by the runtime user so fresh named volumes
# mounted over them start writable by it.
RUN mkdir -p /rootfs/data /rootfs/var/lib/vigie/router /rootfs/var/lib/vigie/targets /rootfs/var/lib/vigie/secrets /rootfs/etc \
    && echo 'vigie:x:65532:65532:vigie:/data:/sbin/nologin' > /rootfs/etc/passwd \
    && echo 'vigie:x:65532:' > /rootfs/etc/group \
    && chown -R 65532:65532 /rootfs/data /rootfs/var/lib/vigie

# --- runtime: nothing but the binary --------------------------------------
FROM scratch
COPY --from=build /rootfs/ /
COPY --from=build /vigie /usr/local/bin/vigie
USER 65532:65532
WORKDIR /data
ENV VIGIE_DATABASE=/data/vigie.db
# Health checks are set per role in compose.yaml (`vigie healthcheck URL`).
EXPOSE 3000 8080 8081
ENTRYPOINT ["/usr/local/bin/vigie"]
CMD ["--help"]
