# Shared by kind.sh and minikube.sh (sourced, not run).
# The five services: image ticketing/<name>:<tag> built from the Dockerfile target <name>.
SERVICES=(admission seat-lock inventory payment notifier)
# Every image of ours: the services and the stream-setup Job.
IMAGES=("${SERVICES[@]}" stream-setup)
NAMESPACE=ticketing
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# The images' tag follows the code: the commit, plus a hash of the uncommitted changes (diff
# and untracked files) when there are any. New code gives new tags, so `kubectl apply` changes
# the pod templates and the Deployments roll; the same code gives the same tag and nothing
# rolls. TAG=... overrides it.
code_tag() {
    local tag
    tag="$(git -C "$ROOT" rev-parse --short=12 HEAD)"
    if [ -n "$(git -C "$ROOT" status --porcelain)" ]; then
        tag="$tag-$({ git -C "$ROOT" diff HEAD; git -C "$ROOT" ls-files -z --others --exclude-standard \
            | (cd "$ROOT" && xargs -0 -r sha256sum); } | sha256sum | cut -c1-10)"
    fi
    echo "$tag"
}
TAG="${TAG:-$(code_tag)}"

# Applies k8s/overlays/$1 with every image of ours at $TAG: a throwaway kustomization on top of
# the overlay sets the tags (what `kustomize edit set image` would write), so the committed
# files keep their placeholder tag.
apply_overlay() {
    local overlay="$1" dir
    dir="$(mktemp -d)"
    {
        echo "apiVersion: kustomize.config.k8s.io/v1beta1"
        echo "kind: Kustomization"
        echo "resources:"
        echo "  - $(realpath --relative-to="$dir" "$ROOT/k8s/overlays/$overlay")"
        echo "images:"
        for image in "${IMAGES[@]}"; do
            printf '  - name: ticketing/%s\n    newTag: "%s"\n' "$image" "$TAG"
        done
    } > "$dir/kustomization.yaml"
    # A Job's pod template cannot change: the finished stream-setup Job of an earlier tag goes,
    # and this apply runs it again with the new image (it is idempotent).
    kubectl -n "$NAMESPACE" delete job stream-setup --ignore-not-found >/dev/null || true
    echo "==> kubectl apply -k k8s/overlays/$overlay (images ticketing/*:$TAG)"
    kubectl apply -k "$dir"
    rm -rf "$dir"
}

need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || { echo "error: '$tool' is required (see README, Deployment)" >&2; exit 1; }
    done
}

build_images() {
    export DOCKER_BUILDKIT=1
    for image in "${IMAGES[@]}"; do
        echo "==> docker build --target $image -t ticketing/$image:$TAG"
        docker build --target "$image" -t "ticketing/$image:$TAG" "$ROOT"
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
