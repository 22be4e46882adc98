//! Dead letters: listing a service's dead-letter queue and replaying its
//! messages into the inbound queue, one message at a time.
//!
//! Both walk the queue once, in order, holding **one** delivery at a time,
//! whatever the queue's length: each dead letter is taken, then either
//! replayed (published to the inbound queue with fresh attempts) or kept
//! (published again at the tail of the dead-letter queue, so that the walk
//! can go past it), and acknowledged only once the broker confirmed that
//! publish. The walk covers the messages the queue held when it began;
//! dead letters that arrive meanwhile wait for the next one.
//!
//! What remains true:
//! - nothing is lost: a message is removed from the dead-letter queue only
//!   after its replay or its copy was confirmed;
//! - order: replays reach the inbound queue in dead-letter order, and the
//!   kept dead letters stay in their order (after any that arrived during
//!   the walk);
//! - when the broker fails midway (a refused publish, a lost connection),
//!   the walk stops with its counts ([`Stopped`]) and the message in hand
//!   goes back to the dead-letter queue: every dead letter is either
//!   replayed or still in the dead-letter queue (those the walk had passed
//!   then come after those it had not reached). If it was the
//!   acknowledgement that failed, the message in hand was replayed or copied
//!   *and* comes back: that one may be replayed twice, or listed twice.

use crate::broker::{Broker, BrokerError, Delivery, Message};
pub use crate::error::DeadLettersStopped as Stopped;
use crate::error::Error;
use crate::protocol::{self, dead_letter_queue, parse_id, FailureRecord};

/// One dead-lettered message, as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The request ID, if the body is one.
    pub id: Option<u64>,
    /// The body (for malformed messages, what made them malformed).
    pub body: Vec<u8>,
    /// Why it was dead-lettered, as its headers say.
    pub record: FailureRecord,
}

impl DeadLetter {
    fn of(message: &Message) -> Self {
        DeadLetter {
            id: parse_id(&message.body).ok(),
            body: message.body.to_vec(),
            record: FailureRecord::decode(message),
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

impl Selection {
    fn selects(&self, message: &Message) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => parse_id(&message.body).is_ok_and(|id| ids.contains(&id)),
        }
    }
}

/// What a walk did.
#[derive(Debug, Default, Clone, Copy)]
struct Walked {
    replayed: usize,
    kept: usize,
}

/// Walks the dead-letter queue of `inbound` once, in order, one delivery in
/// hand at a time: `replay` says whether to replay each dead letter (else
/// it is kept), after `seen` was shown it.
async fn walk(
    broker: &dyn Broker,
    inbound: &str,
    action: &'static str,
    mut seen: impl FnMut(&Message),
    replay: impl Fn(&Message) -> bool,
) -> Result<Walked, Stopped> {
    let queue = dead_letter_queue(inbound);
    let mut walked = Walked::default();
    let stopped = |walked: Walked, taken: usize, total: usize, in_doubt: bool, cause: BrokerError| Stopped {
        action,
        queue: queue.clone(),
        replayed: walked.replayed,
        kept: walked.kept,
        not_reached: total.saturating_sub(taken),
        in_doubt,
        cause,
    };
    // The messages there now; those that arrive meanwhile, and the kept
    // ones published again at the tail, come after them.
    let total = broker
        .ready_count(&queue)
        .await
        .map_err(|e| stopped(walked, 0, 0, false, e))?;
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    let mut taken = 0;
    while taken < total {
        let Delivery { message, acker, .. } = match broker.get(&queue).await {
            Ok(Some(delivery)) => delivery,
            // Someone else emptied it.
            Ok(None) => break,
            Err(e) => return Err(stopped(walked, taken, total, false, e)),
        };
        seen(&message);
        let replaying = replay(&message);
        let published = match replaying {
            true => broker.publish(inbound, protocol::replay(&message)).await,
            false => broker.publish(&queue, message).await,
        };
        if let Err(e) = published {
            // Back to the dead-letter queue; if even that fails, the broker
            // takes it back when the channel goes.
            let _ = acker.reject(true).await;
            return Err(stopped(walked, taken, total, false, e));
        }
        taken += 1;
        if let Err(e) = acker.ack().await {
            return Err(stopped(walked, taken - 1, total, true, e));
        }
        match replaying {
            true => walked.replayed += 1,
            false => walked.kept += 1,
        }
    }
    Ok(walked)
}

/// Shows each dead letter of the service consuming `inbound` to `each`,
/// oldest first, and returns how many there were. They stay in the queue,
/// in order (see the module's documentation for what a walk guarantees).
pub async fn list(broker: &dyn Broker, inbound: &str, mut each: impl FnMut(DeadLetter)) -> Result<usize, Error> {
    let walked = walk(broker, inbound, "list", |m| each(DeadLetter::of(m)), |_| false).await?;
    Ok(walked.kept)
}

/// Sends the selected dead letters back to `inbound` with fresh attempts,
/// each removed from the dead-letter queue only after the broker confirmed
/// its replay. Returns how many were replayed and how many stay.
pub async fn replay(broker: &dyn Broker, inbound: &str, selection: &Selection) -> Result<(usize, usize), Error> {
    let walked = walk(broker, inbound, "replay", |_| {}, |m| selection.selects(m)).await?;
    Ok((walked.replayed, walked.kept))
}
