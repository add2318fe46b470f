#!/usr/bin/env python3
"""Offline check of the Kubernetes deployment (k8s/) and the Dockerfile. Needs PyYAML and
kubernetes-validate (tools/k8s/check.sh installs them). Exits 1 on any error.

What it checks, without a cluster and without a kustomize binary:
  1. every resource file of the base and the overlays validates against the bundled Kubernetes
     1.30 schemas, strictly (custom resources such as CloudNativePG's Cluster: a warning);
  2. the kustomizations use only simple built-ins (resources, images, replicas,
     configMapGenerator, secretGenerator, patches, namespace, labels), their files exist, and every
     patch, replicas and images entry targets a resource that exists (JSON patch paths too);
  3. every service Deployment's container ports and probe ports match the services' configuration
     defaults (read from service-runtime/src/config.rs: gRPC 50051, metrics 9090), with resource
     requests/limits, HTTP probes on the health port (HEALTH_ADDR), a preStop, a termination grace longer than preStop + drain,
     Prometheus annotations, a Service, a headless Service, a PodDisruptionBudget and an HPA;
  4. every image of ours (ticketing/<name>) is a build target of the Dockerfile; others are pinned;
  5. the HAProxy config (k8s/base/haproxy/haproxy.cfg) passes `haproxy -c` with the local stack's
     environment and with the cluster's (when haproxy is installed);
  6. when kubectl is installed, each overlay is rendered with `kubectl kustomize` (kubectl's own
     kustomize, not a clone), validated again, and cross-checked (HAProxy server slots >= HPA
     maxReplicas, every referenced ConfigMap/Secret exists).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

K8S_VERSION = "1.30.0"
ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SERVICES = ["admission", "seat-lock", "inventory", "payment", "notifier"]
ALLOWED_KUSTOMIZE_KEYS = {
    "apiVersion", "kind", "namespace", "labels", "resources", "images", "replicas",
    "configMapGenerator", "secretGenerator", "patches",
}
# Secrets made outside the overlays: CloudNativePG's app credentials, and production's edge TLS
# certificate of the public name (k8s/overlays/production/patches/lb-edge-tls.yaml).
EXTERNAL_REFS = {("Secret", "ticketing-pg-app"), ("Secret", "ticketing-edge-tls")}

errors: list[str] = []
warnings: list[str] = []


def error(msg: str) -> None:
    errors.append(msg)


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def load_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


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
# Kustomizations

class Kustomization:
    def __init__(self, directory: Path):
        self.dir = directory
        self.file = directory / "kustomization.yaml"
        self.data = yaml.safe_load(self.file.read_text()) or {}
        self.own_resources: list[tuple[Path, dict]] = []  # (file, object) of this layer's files
        self.bases: list[Kustomization] = []
        self.generated: list[dict] = []  # stand-ins for generated ConfigMaps/Secrets


def env_file_keys(path: Path) -> list[str]:
    keys = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            error(f"{rel(path)}: not KEY=VALUE: {line!r}")
            continue
        keys.append(line.split("=", 1)[0])
    return keys


def generator_file(k: Kustomization, name: str, notes: list[str]) -> Path | None:
    path = k.dir / name
    if path.exists():
        return path
    example = path.with_name(path.name + ".example")
    if example.exists():
        notes.append(f"{rel(path)} is created at deploy time (tools/deploy/gen-secrets.sh); checked {example.name}")
        return example
    error(f"{rel(k.file)}: generator file {name} does not exist")
    return None


def load_kustomization(directory: Path, cache: dict, notes: list[str]) -> Kustomization:
    directory = directory.resolve()
    if directory in cache:
        return cache[directory]
    k = Kustomization(directory)
    cache[directory] = k
    for key in k.data:
        if key not in ALLOWED_KUSTOMIZE_KEYS:
            error(f"{rel(k.file)}: '{key}' is not one of the simple built-ins {sorted(ALLOWED_KUSTOMIZE_KEYS)}")
    for entry in k.data.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            if not (path / "kustomization.yaml").exists():
                error(f"{rel(k.file)}: resource directory {entry} has no kustomization.yaml")
                continue
            k.bases.append(load_kustomization(path, cache, notes))
        elif path.is_file():
            for obj in load_docs(path):
                k.own_resources.append((path, obj))
        else:
            error(f"{rel(k.file)}: resource {entry} does not exist")
    for gen_kind, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for gen in k.data.get(gen_kind, []):
            for name in gen.get("envs", []):
                path = generator_file(k, name, notes)
                if path:
                    env_file_keys(path)
            for name in gen.get("files", []):
                generator_file(k, name.split("=", 1)[-1], notes)
            behavior = gen.get("behavior", "create")
            if behavior in ("merge", "replace") and not any(
                o["kind"] == kind and o["metadata"]["name"] == gen["name"] for o in all_objects(k, include_self_generated=False)
            ):
                error(f"{rel(k.file)}: {gen_kind} {gen['name']} has behavior {behavior} but no base generates it")
            k.generated.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}})
    return k


def all_objects(k: Kustomization, include_self_generated: bool = True) -> list[dict]:
    objs = []
    for base in k.bases:
        objs.extend(all_objects(base))
    objs.extend(o for _, o in k.own_resources)
    if include_self_generated:
        objs.extend(k.generated)
    return objs


def matches(obj: dict, target: dict) -> bool:
    if "kind" in target and obj.get("kind") != target["kind"]:
        return False
    if "name" in target and obj.get("metadata", {}).get("name") != target["name"]:
        return False
    if "group" in target:
        group = obj.get("apiVersion", "").rpartition("/")[0]
        if group != target["group"]:
            return False
    if "labelSelector" in target:
        labels = obj.get("metadata", {}).get("labels", {}) or {}
        for term in target["labelSelector"].split(","):
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def pointer_get(doc, pointer: str):
    node = doc
    for raw in pointer.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            if part == "-":
                return None
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node[part]
        else:
            raise KeyError(part)
    return node


def check_json_patch(ops, targets: list[dict], where: str) -> None:
    if not isinstance(ops, list):
        error(f"{where}: a patch with a target must be a JSON 6902 list of operations")
        return
    for op in ops:
        path = op.get("path", "")
        for obj in targets:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            try:
                if op.get("op") in ("replace", "remove", "test"):
                    pointer_get(obj, path)
                elif op.get("op") == "add":
                    parent = path.rsplit("/", 1)[0]
                    if parent:
                        pointer_get(obj, parent)
            except (KeyError, IndexError, ValueError, TypeError):
                error(f"{where}: {op.get('op')} {path}: no such path in {name}")


def check_patches(k: Kustomization) -> int:
    count = 0
    visible = all_objects(k)
    for i, patch in enumerate(k.data.get("patches", [])):
        where = f"{rel(k.file)} patches[{i}]"
        target = patch.get("target")
        body = None
        if "path" in patch:
            ppath = k.dir / patch["path"]
            if not ppath.exists():
                error(f"{where}: {patch['path']} does not exist")
                continue
            body = list(yaml.safe_load_all(ppath.read_text()))
            where = f"{where} ({patch['path']})"
        elif "patch" in patch:
            body = list(yaml.safe_load_all(patch["patch"]))
        else:
            error(f"{where}: neither path nor patch")
            continue
        if target:
            found = [o for o in visible if matches(o, target)]
            if not found:
                error(f"{where}: target {target} matches no resource")
                continue
            if len(body) == 1 and isinstance(body[0], list):
                check_json_patch(body[0], found, where)
            count += 1
        else:
            for doc in body:
                if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
                    error(f"{where}: a strategic merge patch needs kind and metadata.name")
                    continue
                t = {"kind": doc["kind"], "name": doc["metadata"]["name"]}
                if not [o for o in visible if matches(o, t)]:
                    error(f"{where}: {t['kind']}/{t['name']} matches no resource")
                count += 1
    for entry in k.data.get("replicas", []):
        if not [o for o in visible if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == entry["name"]]:
            error(f"{rel(k.file)}: replicas entry {entry['name']} matches no Deployment or StatefulSet")
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Schemas

def validate(obj: dict, where: str) -> bool:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        return True
    except kubernetes_validate.SchemaNotFoundError:
        warnings.append(f"{where}: {obj.get('apiVersion')} {obj.get('kind')} is a custom resource: no bundled schema")
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
# HAProxy

HAPROXY_CFG = K8S / "base/haproxy/haproxy.cfg"


def haproxy_check(env: dict, label: str) -> bool:
    if not shutil.which("haproxy"):
        warnings.append(f"haproxy not installed: `haproxy -c` ({label}) skipped")
        return False
    full = {"PATH": os.environ.get("PATH", "")} | env
    command = ["haproxy", "-c", "-f", str(HAPROXY_CFG)]
    # Cluster names cannot resolve here: check without a network (lookups fail at once instead of
    # waiting for the host's resolver), when this machine allows a private network namespace.
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-n"] + command
    r = subprocess.run(command, env=full, capture_output=True, text=True)
    if r.returncode != 0:
        alerts = [l for l in (r.stdout + r.stderr).splitlines() if "ALERT" in l]
        error(f"haproxy -c ({label}) failed: " + " | ".join(alerts[:5]))
        return False
    return True


def check_haproxy(lb: dict | None) -> int:
    text = HAPROXY_CFG.read_text()
    needed = sorted(set(re.findall(r"\$\{([A-Z_]+)(?:-[^}]*)?\}", text)))
    ok = 0
    local = {"LB_ADDR": "127.0.0.1:18080"}
    for i, s in enumerate(SERVICES):
        local[f"{s.replace('-', '_').upper()}_ADDR"] = f"127.0.0.1:{40001 + i}"
    ok += haproxy_check(local, "local stack")
    if lb is None:
        error("k8s/base: no Deployment lb")
        return ok
    c = lb["spec"]["template"]["spec"]["containers"][0]
    cluster = {e["name"]: e["value"].replace("$(POD_NAMESPACE)", "ticketing") for e in c.get("env", []) if "value" in e}
    for var in needed:
        # Variables read only under `.if defined(VAR)` may stay unset (e.g. LB_TLS_CERT).
        optional = re.search(rf"^\.if defined\({var}\)", text, re.M)
        if var not in cluster and not optional and not re.search(rf"\$\{{{var}-", text):
            error(f"k8s/base/lb.yaml: HAProxy needs {var}, the lb Deployment does not set it")
    for s in SERVICES:
        addr = cluster.get(f"{s.replace('-', '_').upper()}_ADDR", "")
        if not addr.startswith(f"{s}-headless."):
            error(f"k8s/base/lb.yaml: {s} must be reached through its headless Service, got {addr!r}")
    ok += haproxy_check(cluster, "cluster")
    return ok


# ---------------------------------------------------------------------------------------------
# Rendering with kubectl's kustomize (optional)

def render_overlays(overlays: list[Path]) -> int:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        warnings.append("kubectl not installed: rendering of the overlays skipped")
        return 0
    rendered = 0
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy)
        for example in copy.rglob("*.example"):
            target = example.with_suffix("")
            if not target.exists():
                shutil.copy(example, target)
        for overlay in overlays:
            name = overlay.relative_to(K8S)
            r = subprocess.run([kubectl, "kustomize", str(copy / name)], capture_output=True, text=True)
            if r.returncode != 0:
                error(f"kubectl kustomize k8s/{name}: {r.stderr.strip()}")
                continue
            objs = [d for d in yaml.safe_load_all(r.stdout) if d]
            for obj in objs:
                validate(obj, f"rendered k8s/{name}")
            check_rendered(objs, f"rendered k8s/{name}")
            rendered += 1
    return rendered


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
    notes: list[str] = []
    cache: dict = {}
    roots = [K8S / "base"] + sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
    kustomizations = [load_kustomization(r, cache, notes) for r in roots]

    # 1. schemas, once per resource file object
    files_seen: set[Path] = set()
    resources = valid = 0
    for k in kustomizations:
        for path, obj in k.own_resources:
            resources += 1
            files_seen.add(path)
            valid += validate(obj, rel(path))
    # Patch files that are complete objects are not validated alone (they are partial by design).

    # 2. patches
    patch_count = sum(check_patches(k) for k in kustomizations)

    # 3. deployments, base completeness
    base = cache[(K8S / "base").resolve()]
    config = {}
    for line in (K8S / "base/config.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            config[key] = value
    base_objs = [o for _, o in base.own_resources]
    deployments_ok = 0
    for s in SERVICES:
        dep = next((o for o in base_objs if o["kind"] == "Deployment" and o["metadata"]["name"] == s), None)
        if dep is None:
            error(f"k8s/base: no Deployment {s}")
            continue
        before = len(errors)
        check_service_deployment(dep, "k8s/base", defaults, config)
        for kind, name in (("Service", s), ("Service", f"{s}-headless"), ("PodDisruptionBudget", s), ("HorizontalPodAutoscaler", s)):
            obj = next((o for o in base_objs if o["kind"] == kind and o["metadata"]["name"] == name), None)
            if obj is None:
                error(f"k8s/base: {s} has no {kind} {name}")
            elif kind == "Service" and name.endswith("-headless") and obj["spec"].get("clusterIP") != "None":
                error(f"k8s/base: Service {name} must be headless (clusterIP: None)")
            elif kind == "Service":
                for p in obj["spec"]["ports"]:
                    if p.get("name") == "grpc" and p.get("port") != defaults["GRPC_ADDR"]:
                        error(f"k8s/base: Service {name} port grpc {p.get('port')} != {defaults['GRPC_ADDR']}")
        deployments_ok += len(errors) == before
    for url_var, svc in (("INVENTORY_URL", "inventory"),):
        want = f"http://{svc}-headless:{defaults['GRPC_ADDR']}"
        if config.get(url_var) != want:
            error(f"k8s/base/config.env: {url_var}={config.get(url_var)}, expected {want} (client-side balancing)")
    # Internal RPCs: mutual TLS on the internal port of the headless Service.
    for url_var, svc in (("SEAT_LOCK_INTERNAL_URL", "seat-lock"), ("PAYMENT_INTERNAL_URL", "payment")):
        want = f"https://{svc}-headless:50052"
        if config.get(url_var) != want:
            error(f"k8s/base/config.env: {url_var}={config.get(url_var)}, expected {want} (internal listener)")

    # probe ports of every workload, images of every workload and kustomization
    images_seen: set[str] = set()
    for k in kustomizations:
        for path, obj in k.own_resources:
            if obj.get("kind") in WORKLOADS:
                if obj["kind"] != "Job":
                    check_probe_ports(obj, rel(path))
                for c in pod_containers(obj):
                    check_image(c["image"], rel(path), targets, images_seen)
        for entry in k.data.get("images", []):
            check_image(entry["name"] + ":x", rel(k.file), targets, images_seen)
    for s in SERVICES:
        if s not in targets:
            error(f"Dockerfile: no target '{s}'")
    ours = sorted(i for i in images_seen if "/" not in i and ":" not in i)

    # 5. HAProxy
    lb = next((o for o in base_objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "lb"), None)
    haproxy_ok = check_haproxy(lb)

    # 6. render
    overlays = [r for r in roots if r.parent.name == "overlays"]
    rendered = render_overlays(overlays)

    for n in notes:
        print(f"note: {n}")
    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"ERROR: {e}")
    print(
        f"k8s: {valid}/{resources} resources in {len(files_seen)} files valid (Kubernetes {K8S_VERSION}, strict), "
        f"{patch_count} patches/replicas target existing resources in {len(kustomizations)} kustomizations, "
        f"{deployments_ok}/{len(SERVICES)} deployments' ports match (grpc {defaults['GRPC_ADDR']}, metrics {defaults['METRICS_ADDR']}), "
        f"{len(ours)} images match Dockerfile targets ({len(images_seen) - len(ours)} pinned third-party), "
        f"haproxy -c {haproxy_ok}/2 environments, {rendered}/{len(overlays)} overlays rendered"
    )
    if errors:
        print(f"k8s: FAILED with {len(errors)} error(s)")
        return 1
    print("k8s: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
