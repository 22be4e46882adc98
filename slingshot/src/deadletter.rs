//! Dead letters: listing a service's dead-letter queue and replaying its messages into the inbound queue.
//!
//! Both work through the broker seam with the messages held unacknowledged
//! while they are inspected, so a crash midway loses nothing: whatever was not
//! replayed returns to the dead-letter queue.

use crate::broker::{Broker, Delivery, Message};
use crate::error::Error;
use crate::protocol::{self, dead_letter_queue, parse_id, FailureRecord};

/// One dead-lettered message, as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The request ID, if the body is one.
    pub id: Option<u64>,
    /// The body (for malformed messages, what made them malformed).
    pub body: Vec<u8>,
    /// `malformed`, `process-error`, `panic`, `storage`, `database` or `broker`.
    pub kind: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: i64,
    /// The service that gave up.
    pub service: String,
    /// When, in Unix seconds.
    pub failed_at: i64,
}

impl DeadLetter {
    fn of(message: &Message) -> Self {
        let record = FailureRecord::decode(message);
        DeadLetter {
            id: parse_id(&message.body).ok(),
            body: message.body.to_vec(),
            kind: record.kind,
            error: record.error,
            attempts: record.attempts,
            service: record.service,
            failed_at: record.failed_at,
        }
    }
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every one.
    All,
    /// Those whose body is one of these IDs.
    Ids(Vec<u64>),
}

/// Takes every message of `queue`, holding them unacknowledged.
async fn take_all(broker: &dyn Broker, queue: &str) -> Result<Vec<Delivery>, Error> {
    let mut held = Vec::new();
    while let Some(delivery) = broker.get(queue).await? {
        held.push(delivery);
    }
    Ok(held)
}

/// Returns held messages to their queue, keeping their order.
async fn put_back(held: Vec<Delivery>) -> Result<(), Error> {
    for delivery in held.into_iter().rev() {
        delivery.acker.reject(true).await?;
    }
    Ok(())
}

/// The dead letters of the service consuming `inbound`, oldest first. They stay in the queue.
pub async fn list(broker: &dyn Broker, inbound: &str) -> Result<Vec<DeadLetter>, Error> {
    let held = take_all(broker, &dead_letter_queue(inbound)).await?;
    let letters = held.iter().map(|d| DeadLetter::of(&d.message)).collect();
    put_back(held).await?;
    Ok(letters)
}

/// Sends the selected dead letters back to `inbound` with fresh attempts,
/// each removed from the dead-letter queue only after the broker confirmed
/// its replay. Returns how many were replayed and how many stay.
pub async fn replay(broker: &dyn Broker, inbound: &str, selection: &Selection) -> Result<(usize, usize), Error> {
    let held = take_all(broker, &dead_letter_queue(inbound)).await?;
    let (mut replayed, mut kept) = (0, Vec::new());
    let mut held = held.into_iter();
    while let Some(delivery) = held.next() {
        let chosen = match selection {
            Selection::All => true,
            Selection::Ids(ids) => parse_id(&delivery.message.body).is_ok_and(|id| ids.contains(&id)),
        };
        if !chosen {
            kept.push(delivery);
            continue;
        }
        let message = protocol::replay(&delivery.message);
        if let Err(e) = broker.publish(inbound, message).await {
            // Nothing more is replayed; everything not yet replayed stays.
            kept.push(delivery);
            kept.extend(held);
            let left = kept.len();
            put_back(kept).await?;
            return Err(Error::ReplayStopped {
                replayed,
                left,
                cause: e,
            });
        }
        delivery.acker.ack().await?;
        replayed += 1;
    }
    let left = kept.len();
    put_back(kept).await?;
    Ok((replayed, left))
}
