# syntax=docker/dockerfile:1
# Tideway gateway image: built from this repository, run as a non-root user.
#   docker build -t tideway .
#   docker run -p 8080:8080 -e SSE_PUBLISHER_API_KEYS=change-me tideway

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tideway \
    && cp target/release/tideway /usr/local/bin/tideway

# Distroless: glibc and CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/tideway /usr/local/bin/tideway
USER nonroot:nonroot
ENV TIDEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
# `tideway probe` asks /healthz itself, so the image needs no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/tideway", "probe"]
# The gateway is PID 1 and drains on SIGTERM (see docs/delivery.md).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tideway"]
