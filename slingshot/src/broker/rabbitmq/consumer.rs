//! Consuming from RabbitMQ: a channel per consumer with bounded prefetch, a
//! watchdog for brokers that stop answering, cancelling to drain, and settling
//! deliveries on their own channel.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::ShortString;
use lapin::Channel;

use super::link::{Session, ANSWER_TIMEOUT};
use super::wire;
use crate::broker::{Acker, BrokerError, Consumer, Delivery};

/// A consumer that received nothing for this long checks that its channel
/// still answers.
pub const WATCHDOG_IDLE: Duration = Duration::from_secs(5);

pub(crate) struct RabbitConsumer {
    pub(crate) queue: String,
    pub(crate) tag: String,
    pub(crate) consumer: lapin::Consumer,
    pub(crate) prefetch: u16,
    /// The connection it consumes on, given up if the watchdog's probe gets no answer.
    pub(crate) session: Arc<Session>,
    /// Keeps the consumer's channel open; dropping it closes the channel and
    /// the broker requeues every unacknowledged delivery.
    pub(crate) channel: Channel,
    /// Cancelled: what the broker sent before the cancel comes out, then the end.
    pub(crate) cancelled: bool,
}

impl RabbitConsumer {
    /// The watchdog's probe: after [`WATCHDOG_IDLE`] without a delivery, asks
    /// the broker something on the consumer's own channel (setting the same
    /// prefetch again changes nothing). `Err` when the channel is closed or
    /// the broker does not answer within [`ANSWER_TIMEOUT`]: lapin may not
    /// notice a frozen broker before its heartbeat runs out, and would
    /// otherwise wait for deliveries that never come.
    async fn probe(&self) -> Result<(), BrokerError> {
        let lost = |why: String| BrokerError::Disconnected(format!("consumer of {:?}: {why}", self.queue));
        if self.session.dead.load(Ordering::SeqCst) || !self.channel.status().connected() {
            return Err(lost("the connection was lost".into()));
        }
        match tokio::time::timeout(
            ANSWER_TIMEOUT,
            self.channel.basic_qos(self.prefetch, BasicQosOptions::default()),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(lost(e.to_string())),
            Err(_) => {
                self.session.give_up("the consumer's watchdog got no answer");
                Err(lost(format!("the broker did not answer within {ANSWER_TIMEOUT:?}")))
            }
        }
    }

    fn delivery(&self, delivery: lapin::message::Delivery) -> Delivery {
        Delivery {
            message: wire::message_of(&delivery.properties, delivery.data),
            redelivered: delivery.redelivered,
            acker: Box::new(RabbitAcker {
                acker: delivery.acker,
                channel: self.channel.clone(),
                session: Some(self.session.clone()),
            }),
        }
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            let next = if self.cancelled {
                // Only what the broker sent before the cancel is left; it is
                // buffered already, or the channel is gone.
                match tokio::time::timeout(ANSWER_TIMEOUT, self.consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => return None,
                }
            } else {
                tokio::select! {
                    next = self.consumer.next() => next,
                    _ = tokio::time::sleep(WATCHDOG_IDLE) => match self.probe().await {
                        Ok(()) => continue,
                        Err(e) => return Some(Err(e)),
                    },
                }
            };
            return match next? {
                Ok(delivery) => Some(Ok(self.delivery(delivery))),
                Err(e) => Some(Err(BrokerError::Disconnected(format!(
                    "consumer of {:?}: {e}",
                    self.queue
                )))),
            };
        }
    }

    async fn cancel(&mut self) -> Result<(), BrokerError> {
        if self.cancelled {
            return Ok(());
        }
        self.cancelled = true;
        let cancelling = self
            .channel
            .basic_cancel(ShortString::from(self.tag.as_str()), BasicCancelOptions::default());
        match tokio::time::timeout(ANSWER_TIMEOUT, cancelling).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BrokerError::Disconnected(format!(
                "cancel consumer of {:?}: {e}",
                self.queue
            ))),
            Err(_) => Err(BrokerError::Disconnected(format!(
                "cancel consumer of {:?}: no answer within {ANSWER_TIMEOUT:?}",
                self.queue
            ))),
        }
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        let channel = self.channel.clone();
        // Closing returns unacked deliveries to the queue now rather than when
        // the connection ends. Best effort: if there is no runtime, the
        // connection's end does the same; a broker that does not answer
        // does not keep the task forever.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let close = channel.close(200, ShortString::from("consumer dropped"));
                let _ = tokio::time::timeout(ANSWER_TIMEOUT, close).await;
            });
        }
    }
}

pub(crate) struct RabbitAcker {
    pub(crate) acker: lapin::Acker,
    /// The channel the delivery came on: it can be settled only there.
    pub(crate) channel: Channel,
    /// The connection of that channel, if it may be given up while open.
    pub(crate) session: Option<Arc<Session>>,
}

impl RabbitAcker {
    /// Waits for an ack or reject, and says whether it was sent: lapin
    /// answers `Ok(false)` when the delivery's channel had already ended,
    /// and sends nothing. Past [`ANSWER_TIMEOUT`] (a broker that stopped
    /// reading, or a promise lapin never resolved) it counts as not sent:
    /// the connection is given up, and the broker delivers the message again.
    async fn settle(
        &self,
        op: &'static str,
        settling: impl std::future::Future<Output = lapin::Result<bool>>,
    ) -> Result<(), BrokerError> {
        match tokio::time::timeout(ANSWER_TIMEOUT, settling).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(BrokerError::Disconnected(format!(
                "{op}: the delivery's channel had closed; the broker delivers it again"
            ))),
            Ok(Err(e)) => Err(BrokerError::Disconnected(format!("{op}: {e}"))),
            Err(_) => {
                if let Some(session) = &self.session {
                    session.give_up("a delivery not settled within the answer timeout");
                }
                Err(BrokerError::Disconnected(format!(
                    "{op}: not sent within {ANSWER_TIMEOUT:?}; the broker delivers it again"
                )))
            }
        }
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.settle("ack", self.acker.ack(BasicAckOptions::default())).await
    }

    async fn reject(self: Box<Self>, requeue: bool) -> Result<(), BrokerError> {
        self.settle("reject", self.acker.reject(BasicRejectOptions { requeue }))
            .await
    }

    fn is_live(&self) -> bool {
        self.channel.status().connected() && !self.session.as_ref().is_some_and(|s| s.dead.load(Ordering::SeqCst))
    }
}
