//! Queue declarations on RabbitMQ: the arguments of classic and quorum queues,
//! passive checks, and reading the broker's refusals.

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Channel;

use crate::broker::{
    dead_letter_queue, is_dead_letter_queue, BrokerError, Durability, QueueType, QUORUM_DELIVERY_LIMIT,
};

/// The delivery limit of the dead-letter queues slingshot declares as quorum
/// queues: no limit in practice (RabbitMQ 4.0 would otherwise drop a dead
/// letter delivered 20 times to tools that never settle it).
const DEAD_LETTER_DELIVERY_LIMIT: i64 = 1_000_000;

/// The arguments `queue` is declared with: none for a classic queue (as the
/// original crate declares it); for a quorum queue, its type, a delivery
/// limit and, unless it is a dead-letter queue itself, at-least-once
/// dead-lettering to its dead-letter queue.
pub(crate) fn arguments(queue_type: QueueType, queue: &str) -> FieldTable {
    let mut table = FieldTable::default();
    if queue_type == QueueType::Classic {
        return table;
    }
    let mut set = |name: &str, value: AMQPValue| {
        table.insert(ShortString::from(name), value);
    };
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    set("x-queue-type", text("quorum"));
    if is_dead_letter_queue(queue) {
        set("x-delivery-limit", AMQPValue::LongLongInt(DEAD_LETTER_DELIVERY_LIMIT));
    } else {
        set("x-delivery-limit", AMQPValue::LongLongInt(QUORUM_DELIVERY_LIMIT));
        set("x-dead-letter-exchange", text(""));
        set("x-dead-letter-routing-key", text(&dead_letter_queue(queue)));
        // at-least-once dead-lettering only applies with reject-publish
        // overflow; with the default (drop-head) it is at-most-once.
        set("x-dead-letter-strategy", text("at-least-once"));
        set("x-overflow", text("reject-publish"));
    }
    table
}

/// Quorum queues are always durable.
pub(crate) fn effective(queue_type: QueueType, durability: Durability) -> Durability {
    match queue_type {
        QueueType::Quorum => Durability::Durable,
        QueueType::Classic => durability,
    }
}

/// Declares `queue` with `durability`, `arguments` and AMQP's defaults for
/// the rest (not exclusive, not auto-delete): with `Transient` and no
/// arguments, exactly what the original `slingshot-microservice` sends.
pub(crate) async fn declare_plain(
    channel: &Channel,
    queue: &str,
    durability: Durability,
    arguments: FieldTable,
) -> lapin::Result<lapin::Queue> {
    let options = QueueDeclareOptions {
        durable: durability == Durability::Durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(ShortString::from(queue), options, arguments)
        .await
}

/// Asks whether `queue` exists (and how many messages are ready in it)
/// without creating or changing it.
pub(crate) async fn declare_passive(channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await
}

/// Whether the broker refused with the soft error `kind`.
fn is_soft(e: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if *amqp.kind() == AMQPErrorKind::Soft(kind))
}

/// Whether the broker refused a declaration because the queue exists with
/// other properties (AMQP 406 PRECONDITION_FAILED).
pub(crate) fn is_precondition_failed(e: &lapin::Error) -> bool {
    is_soft(e, AMQPSoftError::PRECONDITIONFAILED)
}

/// Whether a passive declaration found no such queue (AMQP 404 NOT_FOUND).
pub(crate) fn is_not_found(e: &lapin::Error) -> bool {
    is_soft(e, AMQPSoftError::NOTFOUND)
}

/// What the broker said, without lapin's wrapping: `PRECONDITION_FAILED -
/// inequivalent arg 'durable' for queue ...`.
pub(crate) fn reply_text(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => amqp.get_message().as_str().to_string(),
        _ => e.to_string(),
    }
}

/// The broker refused `op` on `queue`: [`BrokerError::Deprecated`] if it
/// refused a deprecated feature its configuration does not permit.
pub(crate) fn refused(op: &'static str, queue: &str, e: impl std::fmt::Display) -> BrokerError {
    let message = e.to_string();
    if let Some(feature) = deprecated_feature(&message) {
        let advice = match feature {
            "transient_nonexcl_queues" => {
                "; slingshot declares transient queues only in SLINGSHOT_QUEUE_MODE=compatible, as the original \
                 slingshot-microservice does: set SLINGSHOT_QUEUE_MODE=durable (once no original service declares \
                 these queues), or permit the feature on the broker \
                 (deprecated_features.permit.transient_nonexcl_queues = true in rabbitmq.conf)"
            }
            _ => "",
        };
        return BrokerError::Deprecated {
            op,
            queue: queue.into(),
            feature: feature.to_string(),
            advice: advice.to_string(),
        };
    }
    BrokerError::Refused {
        op,
        queue: queue.into(),
        message,
    }
}

/// The feature a RabbitMQ 4 refusal names when its configuration does not
/// permit a deprecated feature (a connection error: "Feature
/// `transient_nonexcl_queues` is deprecated. Its use is not permitted per
/// the configuration ...").
fn deprecated_feature(broker_says: &str) -> Option<&str> {
    let (_, rest) = broker_says.split_once("Feature `")?;
    let (feature, rest) = rest.split_once('`')?;
    rest.trim_start().starts_with("is deprecated").then_some(feature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_deprecated_features_name_the_feature_and_what_to_do() {
        // What RabbitMQ 4.0.5 answers a transient queue's declaration when
        // its configuration does not permit them (cut at 255 bytes).
        let said = "protocol error: AMQP hard error: INTERNAL-ERROR: INTERNAL_ERROR - Feature `transient_nonexcl_queues` \
                    is deprecated.\nIts use is not permitted per the configuration (overriding the default, which is \
                    permitted):\n    \"deprecated_features.permit.transient_nonexcl_queues = false\"\nIts use will not be permit...";
        let error = refused("declare", "q", said).to_string();
        assert!(!error.contains('\n'), "one line: {error}");
        for part in [
            "declare \"q\" refused",
            "`transient_nonexcl_queues`",
            "SLINGSHOT_QUEUE_MODE=durable",
            "deprecated_features.permit.transient_nonexcl_queues = true",
        ] {
            assert!(error.contains(part), "{part:?} missing: {error}");
        }
        assert!(matches!(
            refused("declare", "q", "NOT_FOUND - no queue 'q'"),
            BrokerError::Refused { .. }
        ));
        assert_eq!(deprecated_feature("Feature `x` is not deprecated"), None);
    }
}
