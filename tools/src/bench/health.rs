//! Scenario 2b, the like-for-like pair: `Health/Check` without a token (every row's
//! baseline) and with a fresh token on every call; the health service sits behind the same
//! auth layer as every RPC, so the difference is one full token verification.

use super::config::{BenchConfig, Row, RowMaker, Scenario, Tokens, result_text, token_array};
use crate::loadgen;

/// `Health/Check` without a token (the baseline every row has), then with a fresh token on
/// every call, same clients and count: the difference is one full token verification per
/// call.
pub async fn run(config: &BenchConfig, row: &RowMaker<'_>) -> anyhow::Result<(Row, Scenario)> {
    let total = config.join_requests.min(config.hold_requests).max(1);
    let tokens = token_array(&config.identity, total, Tokens::FreshPerCall, |n| format!("health-{n}"));
    let spec = config.spec(
        "Health/Check with a fresh token per call",
        loadgen::HEALTH_CHECK,
        serde_json::json!({}),
        Some(tokens),
        config.concurrency,
        total,
    )?;
    let health = config.measure(&spec, None).await?;
    let errors = health.main.count - health.main.ok();
    let result = format!("{}; {errors} errors", result_text(&health.main, "req", health.main.rps));
    let row = row(
        &format!(
            "Health/Check with a fresh token per call (a full Ed25519 verification each): {} clients",
            config.concurrency
        ),
        result,
        health.ratio_text(),
        "",
        None,
    );
    Ok((
        row,
        Scenario { name: "Health/Check with tokens".into(), report: health, extra: serde_json::Value::Null },
    ))
}
