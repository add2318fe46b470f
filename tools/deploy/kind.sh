#!/usr/bin/env bash
# Deploys the ticketing mesh to a local kind cluster in one command:
# build the images (five services, stream-setup) tagged by the code, create the cluster if needed (host port 8080 -> lb), load the images,
# apply k8s/overlays/kind, wait for the rollout, print how to drive it.
#   tools/deploy/kind.sh                 (env: CLUSTER=ticketing, TAG=<commit>[-<hash of changes>], KIND_NODE_IMAGE=...)
set -euo pipefail
source "$(dirname "$0")/common.sh"
CLUSTER="${CLUSTER:-ticketing}"
need docker kind kubectl

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "==> kind create cluster --name $CLUSTER"
    kind create cluster --name "$CLUSTER" --config "$ROOT/k8s/overlays/kind/kind-config.yaml" \
        ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

build_images
for image in "${IMAGES[@]}"; do
    echo "==> kind load docker-image ticketing/$image:$TAG"
    kind load docker-image "ticketing/$image:$TAG" --name "$CLUSTER"
done

apply_overlay kind
install_token_keys
wait_for_rollout
print_usage "localhost:8080"
