//! Group commit: the single-statement writes of concurrent payments share transactions, so
//! one WAL flush (what a commit costs most) serves many payments instead of one.
//!
//! A caller hands over one statement and gets its result only after the transaction that
//! ran it has committed, so what it then does (charge, answer the user) rests on durable
//! state exactly as after a commit of its own. A dispatcher gathers the waiting statements
//! (at most [`MAX_GROUP`]) into a group and runs up to `groups` groups at once, each in one
//! transaction on a pooled connection. While those commit, new statements queue and form
//! the next group, so groups grow with load and a lone request still commits at once.
//!
//! When a statement of a group fails (a unique violation, say), the transaction rolls back
//! and every statement of the group runs again on its own, so a failure is seen only by
//! its own caller. A failed commit is reported to every caller of its group: as with any
//! failed commit, the outcome is unknown, and the callers treat it so (the payment stays
//! for recovery).

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, QueryResult, Statement, TransactionTrait};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most statements in one group transaction: enough to share one WAL flush among many
/// payments, few enough that replaying a rolled back group one by one stays short.
pub const MAX_GROUP: usize = 64;
/// Statements waiting for a group. Callers beyond it wait to enqueue; the service's
/// concurrency limit keeps them far fewer anyway.
const QUEUE_CAPACITY: usize = 4_096;

/// What a caller gets back: the statement's first row, if any.
type Answer = Result<Option<QueryResult>, DbErr>;

struct Job {
    statement: Statement,
    reply: oneshot::Sender<Answer>,
}

/// Runs statements in shared transactions; cheap to clone.
#[derive(Clone)]
pub struct CommitGroups {
    jobs: mpsc::Sender<Job>,
}

impl CommitGroups {
    /// Starts the dispatcher, running at most `groups` transactions on `db` at once. It stops
    /// when the last clone is dropped.
    pub fn start(db: DatabaseConnection, groups: usize) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(dispatch(db, queue, groups.max(1)));
        Self { jobs }
    }

    /// Runs `statement` in the next group and returns its first row once that group has
    /// committed.
    pub async fn query_one(&self, statement: Statement) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { statement, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> DbErr {
    DbErr::Custom("the commit group dispatcher has stopped".into())
}

async fn dispatch(db: DatabaseConnection, mut queue: mpsc::Receiver<Job>, groups: usize) {
    let running = Arc::new(Semaphore::new(groups));
    while let Some(first) = queue.recv().await {
        // Waiting for a free slot is what lets the next group fill up under load.
        let Ok(slot) = Arc::clone(&running).acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let db = db.clone();
        tokio::spawn(async move {
            run(&db, group).await;
            drop(slot);
        });
    }
}

/// How running a group together ended.
enum Together {
    Committed(Vec<Option<QueryResult>>),
    /// The commit itself failed: its outcome is unknown.
    CommitFailed(DbErr),
    /// Nothing was committed (a statement failed, or no transaction could start).
    RolledBack,
}

async fn run(db: &DatabaseConnection, group: Vec<Job>) {
    metrics::histogram!("payment_commit_group_size").record(group.len() as f64);
    if group.len() > 1 {
        match together(db, &group).await {
            Together::Committed(rows) => {
                for (job, row) in group.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(row));
                }
                return;
            }
            Together::CommitFailed(error) => {
                tracing::error!(error = %error, statements = group.len(), "group commit failed");
                for job in group {
                    let _ = job.reply.send(Err(error.clone()));
                }
                return;
            }
            Together::RolledBack => metrics::counter!("payment_commit_groups_replayed_total").increment(1),
        }
    }
    for job in group {
        let answer = db.query_one_raw(job.statement).await;
        let _ = job.reply.send(answer);
    }
}

async fn together(db: &DatabaseConnection, group: &[Job]) -> Together {
    let Ok(txn) = db.begin().await else {
        return Together::RolledBack;
    };
    let mut rows = Vec::with_capacity(group.len());
    for job in group {
        match txn.query_one_raw(job.statement.clone()).await {
            Ok(row) => rows.push(row),
            Err(_) => {
                // Failed either way: an aborted transaction never commits.
                let _ = txn.rollback().await;
                return Together::RolledBack;
            }
        }
    }
    match txn.commit().await {
        Ok(()) => Together::Committed(rows),
        Err(error) => Together::CommitFailed(error),
    }
}
