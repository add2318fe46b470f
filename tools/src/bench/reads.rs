//! Scenario 4, reads from inventory's memory: `GetAvailability` and `GetSeatMap` of the
//! 50,000-seat event.

use super::config::{BenchConfig, Row, RowMaker, Scenario, result_text};

/// Reads `event_id`'s availability and seat map under load, into `rows` and `scenarios`.
pub async fn run(
    config: &BenchConfig,
    event_id: &str,
    row: &RowMaker<'_>,
    rows: &mut Vec<Row>,
    scenarios: &mut Vec<Scenario>,
) -> anyhow::Result<()> {
    for (name, call, total) in [
        ("GetAvailability", "ticketing.v1.InventoryService/GetAvailability", config.read_requests),
        ("GetSeatMap", "ticketing.v1.InventoryService/GetSeatMap", config.read_requests / 2),
    ] {
        let spec = config.spec(
            name,
            call,
            serde_json::json!({"event_id": event_id}),
            None,
            config.concurrency,
            total,
        )?;
        let read = config.measure(&spec, None).await?;
        rows.push(row(
            &format!("{name} (50,000 seats): {} clients", config.concurrency),
            result_text(&read.main, "req", read.main.rps),
            read.ratio_text(),
            "",
            None,
        ));
        scenarios.push(Scenario { name: name.into(), report: read, extra: serde_json::Value::Null });
    }
    Ok(())
}
