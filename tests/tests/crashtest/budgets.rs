//! Guards the explorer's budgets and scale: a budget stops the exploration (not the workload)
//! and says so in the report, the scale multiplies budgets and random images per crash point,
//! and `only_point` restricts the exploration to one crash point.

use ptm::pmem_core::Region;
use ptm_crashtest::{Budget, CheckResult, Explorer, Report};

/// Ten drains, each making one new word durable while leaving 12 words pending (so a crash
/// point gets 2 + images_per_point random images, never every subset).
fn run(x: Explorer) -> Report {
    x.pool_size(64 << 10)
        .run_raw(
            |_| Ok(()),
            |r: &mut Region| -> CheckResult {
                let base = r.data_range().start;
                for i in 0..10u64 {
                    for w in 0..12u64 {
                        r.write_at(
                            base + 64 * (i + 1) + 8 * (w % 8) + 4096 * (w / 8),
                            &[i as u8 + 1; 8],
                        )?;
                    }
                    r.flush(base, 8)?;
                    r.drain()?;
                }
                Ok(())
            },
            |_| Ok(()),
        )
        .unwrap()
}

#[test]
fn without_budgets_every_crash_point_is_explored() {
    let r = run(Explorer::new());
    assert!(r.is_complete(), "{r}");
    assert_eq!((r.crash_points, r.points_explored), (11, 11));
    assert!(r.max_pending >= 12, "{r}");
}

#[test]
fn the_crash_point_budget_stops_exploring_but_not_the_workload() {
    let r = run(Explorer::new().max_points(3).scale(1));
    assert_eq!((r.crash_points, r.points_explored), (11, 3), "{r}");
    assert_eq!(r.truncated, Some(Budget::CrashPoints));
    assert!(!r.is_complete());
    assert!(
        r.to_string().contains("stopped early by the crash-point budget"),
        "{r}"
    );
    let r = run(Explorer::new().max_points(3).scale(2));
    assert_eq!(r.points_explored, 6, "the scale multiplies budgets: {r}");
}

#[test]
fn the_image_and_time_budgets_stop_exploring() {
    let r = run(Explorer::new().max_images(5).scale(1));
    assert_eq!((r.images_checked, r.truncated), (5, Some(Budget::Images)), "{r}");
    let r = run(Explorer::new().max_time(std::time::Duration::ZERO));
    assert_eq!((r.images_checked, r.truncated), (0, Some(Budget::Time)), "{r}");
}

#[test]
fn the_scale_multiplies_random_images_and_only_point_restricts() {
    let one = run(Explorer::new().images_per_point(4).scale(1));
    let three = run(Explorer::new().images_per_point(4).scale(3));
    assert!(
        three.images_checked + three.duplicates > 2 * (one.images_checked + one.duplicates),
        "{one}\n{three}"
    );
    let only = run(Explorer::new().images_per_point(4).scale(1).only_point(4));
    assert_eq!((only.crash_points, only.points_explored), (11, 1), "{only}");
    assert!(!only.is_complete());
    assert_eq!(only.images_checked + only.duplicates, 6, "{only}");
}
