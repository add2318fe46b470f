//! Users arriving: each Joins at its arrival instant (a share in the pre-queue before the
//! opening, the rest at the opening or over a ramp), with bounded concurrency, and is handed
//! to the dispatcher's line.

use std::{sync::Arc, time::Instant};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    config::SimConfig,
    ctx::{Ctx, token},
    line::{Arrival, JOIN_CONCURRENCY},
    retry,
    stats::Stats,
    user,
};

/// When user `index` arrives, relative to the opening.
fn arrival(config: &SimConfig, index: u32) -> f64 {
    let pre = pre_queue_users(config);
    if index < pre {
        // Evenly over the pre-queue window, which ends half a second before opening.
        let window = (config.open_in_secs - 0.5).max(0.1) * 0.9;
        -(config.open_in_secs - 0.5).max(0.1) + window * f64::from(index) / f64::from(pre.max(1))
    } else {
        let rest = config.users - pre;
        config.ramp_secs * f64::from(index - pre) / f64::from(rest.max(1))
    }
}

/// How many users join before the opening: the first ones.
fn pre_queue_users(config: &SimConfig) -> u32 {
    (f64::from(config.users) * config.prequeue_share).round() as u32
}

/// Starts the arrivals: Join at each user's arrival instant, at most [`JOIN_CONCURRENCY`] in
/// flight, each joined user sent to `arrived`, and [`Arrival::PreQueueComplete`] once every
/// pre-queue join has answered. Stops at `deadline`.
pub fn spawn(
    ctx: Arc<Ctx>,
    opened_at: Instant,
    deadline: tokio::time::Instant,
    arrived: mpsc::UnboundedSender<Arrival>,
) -> JoinHandle<()> {
    let pre_window = pre_queue_users(&ctx.config);
    tokio::spawn(async move {
        let joins = Arc::new(tokio::sync::Semaphore::new(JOIN_CONCURRENCY));
        for index in 0..ctx.config.users {
            if index == pre_window {
                // Every pre-queue join has answered: its users can be put in order.
                let _ = joins.acquire_many(JOIN_CONCURRENCY as u32).await;
                let _ = arrived.send(Arrival::PreQueueComplete);
            }
            let offset = arrival(&ctx.config, index);
            let at = if offset < 0.0 {
                opened_at.checked_sub(std::time::Duration::from_secs_f64(-offset)).unwrap_or(opened_at)
            } else {
                opened_at + std::time::Duration::from_secs_f64(offset)
            };
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let Ok(permit) = joins.clone().acquire_owned().await else { break };
            Stats::bump(&ctx.stats.stages.arrived);
            let (ctx, arrived) = (ctx.clone(), arrived.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let token = token(&ctx, index);
                match tokio::time::timeout_at(deadline, user::join(&ctx, index, token)).await {
                    Ok(Ok(joined)) => {
                        Stats::bump(&ctx.stats.stages.joined);
                        let _ = arrived.send(Arrival::Joined(joined));
                    }
                    Ok(Err(status)) => {
                        Stats::bump(&ctx.stats.stages.join_failed);
                        Stats::bump(&ctx.stats.stages.finished);
                        ctx.error(index, format!("Join: {}", retry::brief(&status)));
                    }
                    Err(_) => {}
                }
            });
        }
        // Wait for the last joins, then close the queue.
        let _ = joins.acquire_many(JOIN_CONCURRENCY as u32).await;
        if pre_window >= ctx.config.users {
            let _ = arrived.send(Arrival::PreQueueComplete);
        }
    })
}
