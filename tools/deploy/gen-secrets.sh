#!/usr/bin/env bash
# Writes k8s/overlays/production/webhook-key.env (notifier's webhook sealing key, once) and
# secrets.env (admission's Ed25519 pass-signing key and the shuffle
# key; git-ignored, the Secret only admission mounts) and pass-verify-keys.env (the signing key's
# public half, the ConfigMap seat-lock mounts). Keeps existing files unless --force (new keys
# only) or --rotate (a new signing key first, the current ones kept after it, same shuffle key).
#   tools/deploy/gen-secrets.sh [--force|--rotate]
# Rotation: apply the new pass-verify-keys.env to seat-lock before admission signs with the new
# key; drop the old key from both files once every pass it signed has expired.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../.." && pwd)/k8s/overlays/production"
secrets="$dir/secrets.env"
verify="$dir/pass-verify-keys.env"
mode="${1:-}"
if [[ -e "$secrets" && "$mode" != "--force" && "$mode" != "--rotate" ]]; then
    echo "$secrets exists; --rotate adds a new key first, --force replaces everything" >&2
    exit 1
fi
key_id="k$(date -u +%Y%m%d%H%M%S)"
umask 077
pem="$(mktemp)"
trap 'rm -f "$pem"' EXIT
openssl genpkey -algorithm ed25519 -out "$pem" 2>/dev/null
# The raw 32-byte seed and public key are the last 32 bytes of their DER forms.
b64url() { tail -c 32 | base64 | tr '+/' '-_' | tr -d '=\n'; }
seed="$(openssl pkey -in "$pem" -outform DER | b64url)"
public="$(openssl pkey -in "$pem" -pubout -outform DER | b64url)"
signing="$key_id:$seed"
verifying="$key_id:$public"
shuffle="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
if [[ "$mode" == "--rotate" && -e "$secrets" ]]; then
    old_signing="$(sed -n 's/^PASS_SIGNING_KEYS=//p' "$secrets")"
    old_verifying="$(sed -n 's/^PASS_VERIFY_KEYS=//p' "$verify" 2>/dev/null || true)"
    shuffle="$(sed -n 's/^SHUFFLE_KEY=//p' "$secrets")"
    signing="$signing${old_signing:+,$old_signing}"
    verifying="$verifying${old_verifying:+,$old_verifying}"
fi
printf 'PASS_SIGNING_KEYS=%s\nSHUFFLE_KEY=%s\n' "$signing" "$shuffle" > "$secrets"
# notifier's webhook sealing key: written once; rotating it is by hand (README, Security model).
webhook="$dir/webhook-key.env"
if [[ ! -e "$webhook" || "$mode" == "--force" ]]; then
    printf 'WEBHOOK_SECRET_KEY=w%s:%s\n' "$(date -u +%Y%m%d)" "$(openssl rand -base64 32)" > "$webhook"
fi
umask 022
printf 'PASS_VERIFY_KEYS=%s\n' "$verifying" > "$verify"
echo "wrote $secrets and $verify (new key id $key_id)"
