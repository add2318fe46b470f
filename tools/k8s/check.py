#!/usr/bin/env python3
"""Offline check of the Kubernetes deployment (k8s/) and the Dockerfile. Needs PyYAML,
kubernetes-validate and kubectl (tools/k8s/check.sh installs them). Exits 1 on any error.

The base and every overlay are rendered by the real `kubectl kustomize` (kubectl's own
kustomize: a patch or an images/replicas entry that targets nothing, a missing file or an
unknown field fails the render), and the rendered objects are what is checked:
  1. every object validates against the bundled Kubernetes 1.30 schemas, strictly (custom
     resources such as CloudNativePG's Cluster: a warning);
  2. every service Deployment's container ports and probe ports match the services' configuration
     defaults (read from service-runtime/src/config.rs: gRPC 50051, metrics 9090), with resource
     requests/limits, HTTP probes on the health port (HEALTH_ADDR), a preStop, a termination
     grace longer than preStop + drain, Prometheus annotations, a Service, a headless Service, a
     PodDisruptionBudget and an HPA; no Deployment that an HPA scales sets `replicas`;
  3. every image of ours (ticketing/<name>) is a build target of the Dockerfile; others are pinned;
  4. every Redis runs with a maxmemory below its container's memory limit and the noeviction policy;
  5. NetworkPolicies: a default deny of ingress and egress for every pod, DNS allowed, and each
     workload (services, load balancer, Jobs, backing services) has a policy of its own;
  6. the HAProxy config (k8s/base/haproxy/haproxy.cfg) passes `haproxy -c` with the local stack's
     environment and with the cluster's (when haproxy is installed);
  7. cross-checks: HAProxy server slots >= HPA maxReplicas, every referenced ConfigMap/Secret exists.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

import haproxy_check

K8S_VERSION = "1.30.0"
ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SERVICES = ["admission", "seat-lock", "inventory", "payment", "notifier"]
# Secrets made outside the overlays: CloudNativePG's app credentials, and production's edge TLS
# certificate of the public name (k8s/overlays/production/patches/lb-edge-tls.yaml).
EXTERNAL_REFS = {("Secret", "ticketing-pg-app"), ("Secret", "ticketing-edge-tls")}
# Redis may use at most this share of its container's memory limit: the rest is for the AOF
# rewrite's copy-on-write pages, client and replication buffers, fragmentation.
REDIS_MAXMEMORY_SHARE = 0.75

errors: list[str] = []
warnings: list[str] = []
# Kinds without a bundled schema (cert-manager's, CloudNativePG's): not validated.
custom_resources: set[str] = set()


def error(msg: str) -> None:
    errors.append(msg)


# ---------------------------------------------------------------------------------------------
# Facts from the code: the services' default ports and drain, the Dockerfile's targets.

def service_defaults() -> dict[str, int]:
    src = (ROOT / "service-runtime/src/config.rs").read_text()
    out = {}
    for env in ("GRPC_ADDR", "METRICS_ADDR"):
        m = re.search(rf'env = "{env}", default_value = "[^"]*:(\d+)"', src)
        if not m:
            error(f"service-runtime/src/config.rs: no default for {env}")
            continue
        out[env] = int(m.group(1))
    m = re.search(r'env = "DRAIN_GRACE_MS", default_value_t = ([\d_]+)', src)
    out["DRAIN_GRACE_MS"] = int(m.group(1).replace("_", "")) if m else 10_000
    return out


def dockerfile_targets() -> set[str]:
    text = (ROOT / "Dockerfile").read_text()
    return set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+([\w.-]+)\s*$", text))


# ---------------------------------------------------------------------------------------------
# Rendering with kubectl's kustomize

def render_all(roots: list[Path]) -> dict[str, list[dict]]:
    """Renders each kustomization root with `kubectl kustomize`, in a copy of k8s/ where each
    secret file created at deploy time (tools/deploy/gen-secrets.sh) is its committed .example."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        error("kubectl not found: tools/k8s/check.sh installs it (apt-get install kubectl)")
        return {}
    rendered: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy)
        for example in copy.rglob("*.example"):
            target = example.with_suffix("")
            if not target.exists():
                shutil.copy(example, target)
        for root in roots:
            name = f"k8s/{root.relative_to(K8S)}"
            r = subprocess.run([kubectl, "kustomize", str(copy / root.relative_to(K8S))], capture_output=True, text=True)
            if r.returncode != 0:
                error(f"kubectl kustomize {name}: {r.stderr.strip()}")
                continue
            rendered[name] = [d for d in yaml.safe_load_all(r.stdout) if d]
    return rendered


