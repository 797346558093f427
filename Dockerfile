# Cabildo gateway image. The same binary runs the embedded default (in-process NATS and
# cache, data in /data) or joins external NATS and Redis with --nats-url / --redis-url.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git stays out of the context (.dockerignore), so Go cannot stamp the revision: pass it,
# e.g. --build-arg VERSION=$(git describe --always --dirty), for `cabildo version`.
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.buildVersion=${VERSION}" -o /out/cabildo ./cmd/cabildo && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cabildo /cabildo
# The data directory must belong to the image's nonroot user (65532), or the embedded
# log cannot be written.
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME /data
EXPOSE 8080
# serve binds loopback by default; in a container the port must be open to the network,
# whatever command line replaces CMD.
ENV CABILDO_ADDR=:8080
ENTRYPOINT ["/cabildo"]
CMD ["serve", "--addr", ":8080", "--data-dir", "/data"]
