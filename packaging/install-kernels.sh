#!/usr/bin/env bash
# Kernels beyond python and bash (which come with the Python package), each
# from the registry that ships it:
#   javascript/typescript  Deno's Jupyter kernel (npm package `deno`)
#   r                      IRkernel (Debian: r-cran-irkernel)
#   java                   JJava (PyPI: jjava) on a Debian JRE
# Idempotent. Needs root (apt) and npm.
#
#   packaging/install-kernels.sh VENV_DIR
set -euo pipefail

venv="${1:?usage: install-kernels.sh VENV_DIR}"
DENO_VERSION=2.9.6
JJAVA_VERSION=1.0a8
SPECS=/usr/local/share/jupyter/kernels

install_debian_packages() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends r-cran-irkernel default-jre-headless
}

install_deno() {
    if ! deno --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; then
        npm install -g --no-audit --no-fund "deno@$DENO_VERSION"
    fi
    # The spec `deno jupyter --install` would write, but system-wide.
    mkdir -p "$SPECS/deno"
    cat > "$SPECS/deno/kernel.json" <<JSON
{
  "argv": ["$(command -v deno)", "jupyter", "--kernel", "--conn", "{connection_file}"],
  "display_name": "Deno",
  "language": "typescript"
}
JSON
}

install_jjava() {
    "$venv/bin/pip" install -q "jjava==$JJAVA_VERSION"
}

install_debian_packages
install_deno
install_jjava
