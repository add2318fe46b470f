#!/usr/bin/env python3
"""Offline check of k8s/observability/ (the PodMonitor, the PrometheusRule and the Grafana
dashboard). Needs PyYAML, kubectl and promtool (tools/k8s/check.sh installs them). Exits 1 on
any error.

  1. `kubectl kustomize k8s/observability` renders a PodMonitor, a PrometheusRule and the
     dashboard's ConfigMap (labelled for Grafana's sidecar), whose JSON parses;
  2. `promtool check rules` on the PrometheusRule's spec, and on every dashboard query (each
     written as a recording rule, `$__rate_interval` as 5m), so every expression parses;
  3. every alert has a severity, a summary and a runbook;
  4. `promtool test rules` with k8s/observability/tests/rules-test.yaml: each alert fires on a
     series shaped like its trouble (the runbook text is copied from the rule into the
     expected alerts, after 3 checked it is there);
  5. every metric the rules and the dashboard query is one the code records: a
     `counter!`/`gauge!`/`histogram!`/`LiveGauge::get` name in the services' sources (a
     histogram's `_bucket`/`_count`/`_sum`), or a `process_*` series of metrics-process that
     service-runtime/tests/rpc_telemetry.rs sees in a real scrape.

`--series FILE` writes the metric names the rules and the dashboard query (one a line) and
`--rules FILE` the PrometheusRule's spec as a Prometheus rule file, without checking: for
tools/tests/prometheus.rs, which runs a real Prometheus against the local stack.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "k8s" / "observability"
SOURCES = ["admission", "seat-lock", "inventory", "payment", "notifier", "service-runtime/src"]
# metrics-process' series the dashboard uses; rpc_telemetry.rs asserts each is scraped.
PROCESS_SERIES = {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"}
# Prefixes of our metric names (label names such as grpc_method or event_id never take them).
METRIC = re.compile(
    r"\b((?:grpc_server|admission|seat_lock|inventory|payment|notifier|process)_[a-z0-9_]+)\b"
)
# A recording rule's name (level:metric:operations), defined by the rules themselves.
RECORDING_RULE = re.compile(r"\b[a-z_]+:[a-z0-9_:]+")
RECORDED = re.compile(r'(?:counter|gauge|histogram)!\(\s*"([a-z_][a-z0-9_]*)"', re.S)
HISTOGRAM = re.compile(r'histogram!\(\s*"([a-z_][a-z0-9_]*)"', re.S)
LIVE_GAUGE = re.compile(r'LiveGauge::get\(\s*"([a-z_][a-z0-9_]*)"', re.S)

errors: list[str] = []


def error(msg: str) -> None:
    errors.append(msg)


def run(cmd: list[str], cwd: Path | None = None) -> str | None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        error(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")
        return None
    return result.stdout


def recorded_metrics() -> set[str]:
    names: set[str] = set(PROCESS_SERIES)
    for source in SOURCES:
        for path in (ROOT / source).rglob("*.rs"):
            text = path.read_text()
            names.update(RECORDED.findall(text))
            names.update(LIVE_GAUGE.findall(text))
            for histogram in HISTOGRAM.findall(text):
                names.update(f"{histogram}_{suffix}" for suffix in ("bucket", "count", "sum"))
    return names


def queried(spec: dict, queries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(where, metric) for every metric name a rule or dashboard query reads."""
    rules = [rule for group in spec["groups"] for rule in group["rules"]]
    found = []
    for where, expr in [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules] + [
        (f"dashboard panel {title!r}", expr) for title, expr in queries
    ]:
        found.extend((where, metric) for metric in METRIC.findall(RECORDING_RULE.sub("", expr)))
    return found


def export(series_out: Path | None, rules_out: Path | None) -> int:
    spec = yaml.safe_load((OBS / "prometheusrule.yaml").read_text())["spec"]
    dashboard = json.loads((OBS / "ticketing-dashboard.json").read_text())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    if series_out:
        names = sorted({metric for _, metric in queried(spec, queries)})
        series_out.write_text("".join(f"{name}\n" for name in names))
    if rules_out:
        rules_out.write_text(json.dumps(spec))
    return 0


def main() -> int:
    args = sys.argv[1:]
    if args:
        options = dict(zip(args[::2], args[1::2]))
        if len(args) % 2 or set(options) - {"--series", "--rules"}:
            print("usage: observability_check.py [--series FILE] [--rules FILE]", file=sys.stderr)
            return 64
        paths = {k: Path(v) for k, v in options.items()}
        return export(paths.get("--series"), paths.get("--rules"))
    rendered = run(["kubectl", "kustomize", str(OBS)])
    if rendered is None:
        return report()
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    by_kind = {o["kind"]: o for o in objects}
    for kind in ("PodMonitor", "PrometheusRule", "ConfigMap"):
        if kind not in by_kind:
            error(f"k8s/observability renders no {kind}")
    if errors:
        return report()
    config_map = by_kind["ConfigMap"]
    if config_map["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        error("the dashboard ConfigMap lacks the label grafana_dashboard: \"1\"")
    dashboard = json.loads(config_map["data"]["ticketing-dashboard.json"])
    queries = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    if not queries:
        error("the dashboard has no queries")

    spec = by_kind["PrometheusRule"]["spec"]
    rules = [rule for group in spec["groups"] for rule in group["rules"]]
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    for name, rule in alerts.items():
        if "severity" not in rule.get("labels", {}):
            error(f"alert {name} has no severity")
        for annotation in ("summary", "runbook"):
            if not rule.get("annotations", {}).get(annotation, "").strip():
                error(f"alert {name} has no {annotation} annotation")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "rules.yaml").write_text(yaml.safe_dump(spec))
        run(["promtool", "check", "rules", "rules.yaml"], cwd=work)
        dashboard_rules = {
            "groups": [
                {
                    "name": "dashboard",
                    "rules": [
                        {"record": f"dashboard:query_{n}", "expr": expr.replace("$__rate_interval", "5m")}
                        for n, (_, expr) in enumerate(queries)
                    ],
                }
            ]
        }
        (work / "dashboard-rules.yaml").write_text(yaml.safe_dump(dashboard_rules))
        run(["promtool", "check", "rules", "dashboard-rules.yaml"], cwd=work)

        tests = yaml.safe_load((OBS / "tests" / "rules-test.yaml").read_text())
        tested = set()
        for case in tests["tests"]:
            for alert_test in case.get("alert_rule_test", []):
                name = alert_test["alertname"]
                tested.add(name)
                for expected in alert_test.get("exp_alerts", []):
                    annotations = expected.setdefault("exp_annotations", {})
                    if name in alerts:
                        annotations["runbook"] = alerts[name]["annotations"].get("runbook", "")
        for name in sorted(set(alerts) - tested):
            error(f"alert {name} has no case in k8s/observability/tests/rules-test.yaml")
        (work / "rules-test.yaml").write_text(yaml.safe_dump(tests, width=1000))
        run(["promtool", "test", "rules", "rules-test.yaml"], cwd=work)

    known = recorded_metrics()
    for where, metric in queried(spec, queries):
        if metric not in known:
            error(f"{where} queries {metric}, which no code records")
    print(
        f"observability: {len(alerts)} alerts, {len(rules) - len(alerts)} recording rules, "
        f"{len(queries)} dashboard queries; {len(known)} metric names recorded by the code"
    )
    return report()


def report() -> int:
    for msg in errors:
        print(f"ERROR: {msg}", file=sys.stderr)
    if errors:
        print(f"observability check: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print("observability check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
