#!/usr/bin/env bash
# Offline check of k8s/ and the Dockerfile (see check.py): every overlay rendered by the real
# `kubectl kustomize` and validated; then k8s/observability/ (observability_check.py: promtool
# check and test rules, dashboard queries). Installs what it needs if missing: PyYAML and
# kubernetes-validate (pip), kubectl and prometheus' promtool (apt); exits non-zero on any error.
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

# promtool, from Debian's prometheus package: checks and unit-tests the alerting rules.
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: apt-get install -y prometheus" >&2
    apt-get install -y -q --no-install-recommends prometheus >/dev/null \
        || { echo "cannot install promtool: apt-get install prometheus (Debian's package) and re-run" >&2; exit 1; }
fi
python3 tools/k8s/observability_check.py
exec python3 tools/k8s/check.py "$@"
