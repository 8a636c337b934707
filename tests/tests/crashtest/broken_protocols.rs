//! Guards the harness itself: deliberately broken persistence protocols (toy logs written directly
//! against a simulated pmem-core region) are caught at the right crash point, their correct
//! twins pass, and every reported failure reproduces from its reproduction line.

use ptm::pmem_core::Region;
use ptm_crashtest::{ensure, CheckResult, Explorer, Failure, Report, Stage};

/// Word `i` (8 bytes) of the data area; words 0..8 share the first line, 8..16 the second, ...
fn at(r: &Region, word: u64) -> u64 {
    r.data_range().start + 8 * word
}

fn get(r: &Region, word: u64) -> u64 {
    let mut b = [0u8; 8];
    r.read_at(at(r, word), &mut b).unwrap();
    u64::from_le_bytes(b)
}

fn put(r: &mut Region, word: u64, v: u64) {
    let off = at(r, word);
    r.write_at(off, &v.to_le_bytes()).unwrap();
}

fn flush(r: &Region, word: u64) {
    r.flush(at(r, word), 8).unwrap();
}

fn persist(r: &Region, words: &[u64]) {
    for &w in words {
        flush(r, w);
    }
    r.drain().unwrap();
}

fn explorer() -> Explorer {
    Explorer::new().seed(7).pool_size(64 << 10)
}

/// Runs `reproduction` (the same explorer narrowed to `f`'s image) and checks it finds exactly
/// `f` again.
fn assert_reproduces(f: &Failure, base: Explorer, run: impl Fn(Explorer) -> Report) {
    let mut x = base.clone().only_point(f.id.point).only_image(f.id.image);
    if let Some((p, i)) = f.id.recovery {
        x = x.only_recovery(p, i);
    }
    let mut expected = format!(
        "Explorer::new().seed(7).only_point({}).only_image({})",
        f.id.point, f.id.image
    );
    if let Some((p, i)) = f.id.recovery {
        expected.push_str(&format!(".only_recovery({p}, {i})"));
    }
    assert_eq!(f.reproduction, expected);
    let again = run(x);
    assert_eq!(again.failures_total, 1, "{again}");
    assert_eq!(again.failures[0].id, f.id);
    assert_eq!(again.failures[0].message, f.message);
    assert_eq!(again.failures[0].crash, f.crash);
    assert_eq!(again.images_checked, 1);
}

// ---------------------------------------------------------------------------------------------
// 1. Undo logging: A (word 0) and B (word 8, another line) must stay equal. The undo entry
//    (valid word 16, old A word 17, old B word 18) must be durable before A and B are stored.

fn undo_setup(r: &mut Region) -> CheckResult {
    put(r, 0, 1);
    put(r, 8, 1);
    persist(r, &[0, 8]);
    Ok(())
}

fn undo_recover_and_check(r: &mut Region) -> CheckResult {
    if get(r, 16) == 1 {
        let (a, b) = (get(r, 17), get(r, 18));
        put(r, 0, a);
        put(r, 8, b);
        persist(r, &[0, 8]);
        put(r, 16, 0);
        persist(r, &[16]);
    }
    let (a, b) = (get(r, 0), get(r, 8));
    ensure!(a == b, "A = {a} but B = {b}");
    Ok(())
}

fn undo_workload(r: &mut Region, broken: bool) -> CheckResult {
    put(r, 17, get(r, 0));
    put(r, 18, get(r, 8));
    if broken {
        // BUG: the stores go out in the same drain as their undo entry.
        put(r, 16, 1);
        put(r, 0, 2);
        put(r, 8, 2);
        persist(r, &[16, 17, 18, 0, 8]);
    } else {
        persist(r, &[17, 18]);
        put(r, 16, 1);
        persist(r, &[16]);
        put(r, 0, 2);
        put(r, 8, 2);
        persist(r, &[0, 8]);
    }
    put(r, 16, 0);
    persist(r, &[16]);
    Ok(())
}

fn run_undo(x: Explorer, broken: bool) -> Report {
    x.run_raw(undo_setup, |r| undo_workload(r, broken), undo_recover_and_check)
        .unwrap()
}

