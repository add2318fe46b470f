"""The HAProxy part of the offline check (check.py): k8s/base/haproxy/haproxy.cfg passes
`haproxy -c` with the local stack's environment and with the cluster's (the lb Deployment's),
which must set every variable the config reads and reach each service through its headless
Service."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable


def check(lb: dict | None, k8s: Path, services: list[str], error: Callable[[str], None], warnings: list[str]) -> int:
    """Returns in how many environments `haproxy -c` passed."""
    cfg = k8s / "base/haproxy/haproxy.cfg"

    def haproxy_c(env: dict, label: str) -> bool:
        if not shutil.which("haproxy"):
            warnings.append(f"haproxy not installed: `haproxy -c` ({label}) skipped")
            return False
        full = {"PATH": os.environ.get("PATH", "")} | env
        command = ["haproxy", "-c", "-f", str(cfg)]
        # Cluster names cannot resolve here: check without a network (lookups fail at once instead
        # of waiting for the host's resolver), when this machine allows a private network namespace.
        if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
            command = ["unshare", "-n"] + command
        r = subprocess.run(command, env=full, capture_output=True, text=True)
        if r.returncode != 0:
            alerts = [l for l in (r.stdout + r.stderr).splitlines() if "ALERT" in l]
            error(f"haproxy -c ({label}) failed: " + " | ".join(alerts[:5]))
            return False
        return True

    text = cfg.read_text()
    needed = sorted(set(re.findall(r"\$\{([A-Z_]+)(?:-[^}]*)?\}", text)))
    ok = 0
    local = {"LB_ADDR": "127.0.0.1:18080"}
    for i, s in enumerate(services):
        local[f"{s.replace('-', '_').upper()}_ADDR"] = f"127.0.0.1:{40001 + i}"
    ok += haproxy_c(local, "local stack")
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
    for s in services:
        addr = cluster.get(f"{s.replace('-', '_').upper()}_ADDR", "")
        if not addr.startswith(f"{s}-headless."):
            error(f"k8s/base/lb.yaml: {s} must be reached through its headless Service, got {addr!r}")
    ok += haproxy_c(cluster, "cluster")
    return ok
