#!/usr/bin/env bash
# Offline check of k8s/ and the Dockerfile (see check.py): every overlay rendered by the real
# `kubectl kustomize` and validated. Installs what it needs if missing: PyYAML and
# kubernetes-validate (pip), kubectl (apt); exits non-zero on any error.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pyyaml
python3 -c 'import kubernetes_validate' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate

# kubectl with its built-in kustomize (v4 or newer: `labels`, `patches` with targets).
if ! command -v kubectl >/dev/null 2>&1; then
    if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        echo "kubectl not found: apt-get install -y kubectl" >&2
        apt-get install -y -q kubectl >/dev/null
    else
        echo "kubectl not found, and no apt source offers the kubectl package." >&2
        echo "Install kubectl 1.21 or newer (its kustomize renders the overlays), e.g. from the" >&2
        echo "Kubernetes apt repository: apt-get install kubectl. Debian's own kubernetes-client" >&2
        echo "(1.20, kustomize v2) cannot render them." >&2
        exit 1
    fi
fi
exec python3 tools/k8s/check.py "$@"
