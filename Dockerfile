# The controller's image (what `kubectl imageauto install` runs): the
# release binary on Debian, with the libraries it links (OpenSSL, zlib) and
# the CA roots.
#
#   make build
#   docker build -t REGISTRY/imageauto:TAG . && docker push REGISTRY/imageauto:TAG
#   kubectl imageauto install --image REGISTRY/imageauto:TAG
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY target/release/kubectl-imageauto /usr/local/bin/kubectl-imageauto
COPY LICENSE /usr/share/doc/imageauto/LICENSE
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubectl-imageauto"]
CMD ["serve"]
