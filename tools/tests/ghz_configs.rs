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
