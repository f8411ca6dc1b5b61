//! Bounds on what one event may carry, applied by `report()`, so that no
//! single event is ever large enough to be refused for its size.
//!
//! Free text is cut at a character boundary and ends with [`TRUNCATED`];
//! counts (`tests_failed`) are never touched, so nothing a metric is made of
//! changes. Label-like fields (`kind`, `model`, `error_kind`, `currency`) are
//! bounded far above any label length the collector accepts (128 bytes by
//! default): a value that long is still rejected by the collector as too long,
//! as it would have been whole, it just no longer weighs megabytes.

use automation_proto::v1::event::Payload;

/// `ComponentError.message` and `Goodbye.reason`, in bytes.
pub(super) const MAX_TEXT_BYTES: usize = 4096;
/// `TestRun.failed_tests`: names kept at most (`tests_failed` keeps the count).
pub(super) const MAX_FAILED_TESTS: usize = 200;
/// One failed test's name, in bytes.
pub(super) const MAX_TEST_NAME_BYTES: usize = 512;
/// A label-like field, in bytes.
pub(super) const MAX_LABEL_BYTES: usize = 1024;
/// Ends every text that was cut.
pub(super) const TRUNCATED: &str = "…(truncated)";

/// Bounds the free text of `payload` in place.
pub(super) fn bound(payload: &mut Payload) {
    match payload {
        Payload::Error(error) => {
            truncate(&mut error.message, MAX_TEXT_BYTES);
            truncate(&mut error.kind, MAX_LABEL_BYTES);
            truncate(&mut error.model, MAX_LABEL_BYTES);
        }
        Payload::TestRun(run) => {
            run.failed_tests.truncate(MAX_FAILED_TESTS);
            for name in &mut run.failed_tests {
                truncate(name, MAX_TEST_NAME_BYTES);
            }
        }
        Payload::Goodbye(goodbye) => truncate(&mut goodbye.reason, MAX_TEXT_BYTES),
        Payload::ApiCall(call) => {
            truncate(&mut call.model, MAX_LABEL_BYTES);
            truncate(&mut call.error_kind, MAX_LABEL_BYTES);
        }
        Payload::Heartbeat(heartbeat) => {
            if let Some(gateway) = &mut heartbeat.gateway {
                for balance in &mut gateway.balances {
                    truncate(&mut balance.currency, MAX_LABEL_BYTES);
                }
            }
        }
        Payload::FileChanges(_)
        | Payload::AuditRun(_)
        | Payload::BridgeCall(_)
        | Payload::GatewayRequest(_) => {}
    }
}

/// Cuts `text` to at most `max` bytes (marker included) at a character
/// boundary, and marks it as cut. Text within the bound is left alone.
pub(super) fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub(TRUNCATED.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    if TRUNCATED.len() <= max {
        text.push_str(TRUNCATED);
    }
}

#[cfg(test)]
mod tests {
    use automation_proto::v1::{ApiCall, ComponentError, Goodbye, TestRun};

    use super::*;

    #[test]
    fn text_within_the_bound_is_left_alone() {
        let mut text = "é".repeat(10);
        truncate(&mut text, 20);
        assert_eq!(text, "é".repeat(10));
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary_and_marked() {
        // Two-byte characters: the cut must not split one.
        for max in [100, 101, 4096] {
            let mut text = "é".repeat(5000);
            truncate(&mut text, max);
            assert!(text.len() <= max, "{max}: {}", text.len());
            assert!(text.len() >= max - TRUNCATED.len() - 1, "{max}");
            assert!(text.ends_with(TRUNCATED));
            assert!(text.trim_end_matches(TRUNCATED).chars().all(|c| c == 'é'));
        }
        let mut text = "x".repeat(10);
        truncate(&mut text, 4);
        assert_eq!(text, "");
    }

    #[test]
    fn events_are_bounded_field_by_field() {
        let mut error = Payload::Error(ComponentError {
            kind: "k".repeat(5000),
            message: "m".repeat(10 << 20),
            model: "deepseek-chat".to_owned(),
        });
        bound(&mut error);
        let Payload::Error(error) = error else {
            unreachable!()
        };
        assert_eq!(error.message.len(), MAX_TEXT_BYTES);
        assert!(error.message.starts_with("mmm") && error.message.ends_with(TRUNCATED));
        assert!(error.kind.len() <= MAX_LABEL_BYTES && error.kind.ends_with(TRUNCATED));
        assert_eq!(error.model, "deepseek-chat");

        let mut run = Payload::TestRun(TestRun {
            tests_failed: 1000,
            failed_tests: (0..1000)
                .map(|n| format!("{n}::{}", "t".repeat(n * 3)))
                .collect(),
            ..TestRun::default()
        });
        bound(&mut run);
        let Payload::TestRun(run) = run else {
            unreachable!()
        };
        assert_eq!(run.tests_failed, 1000);
        assert_eq!(run.failed_tests.len(), MAX_FAILED_TESTS);
        assert!(run.failed_tests[0].starts_with("0::"));
        assert!(
            run.failed_tests
                .iter()
                .all(|n| n.len() <= MAX_TEST_NAME_BYTES)
        );
        assert!(run.failed_tests[199].ends_with(TRUNCATED));
        assert!(!run.failed_tests[10].ends_with(TRUNCATED));

        let mut goodbye = Payload::Goodbye(Goodbye {
            reason: "r".repeat(100_000),
        });
        bound(&mut goodbye);
        assert!(matches!(&goodbye, Payload::Goodbye(g) if g.reason.len() <= MAX_TEXT_BYTES));

        let mut call = Payload::ApiCall(ApiCall {
            error_kind: "e".repeat(1 << 20),
            ..ApiCall::default()
        });
        bound(&mut call);
        assert!(matches!(&call, Payload::ApiCall(c) if c.error_kind.len() <= MAX_LABEL_BYTES));
    }
}
