#!/usr/bin/env bash
# Deploys the ticketing mesh to minikube in one command:
# start minikube if needed, build the images (tagged by the code), load them, apply k8s/overlays/minikube, wait
# for the rollout, print how to drive it (the load balancer is a NodePort: `minikube service`).
#   tools/deploy/minikube.sh             (env: PROFILE=minikube, TAG=dev)
set -euo pipefail
source "$(dirname "$0")/common.sh"
PROFILE="${PROFILE:-minikube}"
need docker minikube kubectl

if ! minikube -p "$PROFILE" status >/dev/null 2>&1; then
    echo "==> minikube start -p $PROFILE"
    minikube start -p "$PROFILE" --cpus=4 --memory=6g --kubernetes-version=stable
    # CPU metrics for the HorizontalPodAutoscalers.
    minikube -p "$PROFILE" addons enable metrics-server
fi
kubectl config use-context "$PROFILE" >/dev/null

build_images
for image in "${IMAGES[@]}"; do
    echo "==> minikube image load ticketing/$image:$TAG"
    minikube -p "$PROFILE" image load "ticketing/$image:$TAG"
done

apply_overlay minikube
install_token_keys
wait_for_rollout
url="$(minikube -p "$PROFILE" service lb -n "$NAMESPACE" --url | head -n1)"
print_usage "${url#http://}"
