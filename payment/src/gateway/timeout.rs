//! The one timeout layer in front of the provider: configured once (`PROVIDER_TIMEOUT_MS`),
//! so no call site can forget it, and a provider that hangs turns into an unknown outcome
//! the caller records, instead of a request that never ends.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use uuid::Uuid;

use super::{ChargeOutcome, GatewayError, LedgerCharge, LedgerCursor, PaymentGateway};

/// A provider whose every call gives up after `timeout` with [`GatewayError::Timeout`].
/// Giving up drops the call, not the provider's work: a charge may still capture, which is
/// why callers record a timed-out charge as unknown.
pub struct TimeoutGateway {
    inner: Arc<dyn PaymentGateway>,
    timeout: Duration,
}

impl TimeoutGateway {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn PaymentGateway>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    async fn bounded<T>(
        &self,
        call: &'static str,
        future: BoxFuture<'_, Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(answer) => answer,
            Err(_) => {
                metrics::counter!("payment_provider_timeouts_total", "call" => call).increment(1);
                Err(GatewayError::Timeout(self.timeout))
            }
        }
    }
}

impl PaymentGateway for TimeoutGateway {
    fn charge<'a>(
        &'a self,
        payment_id: Uuid,
        amount_cents: i64,
        currency: &'a str,
        payment_method: &'a str,
    ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(
            self.bounded("charge", self.inner.charge(payment_id, amount_cents, currency, payment_method)),
        )
    }

    fn refund<'a>(&'a self, charge_id: &'a str) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(self.bounded("refund", self.inner.refund(charge_id)))
    }

    fn lookup(&self, payment_id: Uuid) -> BoxFuture<'_, Result<Option<LedgerCharge>, GatewayError>> {
        Box::pin(self.bounded("lookup", self.inner.lookup(payment_id)))
    }

    fn charges<'a>(
        &'a self,
        after: Option<&'a LedgerCursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<LedgerCharge>, GatewayError>> {
        Box::pin(self.bounded("charges", self.inner.charges(after, limit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider that never answers.
    struct Hanging;

    impl PaymentGateway for Hanging {
        fn charge<'a>(
            &'a self,
            _: Uuid,
            _: i64,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
            Box::pin(std::future::pending())
        }
        fn refund<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<String, GatewayError>> {
            Box::pin(std::future::pending())
        }
        fn lookup(&self, _: Uuid) -> BoxFuture<'_, Result<Option<LedgerCharge>, GatewayError>> {
            Box::pin(std::future::pending())
        }
        fn charges<'a>(
            &'a self,
            _: Option<&'a LedgerCursor>,
            _: u32,
        ) -> BoxFuture<'a, Result<Vec<LedgerCharge>, GatewayError>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_gives_up_after_the_timeout() {
        let timeout = Duration::from_secs(20);
        let gateway = TimeoutGateway::new(Arc::new(Hanging), timeout);
        let timed_out =
            |result: Result<_, GatewayError>| matches!(result, Err(GatewayError::Timeout(t)) if t == timeout);
        assert!(timed_out(gateway.charge(Uuid::nil(), 1, "EUR", "pm_card_ok").await.map(|_| ())));
        assert!(timed_out(gateway.refund("ch_1").await.map(|_| ())));
        assert!(timed_out(gateway.lookup(Uuid::nil()).await.map(|_| ())));
        assert!(timed_out(gateway.charges(None, 10).await.map(|_| ())));
    }
}
