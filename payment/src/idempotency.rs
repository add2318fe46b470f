//! A Pay's idempotency key: what it answers now, the refusal stored before any money moves,
//! and the claim that writes the key together with its `charging` payment.

use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use ticketing_proto::v1;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    checkout::PayCommand,
    commit::CommitGroups,
    error::Error,
    settle::{ONE_LIVE_PER_HOLD, unique_violation},
    store::{self, PAYMENT_COLUMNS, PaymentRecord, sql},
};

/// Claims tried when the hold's live payment settled between our conflict and our look at
/// it (it was declined or refunded, so the hold is free again).
const CLAIM_ATTEMPTS: usize = 3;

/// Where a key stands.
pub enum KeyState {
    /// Never used.
    Unused,
    /// Finished: its stored answer (a response, or a stored failure as the error).
    Done(Box<Result<v1::PayResponse, Error>>),
    /// Claimed and not finished, with its payment (none for rows of old versions that
    /// claimed the key before writing the payment).
    InFlight(Option<Box<PaymentRecord>>),
}

/// The state of `key`; a key first used for another request is refused.
pub async fn key_state(db: &DatabaseConnection, key: &str, hash: &[u8]) -> Result<KeyState, Error> {
    let Some(row) = db
        .query_one_raw(sql(
            "SELECT request_hash, state, response, error_code, error_message, error_reason \
             FROM idempotency_keys WHERE key = $1",
            [key.into()],
        ))
        .await?
    else {
        return Ok(KeyState::Unused);
    };
    let stored_hash: Vec<u8> = row.try_get("", "request_hash")?;
    if stored_hash != hash {
        return Err(Error::IdempotencyKeyReused);
    }
    let state: String = row.try_get("", "state")?;
    if state != "done" {
        let payment = db
            .query_one_raw(sql(
                &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = $1"),
                [key.into()],
            ))
            .await?;
        return Ok(KeyState::InFlight(
            payment.as_ref().map(PaymentRecord::from_row).transpose()?.map(Box::new),
        ));
    }
    let response: Option<Vec<u8>> = row.try_get("", "response")?;
    if let Some(bytes) = response {
        return Ok(KeyState::Done(Box::new(Ok(v1::PayResponse::decode(bytes.as_slice())?))));
    }
    Ok(KeyState::Done(Box::new(Err(Error::StoredFailure {
        code: row.try_get::<Option<i32>>("", "error_code")?.unwrap_or(Code::Internal as i32),
        message: row.try_get::<Option<String>>("", "error_message")?.unwrap_or_default(),
        reason: row.try_get("", "error_reason")?,
    }))))
}

/// Stores seat-lock's refusal as the final answer of the command's key. `false` when a
/// concurrent request took the key first (then that request's answer counts).
pub async fn store_failure(
    db: &DatabaseConnection,
    command: &PayCommand,
    hash: &[u8],
    status: &Status,
) -> Result<bool, Error> {
    let reason = service_runtime::status::reason(status).map(|(reason, _)| reason);
    let stored = db
        .execute_raw(sql(
            "INSERT INTO idempotency_keys (key, request_hash, state, error_code, error_message, error_reason) \
             VALUES ($1, $2, 'done', $3, $4, $5) ON CONFLICT (key) DO NOTHING",
            [
                command.idempotency_key.as_str().into(),
                hash.to_vec().into(),
                (status.code() as i32).into(),
                status.message().into(),
                reason.into(),
            ],
        ))
        .await?;
    Ok(stored.rows_affected() == 1)
}

/// How a claim ended.
pub enum Claim {
    /// The key is ours and the `charging` payment committed: the provider may be called.
    Claimed(Box<PaymentRecord>),
    /// A concurrent request with this key got there first; nothing written.
    KeyTaken,
    /// Another key's live payment (its id, unless it kept changing while we looked) holds
    /// this hold; nothing written, the key stays unused.
    HoldTaken(Option<Uuid>),
}

/// In one statement, claims the command's key (`in_flight`) and writes its `charging`
/// payment (its method, first attempt, the booking id the hold will be confirmed under, and
/// `owner`, this process's instance id). This commit is what precedes the provider call.
pub async fn claim(
    writes: &CommitGroups,
    db: &DatabaseConnection,
    command: &PayCommand,
    hash: &[u8],
    hold: &v1::Hold,
    booking_id: Uuid,
    owner: Uuid,
) -> Result<Claim, Error> {
    for _ in 0..CLAIM_ATTEMPTS {
        let payment_id = Uuid::now_v7();
        let claimed = writes
            .query_one(sql(
                &format!(
                    "WITH claimed AS (INSERT INTO idempotency_keys (key, request_hash, state) \
                     VALUES ($2, $9, 'in_flight') ON CONFLICT (key) DO NOTHING RETURNING key) \
                     INSERT INTO payments (payment_id, idempotency_key, event_id, hold_id, user_id, \
                     amount_cents, currency, status, reserved_booking_id, payment_method, charge_attempts, owner_instance) \
                     SELECT $1, key, $3, $4, $5, $6, $7, 'charging', $8, $10, 1, $11 FROM claimed \
                     RETURNING {PAYMENT_COLUMNS}"
                ),
                [
                    payment_id.into(),
                    command.idempotency_key.as_str().into(),
                    command.event_id.into(),
                    command.hold_id.into(),
                    command.user_id.as_str().into(),
                    hold.total_price_cents.into(),
                    hold.currency.as_str().into(),
                    booking_id.into(),
                    hash.to_vec().into(),
                    command.payment_method.as_str().into(),
                    owner.into(),
                ],
            ))
            .await;
        match claimed {
            Ok(Some(row)) => return Ok(Claim::Claimed(Box::new(PaymentRecord::from_row(&row)?))),
            Ok(None) => return Ok(Claim::KeyTaken),
            Err(error) if unique_violation(&error).is_some_and(|(c, _)| c == ONE_LIVE_PER_HOLD) => {
                if let Some(payment_id) = store::live_payment_of_hold(db, command.hold_id).await? {
                    return Ok(Claim::HoldTaken(Some(payment_id)));
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    // The hold's live payment keeps settling and reappearing under us; refuse, not loop.
    Ok(Claim::HoldTaken(None))
}
