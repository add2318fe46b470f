//! Progress while the sale runs: the timeline sampled every second ([`sample`]) and the live
//! display on a terminal, one bar of finished users and a line of stage counts and rates.

use std::{
    io::IsTerminal,
    sync::{Arc, Mutex},
    time::Duration,
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ticketing_proto::v1::{self as pb, inventory_service_client::InventoryServiceClient};

use super::{
    config::SimConfig,
    ctx::Ctx,
    stats::{Sample, Stats},
};

/// How often the timeline is sampled (and the progress display refreshed).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Shown only on a terminal and unless disabled.
#[derive(Clone)]
pub struct Display {
    bars: Option<(ProgressBar, ProgressBar)>,
    last: Arc<Mutex<Option<Sample>>>,
}

impl Display {
    /// Bars for `config.users` users and `capacity` seats, when shown at all.
    pub fn new(config: &SimConfig, capacity: u64) -> Self {
        if !config.progress || !std::io::stdout().is_terminal() {
            return Self { bars: None, last: Arc::default() };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(4));
        let users = multi.add(ProgressBar::new(u64::from(config.users)));
        users.set_style(
            ProgressStyle::with_template("users {bar:30.cyan} {pos}/{len} done  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let seats = multi.add(ProgressBar::new(capacity));
        seats.set_style(
            ProgressStyle::with_template("seats {bar:30.green} {pos}/{len} sold  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self { bars: Some((users, seats)), last: Arc::default() }
    }

    /// Shows `sample`, with rates since the one before.
    pub fn update(&self, stats: &Stats, sample: &Sample) {
        let Some((users, seats)) = &self.bars else { return };
        let previous = self.last.lock().ok().and_then(|mut last| last.replace(sample.clone()));
        let rate = |now: u64, before: Option<u64>, dt: f64| {
            before.map_or(0.0, |b| now.saturating_sub(b) as f64 / dt.max(0.001))
        };
        let dt = previous.as_ref().map_or(1.0, |p| sample.t - p.t);
        users.set_position(Stats::get(&stats.stages.finished));
        users.set_message(format!(
            "t={:+.0}s joined {} ({:.0}/s) queue {} admitted {} ({:.0}/s) holds {} paid {} ({:.0}/s) errors {}",
            sample.t,
            sample.joined,
            rate(sample.joined, previous.as_ref().map(|p| p.joined), dt),
            sample.queue_length,
            sample.admitted,
            rate(sample.admitted, previous.as_ref().map(|p| p.admitted), dt),
            sample.holds,
            sample.paid,
            rate(sample.paid, previous.as_ref().map(|p| p.paid), dt),
            Stats::get(&stats.stages.errors),
        ));
        seats.set_position(sample.inventory_sold);
        seats.set_message(format!("held {} free {}", sample.inventory_held, sample.inventory_free));
    }

    /// Leaves the bars as they are on the terminal.
    pub fn finish(&self) {
        if let Some((users, seats)) = &self.bars {
            users.abandon();
            seats.abandon();
        }
    }
}

/// Samples the timeline every second until `done`, feeding the progress display.
pub async fn sample(ctx: Arc<Ctx>, progress: Display, mut done: tokio::sync::watch::Receiver<bool>) {
    let mut inventory = InventoryServiceClient::new(ctx.channels[0].clone());
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.changed() => return,
        }
        let availability = inventory
            .get_availability(pb::GetAvailabilityRequest { event_id: ctx.event.event_id.clone() })
            .await
            .map(tonic::Response::into_inner)
            .ok();
        let sum = |f: fn(&pb::ZoneAvailability) -> u32| {
            availability.as_ref().map_or(0, |a| a.zones.iter().map(|z| u64::from(f(z))).sum())
        };
        let s = &ctx.stats.stages;
        let sample = Sample {
            t: ctx.stats.since_open(),
            joined: Stats::get(&s.joined),
            admitted: Stats::get(&s.admitted),
            holds: Stats::get(&s.held),
            paid: Stats::get(&s.paid),
            queue_length: Stats::get(&s.queue_length),
            inventory_held: sum(|z| z.held),
            inventory_sold: sum(|z| z.sold),
            inventory_free: if availability.is_some() { sum(|z| z.free) } else { u64::MAX },
            users_in_flight: Stats::get(&s.watching)
                .saturating_sub(Stats::get(&s.finished).saturating_sub(Stats::get(&s.join_failed))),
        };
        progress.update(&ctx.stats, &sample);
        if let Ok(mut timeline) = ctx.stats.timeline.lock() {
            timeline.push(sample);
        }
    }
}
