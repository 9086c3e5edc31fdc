#!/usr/bin/env bash
# The one install recipe for envd: used by e2b.Dockerfile, bare VMs and CI alike.
# Idempotent: safe to re-run (it upgrades the daemon in place).
# Kernels: python and bash always; javascript/typescript, r and java with the
# system step (packaging/install-kernels.sh).
#
#   packaging/install.sh [--prefix DIR] [--no-system] [--variant full|slim]
#
#   --prefix DIR   where the daemon's virtual environment goes (default /opt/envd)
#   --no-system    skip system packages, the `user` account and the systemd unit
#                  (for installing into a scratch prefix as an ordinary user)
#   --variant V    full (default): every kernel; slim: python and bash only
#                  (no Node.js, Deno, R or Java)
set -euo pipefail

prefix=/opt/envd
system=1
slim=0
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --no-system) system=0; shift ;;
        --variant)
            case "$2" in
                full) slim=0 ;;
                slim) slim=1 ;;
                *) echo "install.sh: --variant is full or slim, not $2" >&2; exit 2 ;;
            esac
            shift 2 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

install_system_packages() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    local packages=(python3 python3-venv python3-dev gcc ca-certificates tini sudo procps git curl)
    [ "$slim" = 1 ] || packages+=(nodejs npm)
    apt-get install -y -q --no-install-recommends "${packages[@]}"
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

link_interpreter() {
    # `python`, `python3` and `pip` on every PATH (login shells included) are
    # the kernel's interpreter, as in E2B templates: `pip install` in a
    # terminal or `!pip install` in a notebook lands where the kernel imports.
    # A symlink to a venv's python is not that venv (pyvenv.cfg is looked up
    # beside the name it was run by), hence small wrappers for the interpreter.
    local tool
    for tool in python python3; do
        printf '#!/bin/sh\nexec %s "$@"\n' "$prefix/venv/bin/python" > "/usr/local/bin/$tool"
        chmod 0755 "/usr/local/bin/$tool"
    done
    for tool in pip pip3; do
        ln -sfn "$prefix/venv/bin/$tool" "/usr/local/bin/$tool"
    done
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
    [ "$slim" = 1 ] || install_kernels
    link_interpreter
    install_service_unit
fi
echo "envd installed: $prefix/venv/bin/envd ($("$prefix/venv/bin/envd" --version))"
