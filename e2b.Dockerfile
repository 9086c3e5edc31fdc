# envd sandbox image: the daemon plus Python and bash kernels.
# Build: docker build -f e2b.Dockerfile -t envd .
# Also a base for E2B-style custom templates: FROM it and add packages.
FROM debian:bookworm-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The same install recipe as bare VMs and CI (packaging/install.sh).
COPY . /opt/envd/src
RUN /opt/envd/src/packaging/install.sh --prefix /opt/envd

ENV PATH="/opt/envd/venv/bin:${PATH}"
WORKDIR /home/user
EXPOSE 49983 49999

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/opt/envd/venv/bin/python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:49983/health', timeout=2)"]

# tini forwards signals and reaps; envd is a child subreaper as well, so
# orphans of sandboxed programs never linger as zombies.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/opt/envd/venv/bin/envd"]
