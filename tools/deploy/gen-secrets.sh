#!/usr/bin/env bash
# Writes k8s/overlays/production/secrets.env with a fresh pass-signing key and shuffle key (git-ignored; the
# production overlay's secretGenerator reads it). Keeps an existing file unless --force.
#   tools/deploy/gen-secrets.sh [--force]
set -euo pipefail
out="$(cd "$(dirname "$0")/../.." && pwd)/k8s/overlays/production/secrets.env"
if [[ -e "$out" && "${1:-}" != "--force" ]]; then
    echo "$out exists; --force replaces it (rotation: put the new key first, keep the old one)" >&2
    exit 1
fi
key_id="k$(date -u +%Y%m%d)"
secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
umask 077
shuffle="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
printf 'PASS_KEYS=%s:%s\nSHUFFLE_KEY=%s\n' "$key_id" "$secret" "$shuffle" > "$out"
echo "wrote $out (key id $key_id)"
