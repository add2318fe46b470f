//! `bench --ghz-dir`: the checked-in ghz configs filled in with a real event, pass and hold.

use std::{path::Path, time::Duration};

use anyhow::Context;
use ticketing_proto::v1::{self as pb, seat_lock_service_client::SeatLockServiceClient};
use tonic::transport::Channel;

use super::{
    config::{Tokens, token_array},
    sale::{PassHolder, ROWS, SEATS_PER_ROW, collect_passes, create_event},
};
use crate::identity::{AUTHORIZATION, Identity};

/// Makes a fresh event with one user's pass and one hold (seat `A-500-100`) on it, and prints
/// them: what the ghz configs need.
pub async fn ghz_files(channel: &Channel, identity: &Identity, dir: &Path) -> anyhow::Result<()> {
    let event = create_event(channel, identity, "Bench: ghz configs", 10, 3_600, 1_000).await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pass = collect_passes(channel, identity, &event.event_id, 1)
        .await?
        .pop()
        .context("no pass for the ghz files")?;
    let hold = SeatLockServiceClient::new(channel.clone())
        .hold_seats(identity.as_user(
            &pass.user_id,
            pb::HoldSeatsRequest {
                pass_token: pass.token.clone(),
                event_id: event.event_id.clone(),
                user_id: pass.user_id.clone(),
                seat_ids: vec![format!("A-{ROWS}-{SEATS_PER_ROW}")],
            },
        ))
        .await
        .context("HoldSeats for the ghz files")?
        .into_inner();
    println!(
        "for the ghz configs: EVENT_ID {} PASS_USER_ID {} PAY_HOLD_ID {}\nPASS_TOKEN {}",
        event.event_id, pass.user_id, hold.hold_id, pass.token
    );
    write_ghz_files(dir, identity, &event.event_id, &pass, &hold.hold_id, &hold.user_id)
}

/// Fills the checked-in ghz configs (`tools/ghz/*.json`) with a real event, pass and hold,
/// and their users' tokens: `PASS_USER_TOKEN` and `PAY_USER_TOKEN`, and for `USER_TOKENS`
/// (the join of unique users `ghz-user-<n>`) a metadata array with one token per request.
/// The files hold tokens, so only their owner may read them.
fn write_ghz_files(
    dir: &Path,
    identity: &Identity,
    event_id: &str,
    pass: &PassHolder,
    hold_id: &str,
    hold_user: &str,
) -> anyhow::Result<()> {
    let source = crate::stack::workspace_root().join("tools/ghz");
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(&source)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Some(name) = path.file_name()
        {
            let bearer = |user: &str| identity.token(user, false, crate::identity::TOOL_TOKEN_TTL);
            let text = std::fs::read_to_string(&path)?
                .replace("EVENT_ID", event_id)
                .replace("PASS_USER_TOKEN", &bearer(&pass.user_id))
                .replace("PAY_USER_TOKEN", &bearer(hold_user))
                .replace("PASS_TOKEN", &pass.token)
                .replace("PASS_USER_ID", &pass.user_id)
                .replace("PAY_HOLD_ID", hold_id)
                .replace("PAY_USER_ID", hold_user);
            let mut config: serde_json::Value = serde_json::from_str(&text)?;
            if config["metadata"][AUTHORIZATION] == "Bearer USER_TOKENS" {
                let total = config["total"].as_u64().unwrap_or(1);
                config["metadata"] =
                    token_array(identity, total, Tokens::PerUser, |n| format!("ghz-user-{n}"));
            }
            crate::identity::write_private(&dir.join(name), &serde_json::to_string_pretty(&config)?)?;
        }
    }
    println!("ghz configs with a real event, pass and hold written to {}", dir.display());
    Ok(())
}
