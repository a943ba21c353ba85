# syntax=docker/dockerfile:1
# marketd: a static binary on a minimal image, run as a non-root user.
#   docker build -t marketd .
#   docker run --rm -p 8080:8080 marketd                       # embedded broker + simulator
#   docker run --rm -p 8080:8080 -e MARKETD_BROKERS=kafka:9092 marketd
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/marketd ./cmd/marketd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/marketd /marketd
USER nonroot:nonroot
# With no MARKETD_BROKERS the embedded broker listens on 127.0.0.1:9092
# inside the container, for the demo; production sets MARKETD_BROKERS.
ENV MARKETD_LISTEN=:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/marketd", "health", "-url", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/marketd"]
