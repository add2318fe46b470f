//! The ghz configs in `tools/ghz/` stay runnable: each names a method of the contract, and its
//! data, with the templates rendered, decodes into that method's request message.

use std::path::Path;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use tools::loadgen::{self, CallData, config::GhzConfig};

fn configs() -> anyhow::Result<Vec<std::path::PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ghz");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

#[test]
fn every_config_names_a_method_and_its_data_decodes() -> anyhow::Result<()> {
    let pool = loadgen::descriptor_pool()?;
    let files = configs()?;
    for expected in ["join", "hold-seats-unique", "hold-seats-contention", "pay-replays", "get-seat-map"] {
        assert!(
            files.iter().any(|f| f.file_stem().is_some_and(|s| s == expected)),
            "tools/ghz/{expected}.json is missing"
        );
    }
    for file in &files {
        let config = GhzConfig::load(file)?;
        let call = config.call.clone().unwrap_or_default();
        let method =
            loadgen::find_method(&pool, &call).map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
        assert!(
            config.insecure.unwrap_or(false),
            "{}: ghz needs \"insecure\": true for plaintext",
            file.display()
        );
        assert!(config.total.unwrap_or(0) > 0, "{}: a bounded \"total\"", file.display());
        let data =
            CallData::new(method.clone(), config.data.as_ref().unwrap_or(&serde_json::json!({})), None)
                .map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
        for n in 0..config.total.unwrap_or(1).min(64) {
            let bytes = data.encode(n, 0)?;
            let message = DynamicMessage::decode(method.input(), bytes)?;
            assert_eq!(message.descriptor().full_name(), method.input().full_name());
            // Every string field the file sets arrives non-empty (no template left unrendered).
            for (field, value) in message.fields() {
                if let Value::String(text) = value {
                    assert!(
                        !text.is_empty() && !text.contains("{{"),
                        "{}: field {} = {text:?}",
                        file.display(),
                        field.name()
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn seat_templates_give_the_designed_seats() -> anyhow::Result<()> {
    let pool = loadgen::descriptor_pool()?;
    let read = |name: &str| -> anyhow::Result<(GhzConfig, CallData)> {
        let config = GhzConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("ghz").join(name))?;
        let method = loadgen::find_method(&pool, config.call.as_deref().unwrap_or_default())?;
        let data = CallData::new(method, config.data.as_ref().unwrap_or(&serde_json::Value::Null), None)?;
        Ok((config, data))
    };
    let seat = |data: &CallData, n: u64| -> anyhow::Result<String> {
        let json = data.render_json(n)?;
        Ok(json["seatIds"][0].as_str().unwrap_or_default().to_owned())
    };
    // Unique: every request asks for another seat.
    let (config, data) = read("hold-seats-unique.json")?;
    let total = config.total.unwrap_or(0);
    let seats: std::collections::HashSet<String> =
        (0..total).map(|n| seat(&data, n)).collect::<anyhow::Result<_>>()?;
    assert_eq!(seats.len() as u64, total);
    // Contention: the seats come from a range smaller than the request count.
    let (config, data) = read("hold-seats-contention.json")?;
    let total = config.total.unwrap_or(0);
    let seats: std::collections::HashSet<String> =
        (0..total * 20).map(|n| seat(&data, n)).collect::<anyhow::Result<_>>()?;
    assert!(seats.len() as u64 <= total / 2, "{} distinct seats for {total} requests", seats.len());
    Ok(())
}

#[test]
fn the_baseline_method_is_in_the_pool() -> anyhow::Result<()> {
    let pool = loadgen::descriptor_pool()?;
    let method = loadgen::find_method(&pool, loadgen::HEALTH_CHECK)?;
    assert_eq!(method.input().full_name(), "grpc.health.v1.HealthCheckRequest");
    assert!(loadgen::find_method(&pool, "ticketing.v1.SeatLockService.HoldSeats").is_ok());
    assert!(loadgen::find_method(&pool, "ticketing.v1.SeatLockService/Nope").is_err());
    Ok(())
}

/// Services whose every method needs a caller's token (the catalogue reads and the health
/// check need none).
const NEEDS_TOKEN: [&str; 4] = [
    "ticketing.v1.AdmissionService",
    "ticketing.v1.SeatLockService",
    "ticketing.v1.PaymentService",
    "ticketing.v1.NotifierService",
];

#[test]
fn every_config_of_a_user_facing_rpc_sends_a_bearer_token() -> anyhow::Result<()> {
    for file in configs()? {
        let config = GhzConfig::load(&file)?;
        let call = config.call.clone().unwrap_or_default();
        if !NEEDS_TOKEN.iter().any(|service| call.starts_with(service)) {
            continue;
        }
        let authorization = config.metadata.as_ref().and_then(|m| m["authorization"].as_str());
        assert!(
            authorization.is_some_and(|value| value.starts_with("Bearer ")),
            "{}: \"metadata\": {{\"authorization\": \"Bearer …\"}} is missing",
            file.display()
        );
    }
    Ok(())
}

/// The subject of a compact JWT (read without verifying: the services verify).
fn subject(token: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap_or_default();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    Ok(claims["sub"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn stack_token_prints_one_token_or_writes_a_ghz_metadata_array() -> anyhow::Result<()> {
    let state = std::env::temp_dir().join(format!("stack-token-{}", uuid::Uuid::new_v4().simple()));
    let stack = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stack"))
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .output()
    };
    let one = stack(&["token", "--user", "alice", "--admin", "--ttl-secs", "60"])?;
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let token = String::from_utf8(one.stdout)?.trim().to_owned();
    assert_eq!(subject(&token)?, "alice");
    // The token verifies against the JWKS the stack gives its services, with the admin scope.
    let identity = tools::identity::Identity::of_stack(&state)?;
    let claims: serde_json::Value = serde_json::from_slice(&{
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap_or_default())?
    })?;
    assert_eq!(claims["scope"], service_runtime::auth::ADMIN_SCOPE, "--admin gives the operator scope");
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tools::identity::jwks_path(&state))?)?;
    assert_eq!(jwks["keys"][0], identity.issuer().jwk(), "the key is kept across runs");

    let out = state.join("users.json");
    let many = stack(&[
        "token",
        "--users",
        "3",
        "--prefix",
        "ghz-user-",
        "--out",
        out.to_str().unwrap_or_default(),
    ])?;
    assert!(many.status.success(), "{}", String::from_utf8_lossy(&many.stderr));
    assert!(many.stdout.is_empty(), "no token on stdout");
    let array: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    let subjects: Vec<String> = array
        .iter()
        .map(|item| subject(item["authorization"].as_str().unwrap_or_default().trim_start_matches("Bearer ")))
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(subjects, ["ghz-user-0", "ghz-user-1", "ghz-user-2"]);

    // Wrong uses are refused (clap's usage error, or ours), and print no token.
    for args in [&["token"][..], &["token", "--users", "3"], &["token", "--user", "a b"]] {
        let refused = stack(args)?;
        assert!(!refused.status.success(), "{args:?}");
        assert!(refused.stdout.is_empty(), "{args:?}");
    }
    std::fs::remove_dir_all(&state).ok();
    Ok(())
}

#[test]
fn a_metadata_array_goes_round_robin_one_token_per_user() -> anyhow::Result<()> {
    let state = std::env::temp_dir().join(format!("metadata-array-{}", uuid::Uuid::new_v4().simple()));
    let identity = tools::identity::Identity::of_stack(&state)?;
    let array = tools::identity::metadata_array(&identity, 4, "user-", std::time::Duration::from_secs(60));
    let pool = loadgen::descriptor_pool()?;
    let method = loadgen::find_method(&pool, "ticketing.v1.AdmissionService/Join")?;
    let data =
        CallData::new(method, &serde_json::json!({"event_id": "e", "user_id": "{{.UserId}}"}), Some(&array))?;
    for n in 0..8u64 {
        let mut request = tonic::Request::new(());
        data.attach_metadata(n, 0, &mut request);
        let value =
            request.metadata().get("authorization").map(|v| v.to_str().unwrap_or_default().to_owned());
        let token = value.unwrap_or_default();
        assert_eq!(subject(token.trim_start_matches("Bearer "))?, format!("user-{}", n % 4), "request {n}");
        // Request n's body names the same user as its token (for n below the array's length).
        if n < 4 {
            assert_eq!(data.render_json(n)?["userId"], format!("user-{n}"));
        }
    }
    std::fs::remove_dir_all(&state).ok();
    Ok(())
}