def validate(obj: dict, where: str) -> bool:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        return True
    except kubernetes_validate.SchemaNotFoundError:
        custom_resources.add(f"{obj.get('apiVersion')} {obj.get('kind')}")
        return True
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        error(f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {path}: {e.message}")
        return False
    except kubernetes_validate.InvalidSchemaError as e:
        error(f"{where}: invalid schema: {e}")
        return False


# ---------------------------------------------------------------------------------------------
# Deployments, images

def port_number(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def env_value(container: dict, name: str):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


def check_service_deployment(obj: dict, where: str, defaults: dict, config: dict) -> None:
    name = obj["metadata"]["name"]
    spec = obj["spec"]["template"]["spec"]
    c = spec["containers"][0]
    grpc, metrics = defaults["GRPC_ADDR"], defaults["METRICS_ADDR"]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("grpc") != grpc:
        error(f"{where}: {name}: container port grpc is {ports.get('grpc')}, the service listens on {grpc} (GRPC_ADDR)")
    if ports.get("metrics") != metrics:
        error(f"{where}: {name}: container port metrics is {ports.get('metrics')}, the service listens on {metrics} (METRICS_ADDR)")
    for env, want in (("GRPC_ADDR", grpc), ("METRICS_ADDR", metrics)):
        value = env_value(c, env)
        if value is not None and not value.endswith(f":{want}"):
            error(f"{where}: {name}: {env}={value} does not match container port {want}")
    # The health port (HEALTH_ADDR, from config.env: it has no default, so that several
    # services on one host do not collide): /livez for liveness, outside load shedding;
    # /readyz (or a native gRPC probe) for readiness and start-up.
    health_addr = env_value(c, "HEALTH_ADDR") or config.get("HEALTH_ADDR")
    health = int(health_addr.rsplit(":", 1)[1]) if health_addr else None
    if health is None:
        error(f"{where}: {name}: no HEALTH_ADDR (k8s/base/config.env): the probes and HAProxy's checks need it")
    elif ports.get("health") != health:
        error(f"{where}: {name}: container port health is {ports.get('health')}, HEALTH_ADDR is {health_addr}")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = c.get(probe)
        if p is None:
            if probe != "startupProbe":
                error(f"{where}: {name}: no {probe}")
            continue
        want_path = "/livez" if probe == "livenessProbe" else "/readyz"
        if "httpGet" in p:
            if p["httpGet"].get("path") != want_path or port_number(c, p["httpGet"].get("port")) != health:
                error(f"{where}: {name}: {probe} must GET {want_path} on the health port {health}")
        elif "grpc" in p and probe != "livenessProbe":
            if p["grpc"].get("port") != grpc:
                error(f"{where}: {name}: {probe} port {p['grpc'].get('port')} != gRPC port {grpc}")
        else:
            error(f"{where}: {name}: {probe} must GET {want_path} on the health port (liveness never through the gRPC stack's load shedding)")
    ann = obj["spec"]["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(metrics):
        error(f"{where}: {name}: Prometheus annotations must scrape port {metrics}")
    res = c.get("resources", {})
    if not res.get("requests") or not res.get("limits"):
        error(f"{where}: {name}: resource requests and limits are required")
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    if sleep is None:
        error(f"{where}: {name}: no preStop sleep")
        sleep = 0
    drain = int(config.get("DRAIN_GRACE_MS", defaults["DRAIN_GRACE_MS"])) / 1000
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace <= sleep + drain:
        error(f"{where}: {name}: terminationGracePeriodSeconds {grace} <= preStop {sleep}s + drain {drain}s")
    sc = c.get("securityContext", {})
    if not sc.get("readOnlyRootFilesystem") or not spec.get("securityContext", {}).get("runAsNonRoot"):
        error(f"{where}: {name}: must run as non-root with a read-only root filesystem")


def check_probe_ports(obj: dict, where: str) -> None:
    """Every probe of every workload names a port its container declares."""
    spec = obj["spec"]["template"]["spec"] if obj["kind"] != "Pod" else obj["spec"]
    for c in spec.get("containers", []):
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            p = c.get(probe) or {}
            for kind in ("grpc", "httpGet", "tcpSocket"):
                if kind in p and port_number(c, p[kind].get("port")) is None:
                    error(f"{where}: {obj['metadata']['name']}/{c['name']}: {probe} port {p[kind].get('port')} is not a container port")
                elif kind in p and isinstance(p[kind].get("port"), int) and p[kind]["port"] not in [x["containerPort"] for x in c.get("ports", [])]:
                    error(f"{where}: {obj['metadata']['name']}/{c['name']}: {probe} port {p[kind]['port']} is not a container port")


def check_image(image: str, where: str, targets: set[str], seen: set[str]) -> None:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if name.startswith("ticketing/") or "/ticketing/" in name:
        target = name.rsplit("/", 1)[-1]
        if target not in targets:
            error(f"{where}: image {image}: no Dockerfile target '{target}' (targets: {sorted(targets)})")
        seen.add(target)
    else:
        if not tag or tag == "latest":
            error(f"{where}: third-party image {image} must be pinned to a tag other than latest")
        seen.add(image)


WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


def pod_containers(obj: dict) -> list[dict]:
    spec = obj["spec"]["template"]["spec"]
    return spec.get("containers", []) + spec.get("initContainers", [])


# ---------------------------------------------------------------------------------------------
# Checks of one rendering

def find(objs: list[dict], kind: str, name: str) -> dict | None:
    """The object `kind`/`name`; a generated ConfigMap or Secret also under its hashed name."""
    hashed = re.compile(rf"{re.escape(name)}-[a-z0-9]{{10}}")
    return next(
        (o for o in objs if o["kind"] == kind and (o["metadata"]["name"] == name
         or kind in ("ConfigMap", "Secret") and hashed.fullmatch(o["metadata"]["name"]))),
        None,
    )


def check_services(objs: list[dict], where: str, defaults: dict) -> int:
    """The five service Deployments and their companions; returns how many passed."""
    config_map = find(objs, "ConfigMap", "ticketing-config")
    config = (config_map or {}).get("data", {}) or {}
    if config_map is None:
        error(f"{where}: no ConfigMap ticketing-config")
    ok = 0
    for s in SERVICES:
        dep = find(objs, "Deployment", s)
        if dep is None:
            error(f"{where}: no Deployment {s}")
            continue
        before = len(errors)
        check_service_deployment(dep, where, defaults, config)
        for kind, name in (("Service", s), ("Service", f"{s}-headless"), ("PodDisruptionBudget", s), ("HorizontalPodAutoscaler", s)):
            obj = find(objs, kind, name)
            if obj is None:
                error(f"{where}: {s} has no {kind} {name}")
            elif kind == "Service" and name.endswith("-headless") and obj["spec"].get("clusterIP") != "None":
                error(f"{where}: Service {name} must be headless (clusterIP: None)")
            elif kind == "Service":
                for p in obj["spec"]["ports"]:
                    if p.get("name") == "grpc" and p.get("port") != defaults["GRPC_ADDR"]:
                        error(f"{where}: Service {name} port grpc {p.get('port')} != {defaults['GRPC_ADDR']}")
        ok += len(errors) == before
    want = f"http://inventory-headless:{defaults['GRPC_ADDR']}"
    if config_map is not None and config.get("INVENTORY_URL") != want:
        error(f"{where}: ticketing-config INVENTORY_URL={config.get('INVENTORY_URL')}, expected {want} (client-side balancing)")
    # Internal RPCs: mutual TLS on the internal port of the headless Service.
    for url_var, svc in (("SEAT_LOCK_INTERNAL_URL", "seat-lock"), ("PAYMENT_INTERNAL_URL", "payment")):
        want = f"https://{svc}-headless:50052"
        if config_map is not None and config.get(url_var) != want:
            error(f"{where}: ticketing-config {url_var}={config.get(url_var)}, expected {want} (internal listener)")
    return ok


def check_hpa_replicas(objs: list[dict], where: str) -> None:
    """A Deployment that an HPA scales carries no replicas: each apply would reset the count."""
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = find(objs, ref["kind"], ref["name"])
        if target is None:
            error(f"{where}: HPA {hpa['metadata']['name']} scales {ref['kind']}/{ref['name']}, which does not exist")
        elif "replicas" in target["spec"]:
            error(f"{where}: {ref['kind']}/{ref['name']} sets replicas ({target['spec']['replicas']}) although HPA {hpa['metadata']['name']} scales it")


UNITS = {"": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}


def redis_bytes(value: str) -> int | None:
    m = re.fullmatch(r"(\d+)([a-z]*)", value.strip().lower())
    if not m:
        return None
    number, unit = int(m.group(1)), m.group(2)
    if unit in ("k", "m", "g"):
        return number * UNITS[unit]
    if unit in ("kb", "mb", "gb"):
        return number * 1024 ** ("kmg".index(unit[0]) + 1)
    return number if unit == "" else None


def quantity_bytes(value: str) -> int | None:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(value))
    if not m:
        return None
    factor = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
    return int(m.group(1)) * factor[m.group(2)]


def check_redis(objs: list[dict], where: str) -> int:
    """Every Redis server refuses writes when full instead of being OOM-killed."""
    checked = 0
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        for c in o["spec"]["template"]["spec"].get("containers", []):
            # Redis servers: redis images outside Jobs (a Job runs redis-cli).
            if o["kind"] == "Job" or not c["image"].rsplit("/", 1)[-1].startswith("redis:"):
                continue
            name = f"{o['kind']}/{o['metadata']['name']}"
            words = " ".join(c.get("command", []) + c.get("args", [])).split()
            opts = {words[i]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")}
            checked += 1
            limit = quantity_bytes(c.get("resources", {}).get("limits", {}).get("memory", ""))
            maxmemory = redis_bytes(opts.get("--maxmemory", ""))
            if opts.get("--maxmemory-policy") != "noeviction":
                error(f"{where}: {name}: Redis must run with --maxmemory-policy noeviction (refuse writes, never evict a hold)")
            if maxmemory is None or maxmemory == 0:
                error(f"{where}: {name}: Redis has no --maxmemory: it would grow until the kernel kills it")
            elif limit is None:
                error(f"{where}: {name}: Redis has no memory limit")
            elif maxmemory > REDIS_MAXMEMORY_SHARE * limit:
                error(f"{where}: {name}: --maxmemory {opts['--maxmemory']} is over {REDIS_MAXMEMORY_SHARE:.0%} of the memory limit {c['resources']['limits']['memory']}")
    return checked


def selects(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        value = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and value not in e["values"]:
            return False
        if op == "NotIn" and value in e["values"]:
            return False
        if op == "Exists" and e["key"] not in labels:
            return False
        if op == "DoesNotExist" and e["key"] in labels:
            return False
    return True


def check_network_policies(objs: list[dict], where: str) -> int:
    """A default deny, DNS, and a policy of its own for each workload (the mesh's and the
    backing services')."""
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"].get("podSelector") == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny:
        error(f"{where}: no default-deny NetworkPolicy (podSelector {{}}, Ingress and Egress, no rules)")
    dns = [p for p in policies if p["spec"].get("podSelector") == {} and any(
        any(port.get("port") == 53 for port in rule.get("ports", [])) for rule in p["spec"].get("egress", []))]
    if not dns:
        error(f"{where}: no NetworkPolicy lets every pod reach DNS (port 53)")
    own = 0
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        labels = o["spec"]["template"]["metadata"].get("labels", {})
        mine = [p for p in policies if p["spec"].get("podSelector") != {} and selects(p["spec"]["podSelector"], labels)]
        if not mine:
            error(f"{where}: {o['kind']}/{o['metadata']['name']} has no NetworkPolicy of its own (the default deny cuts it off)")
        own += bool(mine)
    return own


def check_rendered(objs: list[dict], where: str) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in objs} | EXTERNAL_REFS
    # cert-manager writes each Certificate's Secret.
    names |= {("Secret", o["spec"]["secretName"]) for o in objs if o["kind"] == "Certificate"}
    lb = next((o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "lb"), None)
    if lb:
        env = {e["name"]: e.get("value") for e in lb["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
            svc = hpa["spec"]["scaleTargetRef"]["name"]
            if svc == "lb":
                continue
            slots = int(env.get(f"{svc.replace('-', '_').upper()}_MAX_SERVERS") or 1)
            if slots < hpa["spec"]["maxReplicas"]:
                error(f"{where}: HAProxy has {slots} server slots for {svc}, its HPA may run {hpa['spec']['maxReplicas']}")
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        spec = o["spec"]["template"]["spec"]
        refs = []
        for c in pod_containers(o):
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                if "secretKeyRef" in vf:
                    refs.append(("Secret", vf["secretKeyRef"]["name"]))
                if "configMapKeyRef" in vf:
                    refs.append(("ConfigMap", vf["configMapKeyRef"]["name"]))
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef:
                    refs.append(("ConfigMap", ef["configMapRef"]["name"]))
                if "secretRef" in ef:
                    refs.append(("Secret", ef["secretRef"]["name"]))
        for v in spec.get("volumes", []):
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
        for ref in refs:
            if ref not in names:
                error(f"{where}: {o['kind']}/{o['metadata']['name']} refers to {ref[0]}/{ref[1]}, which the overlay does not create")


# ---------------------------------------------------------------------------------------------

def main() -> int:
    defaults = service_defaults()
    targets = dockerfile_targets()
    roots = [K8S / "base"] + sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
    rendered = render_all(roots)

    objects = valid = deployments_ok = redis = own_policies = 0
    images_seen: set[str] = set()
    for where, objs in rendered.items():
        for obj in objs:
            objects += 1
            valid += validate(obj, where)
            if obj.get("kind") in WORKLOADS:
                if obj["kind"] != "Job":
                    check_probe_ports(obj, where)
                for c in pod_containers(obj):
                    check_image(c["image"], where, targets, images_seen)
        deployments_ok += check_services(objs, where, defaults)
        check_hpa_replicas(objs, where)
        redis += check_redis(objs, where)
        own_policies += check_network_policies(objs, where)
        # The base alone lacks what the overlays add (the database Secret): its references are
        # checked in each overlay.
        if where != "k8s/base":
            check_rendered(objs, where)
    if custom_resources:
        warnings.append(f"custom resources, no bundled schema (not validated): {', '.join(sorted(custom_resources))}")
    for s in SERVICES:
        if s not in targets:
            error(f"Dockerfile: no target '{s}'")
    ours = sorted(i for i in images_seen if "/" not in i and ":" not in i)

    base = rendered.get("k8s/base", [])
    haproxy_ok = haproxy_check.check(find(base, "Deployment", "lb"), K8S, SERVICES, error, warnings) if base else 0

    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"ERROR: {e}")
    print(
        f"k8s: {len(rendered)}/{len(roots)} kustomizations rendered by kubectl kustomize, "
        f"{valid}/{objects} rendered objects valid (Kubernetes {K8S_VERSION}, strict), "
        f"{deployments_ok}/{len(SERVICES) * len(rendered)} service deployments' ports and probes match "
        f"(grpc {defaults['GRPC_ADDR']}, metrics {defaults['METRICS_ADDR']}), "
        f"{len(ours)} images match Dockerfile targets ({len(images_seen) - len(ours)} pinned third-party), "
        f"{redis} Redis servers bounded (noeviction), {own_policies} workloads with their own NetworkPolicy, "
        f"haproxy -c {haproxy_ok}/2 environments"
    )
    if errors:
        print(f"k8s: FAILED with {len(errors)} error(s)")
        return 1
    print("k8s: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
