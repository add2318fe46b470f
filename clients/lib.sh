# Sourced by clients/generate and clients/check: the Python virtual environments and the
# TypeScript packages the clients need, installed once and reused.
#
# - A venv per requirements file, under $TICKETING_CLIENTS_CACHE (default
#   ${XDG_CACHE_HOME:-~/.cache}/ticketing-clients), named by the file's SHA-256: a changed pin
#   gets a fresh venv, an unchanged one is reused. A venv counts only once its install finished
#   (the marker file `installed`), so an interrupted install is redone.
# - clients/typescript/node_modules from package-lock.json (`npm ci`), redone when the lock
#   changed since the last install (its SHA-256 is kept in node_modules).
# Both installs take a lock (flock), so tests that run at once do not install over each other.

CLIENTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLIENTS_CACHE="${TICKETING_CLIENTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ticketing-clients}"

# Fails with what to install when a program is missing.
clients_require() {
    local program="$1" install="$2"
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "$program not found: $install" >&2
        return 1
    fi
}

# Prints the path of a venv with the packages of requirements file $1 installed.
clients_venv() {
    local requirements="$1"
    clients_require python3 "apt-get install python3 python3-venv" || return 1
    mkdir -p "$CLIENTS_CACHE" || return 1
    local hash
    hash="$(cat "$requirements" "$(dirname "$requirements")/requirements.txt" | sha256sum | cut -c1-16)"
    local venv="$CLIENTS_CACHE/venv-$hash"
    (
        flock 9
        if [ ! -e "$venv/installed" ]; then
            rm -rf "$venv"
            python3 -m venv "$venv" >&2 \
                || { echo "python3 cannot make a venv: apt-get install python3-venv" >&2; exit 1; }
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
                -r "$requirements" >&2 || exit 1
            touch "$venv/installed"
        fi
    ) 9>"$CLIENTS_CACHE/venv.lock" || return 1
    echo "$venv"
}

# Makes clients/typescript/node_modules match package-lock.json.
clients_node_modules() {
    clients_require node "apt-get install nodejs (20 or newer)" || return 1
    clients_require npm "apt-get install npm" || return 1
    local dir="$CLIENTS_DIR/typescript"
    local hash
    hash="$(sha256sum <"$dir/package-lock.json" | cut -c1-64)"
    mkdir -p "$CLIENTS_CACHE" || return 1
    (
        flock 9
        if [ "$(cat "$dir/node_modules/.lock-sha256" 2>/dev/null)" != "$hash" ]; then
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) || exit 1
            echo "$hash" >"$dir/node_modules/.lock-sha256"
        fi
    ) 9>"$CLIENTS_CACHE/npm.lock"
}
