# envd sandbox image: the daemon and its kernels on Debian.
#   docker build -f e2b.Dockerfile -t envd .                           (full: python, bash,
#                                                   javascript/typescript, r, java)
#   docker build -f e2b.Dockerfile --build-arg VARIANT=slim -t envd:slim .   (python, bash)
# Also a base for E2B-style custom templates: FROM it and add packages.
FROM debian:bookworm-slim

ARG VARIANT=full
# Set by packaging/build-image.sh where registries sit behind a TLS proxy:
# the host's CA bundle, mounted in for the build only and never copied.
ARG BUILD_CA_FILE=""

# Which kernels the image promises (tests/image checks each of them answers).
LABEL envd.variant="${VARIANT}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The same install recipe as bare VMs and CI (packaging/install.sh).
COPY . /opt/envd/src
RUN if [ -n "$BUILD_CA_FILE" ]; then export PIP_CERT="$BUILD_CA_FILE" NODE_EXTRA_CA_CERTS="$BUILD_CA_FILE"; fi; \
    /opt/envd/src/packaging/install.sh --prefix /opt/envd --variant "$VARIANT"

ENV PATH="/opt/envd/venv/bin:${PATH}"
WORKDIR /home/user
EXPOSE 49983 49999

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/opt/envd/venv/bin/python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:49983/health', timeout=2)"]

# tini forwards signals and reaps; envd is a child subreaper as well, so
# orphans of sandboxed programs never linger as zombies.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/opt/envd/venv/bin/envd"]
