//! `stack test`: the backing services, the service binaries, every test of the workspace,
//! then the offline check of the Kubernetes manifests (`tools/k8s/check.sh`: each overlay
//! rendered with `kubectl kustomize` and validated) and the proto module's check
//! (`tools/proto/check`: buf format, lint and breaking against the tagged contract).

use std::process::Command;

use anyhow::bail;

use super::{
    Binaries, build_binaries, cargo, ensure_backing_services, ensure_haproxy, ensure_prometheus,
    ensure_pyyaml, prereq::ensure_client_toolchains, workspace_root,
};

/// Runs every test, with `args` passed to `cargo test`.
pub fn test(args: &[String]) -> anyhow::Result<()> {
    ensure_backing_services()?;
    ensure_haproxy()?;
    // tools/tests/prometheus.rs runs a real Prometheus and reads k8s/observability with PyYAML.
    ensure_prometheus()?;
    ensure_pyyaml()?;
    // tools/tests/clients.rs runs the Python and TypeScript clients (clients/check).
    ensure_client_toolchains()?;
    build_binaries(true, Binaries::All)?;
    let mut test = vec!["test", "--workspace"];
    test.extend(args.iter().map(String::as_str));
    cargo(&test)?;
    let k8s = Command::new("bash").arg("tools/k8s/check.sh").current_dir(workspace_root()).status()?;
    if !k8s.success() {
        bail!("the offline Kubernetes check failed");
    }
    let proto = Command::new("bash").arg("tools/proto/check").current_dir(workspace_root()).status()?;
    if !proto.success() {
        bail!("the proto check (buf lint / breaking, tools/proto/check) failed");
    }
    Ok(())
}
