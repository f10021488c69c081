//! RabbitMQ: the relay that publishes due outbox jobs, and the `filestore transfer`
//! consumer.
//!
//! Topology (declared by both sides, idempotently): a durable direct exchange
//! (`uploadserver.trans`), a durable queue (`uploadserver.trans.oss`) bound with routing key
//! `oss`, and a durable dead-letter queue (`uploadserver.trans.oss.err`) that dead jobs are
//! copied to for inspection. Messages are persistent; the relay waits for each publisher
//! confirm before marking a job published; consumers ack only after the job is handled or
//! its failure recorded (a retry is a later republish by the relay, with backoff).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use super::{TransferError, TransferMessage, Transfers};
use crate::config::QueueConfig;
use crate::meta::now_ms;

fn broker(e: lapin::Error) -> TransferError {
    TransferError::Broker(e.to_string())
}

/// Connects and declares the topology.
pub async fn connect(cfg: &QueueConfig, name: &str) -> Result<(Connection, Channel), TransferError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let conn = tokio::time::timeout(Duration::from_secs(10), Connection::connect(&cfg.amqp_url, props))
        .await
        .map_err(|_| TransferError::Broker("connection timed out".into()))?
        .map_err(broker)?;
    let ch = conn.create_channel().await.map_err(broker)?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        cfg.exchange.as_str().into(),
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await
    .map_err(broker)?;
    for q in [&cfg.queue, &cfg.dead_letter_queue] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    }
    ch.queue_bind(
        cfg.queue.as_str().into(),
        cfg.exchange.as_str().into(),
        cfg.routing_key.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(broker)?;
    Ok((conn, ch))
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Publishes due jobs until `stop` fires, reconnecting with backoff while the broker is
/// down (uploads keep succeeding meanwhile: the jobs wait in the outbox).
pub async fn relay(t: Transfers, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut delay = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            return;
        }
        match relay_session(&t, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "transfer relay: broker unavailable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn relay_session(t: &Transfers, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<(), TransferError> {
    let (_conn, ch) = connect(&t.queue, "filestore-relay").await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker)?;
    loop {
        let n = publish_due(t, &ch).await?;
        if *stop.borrow() {
            // A last pass so that jobs committed just before shutdown are not left waiting.
            publish_due(t, &ch).await?;
            return Ok(());
        }
        if n == 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Publishes every due job once, each confirmed before it is marked published.
pub async fn publish_due(t: &Transfers, ch: &Channel) -> Result<usize, TransferError> {
    let jobs = t.meta.jobs_due(now_ms(), 200).await?;
    for job in &jobs {
        let body = serde_json::to_vec(&t.message(job)).expect("message serialises");
        let confirm = ch
            .basic_publish(
                t.queue.exchange.as_str().into(),
                t.queue.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                persistent(),
            )
            .await
            .map_err(broker)?
            .await
            .map_err(broker)?;
        match confirm {
            Confirmation::Ack(_) => t.meta.job_published(job.id).await?,
            other => {
                return Err(TransferError::Broker(format!(
                    "publish of job {} not confirmed: {other:?}",
                    job.id
                )))
            }
        }
    }
    Ok(jobs.len())
}

/// `filestore transfer`: consumes jobs until `stop` fires (reconnecting while the broker is
/// down), with the relay running beside it so retries get republished. Returns once both
/// have stopped (the relay after its last pass), so the caller may close the database.
pub async fn work(t: Transfers, stop: tokio::sync::watch::Receiver<bool>) {
    let relay = tokio::spawn(relay(t.clone(), stop.clone()));
    consume_until_stopped(&t, stop).await;
    let _ = relay.await;
}

async fn consume_until_stopped(t: &Transfers, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut delay = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            return;
        }
        match consume(t, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "transfer worker: broker unavailable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn consume(t: &Transfers, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<(), TransferError> {
    let (_conn, ch) = connect(&t.queue, "filestore-transfer").await?;
    ch.basic_qos(t.queue.prefetch.max(1), BasicQosOptions::default())
        .await
        .map_err(broker)?;
    let consumer = ch
        .basic_consume(
            t.queue.queue.as_str().into(),
            "filestore-transfer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    let concurrency = usize::from(t.queue.prefetch.max(1));
    let mut deliveries = Box::pin(consumer.take_until(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    // Up to `prefetch` deliveries are handled at once; each is acked when done.
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            next = deliveries.next(), if inflight.len() < concurrency => {
                match next {
                    Some(Ok(d)) => inflight.push(handle_delivery(t, &ch, d)),
                    Some(Err(e)) => return Err(broker(e)),
                    None => break,
                }
            }
            Some(r) = inflight.next(), if !inflight.is_empty() => r?,
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(())
}

async fn handle_delivery(t: &Transfers, ch: &Channel, d: lapin::message::Delivery) -> Result<(), TransferError> {
    match serde_json::from_slice::<TransferMessage>(&d.data) {
        Err(e) => {
            tracing::error!(error = %e, "malformed transfer message; dead-lettered");
            dead_letter(t, ch, &d.data).await?;
        }
        Ok(msg) => {
            if let Err(e) = t.run_job(msg.job_id, &msg.file_hash).await {
                let Some(job) = t.meta.job(msg.job_id).await? else {
                    return Err(e);
                };
                if t.failed(&job, &e).await? {
                    dead_letter(t, ch, &d.data).await?;
                }
            }
        }
    }
    d.ack(BasicAckOptions::default()).await.map_err(broker)?;
    Ok(())
}

async fn dead_letter(t: &Transfers, ch: &Channel, body: &[u8]) -> Result<(), TransferError> {
    ch.basic_publish(
        "".into(),
        t.queue.dead_letter_queue.as_str().into(),
        BasicPublishOptions::default(),
        body,
        persistent(),
    )
    .await
    .map_err(broker)?;
    Ok(())
}

/// Messages waiting in the work queue and in the dead-letter queue.
pub async fn queue_depths(cfg: &QueueConfig) -> Result<(u32, u32), TransferError> {
    let (_conn, ch) = connect(cfg, "filestore-status").await?;
    let passive = QueueDeclareOptions {
        passive: true,
        durable: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(cfg.queue.as_str().into(), passive, FieldTable::default())
        .await
        .map_err(broker)?;
    let dlq = ch
        .queue_declare(cfg.dead_letter_queue.as_str().into(), passive, FieldTable::default())
        .await
        .map_err(broker)?;
    Ok((q.message_count(), dlq.message_count()))
}