#[test]
fn correct_undo_logging_passes() {
    let report = run_undo(explorer().double_crash(true), false);
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete());
    assert_eq!(report.crash_points, 5, "4 drains and the end");
}

#[test]
fn a_store_before_its_undo_entry_is_durable_is_caught() {
    let report = run_undo(explorer(), true);
    assert!(!report.failures.is_empty(), "{report}");
    let f = &report.failures[0];
    assert_eq!(
        f.id.point, 0,
        "the drain that persists entry and stores together\n{report}"
    );
    assert_eq!(f.stage, Stage::Check);
    assert!(f.message.starts_with("A = 2 but B = 1") || f.message.starts_with("A = 1 but B = 2"));
    // A store persisted without the valid word of its entry.
    let a = at_data(0);
    let b = at_data(8);
    let valid = at_data(16);
    assert!(f.crash.persisted.contains(&a) || f.crash.persisted.contains(&b));
    assert!(!f.crash.persisted.contains(&valid));
    assert_eq!(f.crash.pending.len(), 5, "{report}");
    assert!(report
        .to_string()
        .contains("reproduce: Explorer::new().seed(7).only_point(0)"));
    assert_reproduces(f, explorer(), |x| run_undo(x, true));
}

/// Pool offset of data word `w` (pmem-core puts the data area at 4096).
fn at_data(w: u64) -> u64 {
    4096 + 8 * w
}

// ---------------------------------------------------------------------------------------------
// 2. A missing flush: the same protocol, but B's line is never flushed before the entry is
//    invalidated.

fn missing_flush_workload(r: &mut Region) -> CheckResult {
    put(r, 17, get(r, 0));
    put(r, 18, get(r, 8));
    persist(r, &[17, 18]);
    put(r, 16, 1);
    persist(r, &[16]);
    put(r, 0, 2);
    put(r, 8, 2);
    persist(r, &[0]); // BUG: B (word 8) is not flushed
    put(r, 16, 0);
    persist(r, &[16]);
    Ok(())
}

#[test]
fn a_missing_flush_is_caught() {
    let run = |x: Explorer| {
        x.run_raw(undo_setup, missing_flush_workload, undo_recover_and_check)
            .unwrap()
    };
    let report = run(explorer());
    assert!(!report.failures.is_empty(), "{report}");
    let f = &report.failures[0];
    // Drain 3 makes the invalidation durable while B is still only in the cache.
    assert_eq!(f.id.point, 3, "{report}");
    assert_eq!(f.message, "A = 2 but B = 1");
    assert!(f.crash.pending.contains(&at_data(8)));
    assert!(!f.crash.persisted.contains(&at_data(8)));
    assert!(f.crash.persisted.contains(&at_data(16)));
    // The crash after the last drain (point 4) leaves the same bytes with nothing pending: images
    // are deduplicated within a crash point only, so it is checked (and fails) again.
    assert_eq!(report.failures_total, 2, "{report}");
    assert_eq!(report.failures[1].id.point, 4, "{report}");
    assert_reproduces(f, explorer(), run);
}

// ---------------------------------------------------------------------------------------------
// 3. Shadow update: the value lives in slot 0 or 1 (words 8..10 and 16..18: value and its
//    complement); the commit record (word 0) names the current slot. The new slot must be
//    durable before the record points to it.

fn shadow_setup(r: &mut Region) -> CheckResult {
    put(r, 8, 10);
    put(r, 9, !10);
    put(r, 0, 0);
    persist(r, &[8, 9, 0]);
    Ok(())
}

fn shadow_check(r: &mut Region) -> CheckResult {
    let slot = get(r, 0);
    ensure!(slot <= 1, "commit record names slot {slot}");
    let (v, c) = (get(r, 8 + 8 * slot), get(r, 9 + 8 * slot));
    ensure!(c == !v, "slot {slot} is torn: value {v}, check {c:#x}");
    ensure!(v == 10 || v == 20, "slot {slot} holds {v}");
    Ok(())
}

