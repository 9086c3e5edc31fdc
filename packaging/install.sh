#!/usr/bin/env bash
# The one install recipe for envd: used by e2b.Dockerfile, bare VMs and CI alike.
# Idempotent: safe to re-run (it upgrades the daemon in place).
# Kernels: python and bash always; javascript/typescript, r and java with the
# system step (packaging/install-kernels.sh).
#
#   packaging/install.sh [--prefix DIR] [--no-system]
#
#   --prefix DIR   where the daemon's virtual environment goes (default /opt/envd)
#   --no-system    skip system packages, the `user` account and the systemd unit
#                  (for installing into a scratch prefix as an ordinary user)
set -euo pipefail

prefix=/opt/envd
system=1
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --no-system) system=0; shift ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

install_system_packages() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        python3 python3-venv python3-dev gcc ca-certificates tini sudo procps git curl \
        nodejs npm
    rm -rf /var/lib/apt/lists/*
}

create_sandbox_user() {
    # E2B templates run code as `user` (home /home/user) with umask 022.
    if ! id user >/dev/null 2>&1; then
        useradd --create-home --home-dir /home/user --shell /bin/bash user
    fi
    echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/user
    chmod 0440 /etc/sudoers.d/user
    grep -qs '^umask 022' /etc/profile.d/envd-umask.sh 2>/dev/null \
        || echo 'umask 022' > /etc/profile.d/envd-umask.sh
}

install_daemon() {
    # The daemon and the Python kernel share one virtual environment, so the
    # kernel sees the data-science packages the formatters expect.
    [ -x "$prefix/venv/bin/python" ] || python3 -m venv "$prefix/venv"
    "$prefix/venv/bin/pip" install -q --upgrade pip
    "$prefix/venv/bin/pip" install -q --upgrade "$src[kernels]"
}

install_kernels() {
    # python and bash come with the package; the others need root (apt).
    "$src/packaging/install-kernels.sh" "$prefix/venv"
}

install_service_unit() {
    if [ -d /etc/systemd/system ]; then
        sed "s#@PREFIX@#$prefix#g" "$src/packaging/envd.service" > /etc/systemd/system/envd.service
    fi
}

if [ "$system" = 1 ]; then
    install_system_packages
    create_sandbox_user
fi
install_daemon
if [ "$system" = 1 ]; then
    install_kernels
    install_service_unit
fi
echo "envd installed: $prefix/venv/bin/envd ($("$prefix/venv/bin/envd" --version))"
