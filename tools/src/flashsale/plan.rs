//! What each simulated user will do, drawn from the configured mix.

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::config::SimConfig;

/// What a user does once it holds seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Pays with a good card.
    Buy,
    /// Releases the hold (ReleaseHold) and leaves.
    Release,
    /// Walks away; the hold must expire by itself.
    LetExpire,
    /// Pays with a declined card, then with a good card under a new key.
    Declined,
    /// Pays with a card slower than the hold's TTL (`pm_card_slow_<ms>`).
    Slow,
    /// Sends the same Pay twice at once with one idempotency key.
    Replay,
}

/// A user's plan, drawn from the configured mix.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub behaviour: Behaviour,
    /// Aims at popular seats of the seat map instead of HoldBestAvailable.
    pub contention: bool,
    pub quantity: u32,
}

impl Plan {
    /// The plan of user `index`, reproducible from the seed.
    pub fn draw(config: &SimConfig, index: u32) -> Self {
        let mut rng =
            StdRng::seed_from_u64(config.seed ^ (u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mix = &config.mix;
        let r: f64 = rng.random();
        let behaviour = [
            (mix.release, Behaviour::Release),
            (mix.let_expire, Behaviour::LetExpire),
            (mix.declined, Behaviour::Declined),
            (mix.slow, Behaviour::Slow),
            (mix.replay, Behaviour::Replay),
        ]
        .iter()
        .scan(0.0, |acc, (share, b)| {
            *acc += share;
            Some((*acc, *b))
        })
        .find(|(upto, _)| r < *upto)
        .map_or(Behaviour::Buy, |(_, b)| b);
        let contention = rng.random::<f64>() < mix.contention;
        let q: f64 = rng.random();
        let quantity = if q < 0.4 {
            1
        } else if q < 0.8 {
            2
        } else if q < 0.9 {
            3
        } else {
            4
        };
        Self { behaviour, contention, quantity: quantity.min(config.max_tickets_per_user).max(1) }
    }
}
