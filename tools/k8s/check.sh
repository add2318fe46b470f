#!/usr/bin/env bash
# Offline check of k8s/ and the Dockerfile (see check.py). Installs its two Python packages
# quietly if they are missing; exits non-zero on any error.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pyyaml
python3 -c 'import kubernetes_validate' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
exec python3 tools/k8s/check.py "$@"
