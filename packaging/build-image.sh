#!/usr/bin/env bash
# Build the sandbox image (e2b.Dockerfile) with Podman or Docker.
#
#   packaging/build-image.sh [--variant full|slim] [--tag TAG] [--engine podman|docker] [--no-cache]
#
# Plain `docker build -f e2b.Dockerfile -t envd .` builds the same image; this
# script adds what a locked-down host needs:
#   - with Podman, where `debian:bookworm-slim` cannot be pulled, it is
#     bootstrapped from Debian packages (packaging/podman/bootstrap-base.sh);
#   - where registries sit behind a TLS-intercepting proxy, the host's CA
#     bundle and pip configuration are mounted into the build read-only
#     (Podman), never baked into the image.
# On hosts like the project's CI machines, point Podman at the settings they
# need first: export CONTAINERS_CONF="$PWD/packaging/podman/containers.conf".
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
variant=full
tag=""
engine="${ENVD_ENGINE:-}"
extra=()

while [ $# -gt 0 ]; do
    case "$1" in
        --variant) variant="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --engine) engine="$2"; shift 2 ;;
        --no-cache) extra+=(--no-cache); shift ;;
        *) echo "build-image.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
case "$variant" in
    full) tag="${tag:-envd:latest}" ;;
    slim) tag="${tag:-envd:slim}" ;;
    *) echo "build-image.sh: --variant is full or slim, not $variant" >&2; exit 2 ;;
esac
if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then engine=podman; else engine=docker; fi
fi

args=(build -f "$src/e2b.Dockerfile" --build-arg "VARIANT=$variant" -t "$tag" "${extra[@]}")
if [ "$engine" = podman ]; then
    "$src/packaging/podman/bootstrap-base.sh" debian:bookworm-slim
    ca=/etc/ssl/certs/ca-certificates.crt
    if [ -f "$ca" ]; then
        # Beside, not over, the image's own bundle, which apt rewrites.
        args+=(-v "$ca:/run/build-ca/ca.crt:ro" --build-arg BUILD_CA_FILE=/run/build-ca/ca.crt)
    fi
    [ -f /etc/pip.conf ] && args+=(-v /etc/pip.conf:/etc/pip.conf:ro)
    # Docker's image format: OCI images drop HEALTHCHECK and SHELL.
    args+=(--network host --format docker)
fi
"$engine" "${args[@]}" "$src"
