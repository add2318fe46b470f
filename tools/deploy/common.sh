# Shared by kind.sh and minikube.sh (sourced, not run).
# The five services: image ticketing/<name>:<tag> built from the Dockerfile target <name>.
SERVICES=(admission seat-lock inventory payment notifier)
TAG="${TAG:-dev}"
NAMESPACE=ticketing
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || { echo "error: '$tool' is required (see README, Deployment)" >&2; exit 1; }
    done
}

build_images() {
    export DOCKER_BUILDKIT=1
    for service in "${SERVICES[@]}"; do
        echo "==> docker build --target $service -t ticketing/$service:$TAG"
        docker build --target "$service" -t "ticketing/$service:$TAG" "$ROOT"
    done
}

# Installs the local stack's token keys (.stack/auth/jwks.json, made on first use) as the
# cluster's ConfigMap ticketing-auth-jwks, so `stack token --user U [--admin]` mints tokens the
# cluster accepts. The services re-read it within a minute (kubelet sync plus their 30 s reload).
install_token_keys() {
    echo "==> ticketing-auth-jwks from the local stack's identity (.stack/auth/jwks.json)"
    (cd "$ROOT" && cargo run -q --bin stack -- token --user deploy-probe >/dev/null)
    kubectl -n "$NAMESPACE" create configmap ticketing-auth-jwks \
        --from-file=jwks.json="$ROOT/.stack/auth/jwks.json" --dry-run=client -o yaml | kubectl apply -f -
}

wait_for_rollout() {
    echo "==> waiting for the backing services and the database init Job"
    kubectl -n "$NAMESPACE" rollout status statefulset/postgres --timeout=300s
    kubectl -n "$NAMESPACE" rollout status statefulset/redis --timeout=300s
    kubectl -n "$NAMESPACE" rollout status statefulset/nats --timeout=300s
    kubectl -n "$NAMESPACE" wait --for=condition=complete job/db-init --timeout=300s
    echo "==> waiting for the services and the load balancer"
    for deployment in "${SERVICES[@]}" lb; do
        kubectl -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout=300s
    done
}

print_usage() {
    local lb="$1"
    cat <<USAGE

The mesh is up. The one entry point (HAProxy, routes by gRPC path): $lb

  # every service answers reflection and grpc.health.v1 through it
  grpcurl -plaintext $lb list
  grpcurl -plaintext $lb grpc.health.v1.Health/Check

  # load with ghz (reflection, no .proto files needed), e.g. the catalogue read path:
  ghz --insecure --call ticketing.v1.InventoryService/ListEvents -d '{}' \\
      --concurrency 50 --total 20000 $lb
  # user-facing calls need a token the cluster trusts (the local stack's identity, installed
  # by this script): one token per joining user, applied round robin by ghz
  cargo run -q --bin stack -- token --users 10000 --out tokens.json
  ghz --insecure --call ticketing.v1.AdmissionService/Join --metadata-file tokens.json \\
      -d '{"event_id":"<event id>"}' --total 10000 $lb

  # the flash-sale simulator of the local stack drives the same gRPC API; point it at $lb
  # (and at Postgres for its ground-truth checks: kubectl -n $NAMESPACE port-forward svc/postgres 5432)

  kubectl -n $NAMESPACE get pods,hpa        # replicas and autoscaling
  kubectl -n $NAMESPACE logs deploy/payment # JSON logs
USAGE
}
