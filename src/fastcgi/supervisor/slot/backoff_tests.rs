//! The restart back-off of a spawned pool: 250 ms, doubling per
//! consecutive fast failure, capped at 30 s.
//!
//! These test the schedule itself. The supervisor applies it with
//! `std::time::Instant` deadlines (`Slot::Backoff`) checked on a tokio
//! interval, so paused tokio time does not move them: a paused-time test
//! of the supervisor needs its deadlines in `tokio::time::Instant`.

use std::time::Duration;

use proptest::prelude::*;

use super::{backoff, BACKOFF_BASE, BACKOFF_MAX};

#[test]
fn the_schedule_doubles_from_250_ms_to_a_30_s_cap() {
    let ms = |n| backoff(n).as_millis();
    let schedule: Vec<u128> = (1..=10).map(ms).collect();
    assert_eq!(
        schedule,
        [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    );
    // The count starts at 1; 0 (never used) is the base, not half of it.
    assert_eq!(ms(0), 250);
    // No overflow however long a pool keeps failing.
    for n in [16, 17, 31, 32, 33, 1000, u32::MAX - 1, u32::MAX] {
        assert_eq!(backoff(n), BACKOFF_MAX, "{n}");
    }
}

/// A worker that always dies at once is started at these times (the
/// sum of the delays before each start): a crash loop costs ten starts in
/// the first two minutes, then one every 30 s.
#[test]
fn a_crash_loop_restarts_ever_more_slowly() {
    let mut at = Duration::ZERO;
    let mut starts = vec![at];
    for failures in 1..=10 {
        at += backoff(failures);
        starts.push(at);
    }
    let ms: Vec<u128> = starts.iter().map(Duration::as_millis).collect();
    assert_eq!(
        ms,
        [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 61750, 91750, 121750]
    );
}

proptest! {
    #[test]
    fn backoff_is_bounded_monotone_and_doubles_until_the_cap(n in any::<u32>()) {
        let d = backoff(n);
        prop_assert!(d >= BACKOFF_BASE && d <= BACKOFF_MAX, "{n}: {d:?}");
        if let Some(next) = n.checked_add(1) {
            let e = backoff(next);
            prop_assert!(e >= d);
            if n >= 1 {
                prop_assert_eq!(e, (d * 2).min(BACKOFF_MAX));
            }
        }
    }
}
