#!/usr/bin/env bash
# Make `debian:bookworm-slim` available to Podman on a host that reaches no
# container registry: pull it where a registry answers, otherwise bootstrap an
# equivalent minimal Debian from Debian's own packages (mmdebstrap, ~40 s) and
# import it under that name. On a host with a registry nothing else happens.
#
#   packaging/podman/bootstrap-base.sh [IMAGE]     (default debian:bookworm-slim)
set -euo pipefail

image="${1:-debian:bookworm-slim}"
suite="${image#*:}"
suite="${suite%-slim}"

if podman image exists "$image"; then
    exit 0
fi
if podman pull -q "docker.io/library/$image" >/dev/null 2>&1; then
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "bootstrap-base: install mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
echo "bootstrap-base: no registry reachable; building $image from Debian packages" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt inside the image must not keep the host's proxy CA or sources beyond Debian's.
mmdebstrap --quiet --variant=minbase "$suite" "$work/rootfs.tar"
podman import --quiet \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$work/rootfs.tar" "$image" >/dev/null
echo "bootstrap-base: imported $image" >&2
