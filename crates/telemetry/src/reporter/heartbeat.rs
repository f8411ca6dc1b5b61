//! The task that reports a heartbeat at start and then every interval.

use std::sync::Arc;
use std::time::Duration;

use automation_proto::v1::{Heartbeat, event::Payload};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::LiveState;
use super::shared::Shared;
use crate::sampler::Sampler;

pub(super) async fn run(
    interval: Duration,
    spans_dropped: bool,
    shared: Arc<Shared>,
    live: Arc<dyn LiveState>,
    stop: CancellationToken,
) {
    // `Reporter::start` refuses an interval under `MIN_HEARTBEAT_INTERVAL`;
    // the clamp only keeps Tokio's interval, which refuses a zero period and
    // overflows on an enormous one, safe whatever it is given.
    let period = interval.clamp(
        super::MIN_HEARTBEAT_INTERVAL,
        Duration::from_secs(365 * 86_400),
    );
    let mut ticker = tokio::time::interval(period);
    // After a stall, one heartbeat, not a burst of catch-up ones.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sampler: Option<Sampler> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let previous = sampler.take();
        let live = Arc::clone(&live);
        // Sampling reads /proc and calls statvfs, and `fill` may take locks:
        // neither belongs on an async worker.
        let sampled = tokio::task::spawn_blocking(move || {
            let mut sampler = previous.unwrap_or_default();
            let (process, system) = sampler.sample();
            let mut heartbeat = Heartbeat {
                interval_seconds: interval.as_secs_f64(),
                process: Some(process),
                system: Some(system),
                ..Heartbeat::default()
            };
            live.fill(&mut heartbeat);
            (sampler, heartbeat)
        });
        let sampled = tokio::select! {
            () = stop.cancelled() => return,
            sampled = sampled => sampled,
        };
        match sampled {
            Ok((kept, mut heartbeat)) => {
                sampler = Some(kept);
                // Read last, so the count is as fresh as the heartbeat.
                heartbeat.events_dropped_total = shared.dropped();
                if spans_dropped {
                    heartbeat.spans_dropped_total = crate::trace::spans_dropped();
                }
                shared.report(Payload::Heartbeat(heartbeat));
            }
            Err(error) => tracing::warn!(%error, "sampling for the heartbeat failed"),
        }
    }
}