fn shadow_workload(r: &mut Region, broken: bool) -> CheckResult {
    if broken {
        // BUG: the commit record goes first.
        put(r, 0, 1);
        persist(r, &[0]);
        put(r, 16, 20);
        put(r, 17, !20);
        persist(r, &[16, 17]);
    } else {
        put(r, 16, 20);
        put(r, 17, !20);
        persist(r, &[16, 17]);
        put(r, 0, 1);
        persist(r, &[0]);
    }
    Ok(())
}

#[test]
fn correct_shadow_update_passes() {
    let report = explorer()
        .double_crash(true)
        .run_raw(shadow_setup, |r| shadow_workload(r, false), shadow_check)
        .unwrap();
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete());
}

#[test]
fn a_commit_record_written_before_the_data_is_caught() {
    let run = |x: Explorer| {
        x.run_raw(shadow_setup, |r| shadow_workload(r, true), shadow_check)
            .unwrap()
    };
    let report = run(explorer());
    assert!(!report.failures.is_empty(), "{report}");
    let f = &report.failures[0];
    assert_eq!(f.id.point, 0, "{report}");
    assert_eq!(f.crash.persisted, [at_data(0)], "the record alone");
    assert_eq!(f.message, "slot 1 is torn: value 0, check 0x0");
    assert_reproduces(f, explorer(), run);
}

// ---------------------------------------------------------------------------------------------
// 4. Recovery must be idempotent. The workload queues an increment (delta word 9, valid word 8)
//    that recovery applies to the counter (word 0). Applying it with `+=` is correct for one
//    crash but not when recovery itself crashes between the add and the invalidation.

fn counter_setup(_: &mut Region) -> CheckResult {
    Ok(())
}

fn counter_workload(r: &mut Region) -> CheckResult {
    put(r, 9, 5);
    put(r, 10, 5); // the target value, for the idempotent recovery
    put(r, 8, 1);
    persist(r, &[8, 9, 10]);
    Ok(())
}

fn counter_recover_and_check(r: &mut Region, idempotent: bool) -> CheckResult {
    if get(r, 8) == 1 {
        let v = if idempotent {
            get(r, 10)
        } else {
            get(r, 0) + get(r, 9) // BUG: applied again by a second recovery
        };
        put(r, 0, v);
        persist(r, &[0]);
        put(r, 8, 0);
        persist(r, &[8]);
    }
    let c = get(r, 0);
    ensure!(c == 0 || c == 5, "counter is {c}");
    Ok(())
}

#[test]
fn an_idempotent_recovery_survives_crashes_inside_it() {
    let report = explorer()
        .double_crash(true)
        .run_raw(counter_setup, counter_workload, |r| {
            counter_recover_and_check(r, true)
        })
        .unwrap();
    assert!(report.failures.is_empty(), "{report}");
    assert!(
        report.recovery_points > 0 && report.recovery_images_checked > 0,
        "{report}"
    );
}

#[test]
fn a_non_idempotent_recovery_is_caught_by_the_double_crash() {
    let run = |x: Explorer| {
        x.run_raw(counter_setup, counter_workload, |r| {
            counter_recover_and_check(r, false)
        })
        .unwrap()
    };
    // One crash is not enough to see it...
    let single = run(explorer());
    assert!(single.failures.is_empty(), "{single}");
    // ...a crash inside recovery is.
    let report = run(explorer().double_crash(true));
    assert!(!report.failures.is_empty(), "{report}");
    let f = &report.failures[0];
    let rc = f.recovery_crash.as_ref().expect("found in a recovery");
    assert_eq!(f.message, "counter is 10");
    // At recovery drain 0 the add reached the media but the invalidation was not even written.
    assert_eq!(rc.point, 0, "{report}");
    assert_eq!(rc.pending, [at_data(0)]);
    assert_eq!(rc.persisted, [at_data(0)]);
    // The queued increment was complete in the outer image.
    assert!(f.crash.persisted.contains(&at_data(8)) && f.crash.persisted.contains(&at_data(9)));
    assert_reproduces(f, explorer(), run);
}
