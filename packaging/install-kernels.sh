#!/usr/bin/env bash
# Kernels beyond python and bash (which come with the Python package), each
# from the registry that ships it:
#   javascript/typescript  envd's Node.js kernel (packaging/js-kernel: ijavascript's
#                          jp-kernel + nel from npm, pinned by its package-lock.json)
#   deno                   Deno's Jupyter kernel (npm package `deno`)
#   r                      IRkernel (Debian: r-cran-irkernel)
#   java                   JJava (PyPI: jjava) on a Debian JRE
# Idempotent. Needs root (apt). Uses the machine's Node.js and npm, or Debian's
# (installed when there is no npm).
#
#   packaging/install-kernels.sh VENV_DIR
set -euo pipefail

venv="$(realpath -m "${1:?usage: install-kernels.sh VENV_DIR}")"
DENO_VERSION=2.9.6
JJAVA_VERSION=1.0a8
SPECS=/usr/local/share/jupyter/kernels
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# zeromq@5.3.1 (the JS kernel's ZMQ binding) ships a prebuilt addon for this
# Node ABI only: 108 = Node 18, Debian 12's nodejs. Any other Node compiles it.
ZEROMQ_PREBUILT_ABI=108
# npm's download cache for this script only, removed at exit: in an image it
# would be ~100 MB of tarballs nobody uses again.
npm_cache="$(mktemp -d)"
trap 'rm -rf "$npm_cache"' EXIT
export npm_config_cache="$npm_cache"

install_debian_packages() {
    export DEBIAN_FRONTEND=noninteractive
    local packages=(r-cran-irkernel default-jre-headless)
    command -v npm >/dev/null || packages+=(nodejs npm)
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${packages[@]}"
    if [ "$(node -p process.versions.modules)" != "$ZEROMQ_PREBUILT_ABI" ]; then
        # zeromq is then built against Debian's libzmq (nothing is downloaded)
        apt-get install -y -q --no-install-recommends libzmq3-dev g++ make python3
    fi
}

install_js_kernel() {
    # JavaScript and TypeScript: one spec, `javascript` (a context per language).
    local dir="$venv/share/envd-js-kernel" stamp
    mkdir -p "$dir"
    cp "$src/packaging/js-kernel/"{package.json,package-lock.json,kernel.js,child-preload.js,transpile.js} "$dir/"
    # npm ci again only when the lockfile or the Node ABI changed.
    stamp="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1) abi$(node -p process.versions.modules)"
    if [ "$(cat "$dir/node_modules/.envd-stamp" 2>/dev/null)" != "$stamp" ]; then
        (
            cd "$dir"
            if [ "$(node -p process.versions.modules)" != "$ZEROMQ_PREBUILT_ABI" ]; then
                export npm_config_zmq_external=true
                # node-gyp takes the headers of the running Node when it has them
                # (NodeSource and Debian's libnode-dev install them), else downloads them.
                local node_prefix
                node_prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
                [ -f "$node_prefix/include/node/node_version.h" ] && export npm_config_nodedir="$node_prefix"
            fi
            npm ci --omit=dev --no-audit --no-fund
        )
        echo "$stamp" > "$dir/node_modules/.envd-stamp"
    fi
    mkdir -p "$SPECS/javascript"
    cat > "$SPECS/javascript/kernel.json" <<JSON
{
  "argv": ["$(command -v node)", "$dir/kernel.js", "--hide-undefined", "{connection_file}"],
  "display_name": "JavaScript (Node.js)",
  "language": "javascript",
  "interrupt_mode": "signal"
}
JSON
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
install_js_kernel
install_deno
install_jjava
