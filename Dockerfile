# The operator image the Helm chart runs. Not built by the tests (they run the
# binary directly); build with `docker build -t <registry>/reprise:<version> .`
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/reprise /reprise
USER 65532:65532
ENTRYPOINT ["/reprise"]
