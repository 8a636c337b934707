//! What the subcommands print: aligned `key  value` text for people, one JSON object for
//! scripts. Only facts pmem-core knows are reported (header, mapping, domain); there is no heap,
//! lane or transaction state yet.

use std::path::Path;

use pmem_core::internals::header::format_uuid;
use pmem_core::{
    Backing, DomainKind, Durability, HeaderFault, NvdimmRegion, PoolHeader, Region, ShutdownRecord,
};
use serde_json::{json, Value};

use crate::check::{CheckOutcome, CollectionsWalk, CopyStatus};
use crate::size::format_size;

/// Width of the key column in text output.
const KEY_WIDTH: usize = 15;

/// Accumulates `key  value` lines.
#[derive(Debug, Default)]
pub(crate) struct Table(String);

impl Table {
    /// Appends one line.
    pub(crate) fn row(&mut self, key: &str, value: impl std::fmt::Display) {
        self.0.push_str(&format!("{key:<KEY_WIDTH$} {value}\n"));
    }

    /// The finished text.
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// Short name of a backing kind.
pub(crate) fn backing_name(b: Backing) -> &'static str {
    match b {
        Backing::File => "file",
        Backing::DeviceDax => "device-dax",
        _ => "unknown",
    }
}

/// What a domain means, for the text output.
fn domain_meaning(d: DomainKind) -> &'static str {
    match d {
        DomainKind::CacheFlush(_) => "cache-line flush + sfence",
        DomainKind::Eadr => "eADR: no flush, sfence",
        DomainKind::Msync => "msync(MS_SYNC) of dirty pages",
        DomainKind::Journaled => "copy-on-write mapping, records appended to a journal, fdatasync per commit",
        DomainKind::Paged => "paged memory of an external backing",
        _ => "unknown",
    }
}

/// What a durability promise means, for the text output.
fn durability_text(d: Durability) -> &'static str {
    match d {
        Durability::PowerLoss => "survives power loss",
        Durability::ProcessCrash => {
            "survives process death only, not power loss: tmpfs/ramfs, or a file only treated as \
             persistent memory"
        }
        _ => "unknown",
    }
}

/// The libnvdimm region under a pool, for the text output.
fn nvdimm_text(n: Option<&NvdimmRegion>) -> String {
    match n {
        None => "none (not on NVDIMM or CXL persistent memory, or sysfs does not say)".into(),
        Some(n) => format!(
            "{}: persistence_domain {}, DIMMs {}, unsafe shutdowns {}",
            n.name,
            n.domain.name(),
            if n.dimms.is_empty() {
                "none listed".to_owned()
            } else {
                n.dimms.join(" ")
            },
            n.unsafe_shutdowns
                .map_or_else(|| "unknown".to_owned(), |c| c.to_string())
        ),
    }
}

/// The libnvdimm region under a pool, as JSON (`null` if none).
fn nvdimm_json(n: Option<&NvdimmRegion>) -> Value {
    n.map_or(Value::Null, |n| {
        json!({
            "region": n.name,
            "persistence_domain": n.domain.name(),
            "dimms": n.dimms,
            "unsafe_shutdowns": n.unsafe_shutdowns,
        })
    })
}

/// A header's unsafe-shutdown record, for the text output; `ours`: the dirty mark is this
/// process's open.
fn shutdown_text(r: ShutdownRecord, ours: bool) -> String {
    match r.count {
        None => "no unsafe-shutdown count recorded".into(),
        Some(c) => format!(
            "unsafe-shutdown count {c} recorded; {}",
            match (r.dirty, ours) {
                (true, true) => "marked in use by this open (cleared when it closes)",
                (true, false) => "in use (open, or not closed cleanly)",
                (false, _) => "closed cleanly",
            }
        ),
    }
}

/// A header's unsafe-shutdown record, as JSON.
fn shutdown_json(r: ShutdownRecord) -> Value {
    json!({ "count": r.count, "device_id": r.device_id, "dirty": r.dirty })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `64 MiB (67108864 bytes)`, or just `12345 bytes`.
fn size_both(n: u64) -> String {
    let human = format_size(n);
    if human.ends_with(" bytes") {
        human
    } else {
        format!("{human} ({n} bytes)")
    }
}

/// Unix seconds as `YYYY-MM-DD hh:mm:ss UTC`.
pub(crate) fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Rows describing a header copy's fields.
fn header_rows(t: &mut Table, h: &PoolHeader, shutdown_ours: bool) {
    t.row("layout", format!("{:?}", h.layout_name()));
    t.row("uuid", format_uuid(&h.uuid));
    t.row("version", h.version);
    t.row("pool size", size_both(h.pool_size));
    t.row(
        "data area",
        format!(
            "{:#x}..{:#x}, {}",
            h.data_offset,
            h.data_offset + h.data_size,
            size_both(h.data_size)
        ),
    );
    t.row("backup header", format!("at {:#x}", h.backup_offset));
    t.row("flags", format!("{:#x}", h.flags));
    t.row("pointer tag", format!("{:#06x}", h.pptr_tag));
    t.row("shutdown", shutdown_text(h.shutdown_record(), shutdown_ours));
    t.row(
        "created",
        format!("{} (unix {})", format_utc(h.created_secs), h.created_secs),
    );
    t.row("checksum", format!("{:#010x} (crc32c)", h.checksum));
}

/// Rows describing how the region is mapped.
fn mapping_rows(t: &mut Table, r: &Region) {
    t.row("backing", backing_name(r.backing()));
    t.row("MAP_SYNC", yes_no(r.map_sync()));
    t.row(
        "domain",
        format!("{} ({})", r.domain().name(), domain_meaning(r.domain())),
    );
    t.row(
        "durability",
        format!("{}: {}", r.durability().name(), durability_text(r.durability())),
    );
    t.row("nvdimm region", nvdimm_text(r.nvdimm_region()));
    if let Some(j) = r.journal_path() {
        t.row("journal file", j.display());
    }
}

/// `ptm create` output.
pub(crate) fn created_text(r: &Region) -> String {
    let h = r.header();
    let mut t = Table::default();
    t.row("created", r.path().display());
    t.row("pool size", size_both(h.pool_size));
    t.row("data area", size_both(h.data_size));
    t.row("layout", format!("{:?}", h.layout_name()));
    t.row("uuid", format_uuid(&h.uuid));
    mapping_rows(&mut t, r);
    t.into_string()
}

/// `ptm info` text output.
pub(crate) fn info_text(r: &Region) -> String {
    let mut t = Table::default();
    t.row("pool", r.path().display());
    header_rows(&mut t, r.header(), r.shutdown_tracked());
    mapping_rows(&mut t, r);
    t.into_string()
}

/// The header fields as a JSON object.
fn header_json(h: &PoolHeader) -> Value {
    json!({
        "layout": h.layout_name(),
        "uuid": format_uuid(&h.uuid),
        "version": h.version,
        "pool_size": h.pool_size,
        "data_offset": h.data_offset,
        "data_size": h.data_size,
        "backup_offset": h.backup_offset,
        "flags": h.flags,
        "pptr_tag": h.pptr_tag,
        "shutdown": shutdown_json(h.shutdown_record()),
        "created_secs": h.created_secs,
        "checksum": h.checksum,
    })
}

/// `ptm info --json` output: one object.
pub(crate) fn info_json(r: &Region) -> Value {
    json!({
        "path": r.path().to_string_lossy(),
        "header": header_json(r.header()),
        "backing": backing_name(r.backing()),
        "map_sync": r.map_sync(),
        "domain": r.domain().name(),
        "durability": r.durability().name(),
        "nvdimm_region": nvdimm_json(r.nvdimm_region()),
    })
}

/// One header copy's status, for text.
fn copy_text(s: &CopyStatus) -> String {
    match s {
        Ok(h) => format!(
            "ok (uuid {}, pool {})",
            format_uuid(&h.uuid),
            format_size(h.pool_size)
        ),
        Err(HeaderFault::Missing) => "missing (file too short to hold it)".into(),
        Err(HeaderFault::Version(v)) => format!("unsupported format version {v}"),
        Err(f) => format!("damaged: {f}"),
    }
}

/// One header copy's status, for JSON.
fn copy_json(s: &CopyStatus) -> Value {
    match s {
        Ok(h) => json!({ "status": "ok", "uuid": format_uuid(&h.uuid), "pool_size": h.pool_size }),
        Err(HeaderFault::Missing) => {
            json!({ "status": "missing", "problem": HeaderFault::Missing.to_string() })
        }
        Err(f @ HeaderFault::Version(v)) => {
            json!({ "status": "unsupported_version", "version": v, "problem": f.to_string() })
        }
        Err(f) => json!({ "status": "damaged", "problem": f.to_string() }),
    }
}

/// `ptm check` text output.
pub(crate) fn check_text(path: &Path, o: &CheckOutcome) -> String {
    let mut t = Table::default();
    t.row("pool", format!("{} ({} bytes)", path.display(), o.file_len));
    t.row("primary header", copy_text(&o.primary));
    t.row("backup header", copy_text(&o.backup));
    if o.copies_differ {
        t.row("copies", "both valid but different (the primary wins)");
    }
    if let Some(p) = &o.size_problem {
        t.row("size", p);
    }
    if let Some(j) = &o.journal {
        j.rows(&mut t);
    }
    if let Some(r) = o.repair {
        t.row("repair", r.describe());
    }
    if let Some(n) = o.journal_dropped {
        t.row(
            "journal repair",
            format!("replayed the valid prefix, dropped {n} records (the damaged one and those after it)"),
        );
    }
    if let Ok(h) = &o.primary {
        let record = h.shutdown_record();
        if record.count.is_some() {
            t.row("shutdown", shutdown_text(record, false));
        }
    }
    if let Some(u) = &o.unsafe_shutdown {
        t.row(
            "unsafe shutdown",
            format!(
                "the device{} counted an unsafe shutdown while the pool was in use (count {} at open, {} now)",
                if u.device_changed { " (other DIMMs)" } else { "" },
                u.recorded,
                u.now
            ),
        );
    }
    if let Some(r) = o.shutdown_accepted {
        t.row(
            "accepted",
            format!("transaction metadata verified; {}", shutdown_text(r, false)),
        );
    }
    match &o.open {
        Some(Ok(open)) => t.row(
            "open",
            format!(
                "ok (domain {}, backing {}, MAP_SYNC {})",
                open.domain,
                open.backing,
                yes_no(open.map_sync)
            ),
        ),
        Some(Err(e)) => t.row("open", format!("failed: {e}")),
        None => t.row("open", "not tried (damage found)"),
    }
    if let Some(w) = &o.walk {
        walk_rows(&mut t, w);
    }
    t.row("result", o.verdict_text());
    t.into_string()
}

/// `ptm check`'s rows on the walk of the collections.
fn walk_rows(t: &mut Table, w: &CollectionsWalk) {
    match w {
        CollectionsWalk::Walked(r) => {
            t.row(
                "collections",
                format!(
                    "{} structures, {} entries, {} blocks walked from the root schema",
                    r.structures, r.entries, r.blocks
                ),
            );
            t.row(
                "reachable",
                format!(
                    "{} blocks; key buffers {}, boxes {}, pointer targets {}",
                    r.reachable.len(),
                    r.key_blocks,
                    r.boxes,
                    r.pointers
                ),
            );
            if r.unreachable.is_empty() {
                t.row("unreachable", "none: every allocated block is reachable");
            } else {
                t.row(
                    "unreachable",
                    format!(
                        "{} {}, {} bytes unreachable from the schema: leaked, or reached only \
                         through data the schema does not describe (an offset kept in an integer)",
                        r.unreachable.len(),
                        if r.unreachable.len() == 1 { "block" } else { "blocks" },
                        r.unreachable_bytes()
                    ),
                );
            }
            for n in &r.not_walked {
                t.row("not walked", n);
            }
        }
        CollectionsWalk::Corrupt(e) => t.row("collections", format!("corrupt: {e}")),
        CollectionsWalk::NoSchema => t.row("collections", "no schema recorded: collections not walked"),
        CollectionsWalk::FingerprintOnly => t.row(
            "collections",
            "only the schema's fingerprint is recorded (its description was too long): collections not walked",
        ),
        CollectionsWalk::BarePool => t.row("collections", "none (bare pmem-core pool)"),
        CollectionsWalk::RecoveryPending(n) => t.row(
            "collections",
            format!(
                "not walked: recovery has not decided the transactions of {n} lane(s) yet; open the \
                 pool once (with your program) to recover them"
            ),
        ),
        CollectionsWalk::Failed(e) => t.row("collections", format!("not walked: {e}")),
    }
}

/// `ptm check --json`'s `collections` object.
fn walk_json(w: &CollectionsWalk) -> Value {
    let mut v = json!({ "status": w.key() });
    match w {
        CollectionsWalk::Walked(r) => {
            v["structures"] = r.structures.into();
            v["entries"] = r.entries.into();
            v["blocks"] = r.blocks.into();
            v["key_blocks"] = r.key_blocks.into();
            v["boxes"] = r.boxes.into();
            v["pointers"] = r.pointers.into();
            v["reachable_blocks"] = (r.reachable.len() as u64).into();
            v["unreachable_blocks"] = (r.unreachable.len() as u64).into();
            v["unreachable_bytes"] = r.unreachable_bytes().into();
            v["not_walked"] = r.not_walked.clone().into();
        }
        CollectionsWalk::Corrupt(e) | CollectionsWalk::Failed(e) => v["error"] = e.clone().into(),
        CollectionsWalk::RecoveryPending(n) => v["lanes_with_log"] = (*n as u64).into(),
        _ => {}
    }
    v
}

/// `ptm check --json` output: one object.
pub(crate) fn check_json(path: &Path, o: &CheckOutcome) -> Value {
    let (opens, open_error, domain) = match &o.open {
        Some(Ok(open)) => (Value::Bool(true), Value::Null, Value::from(open.domain)),
        Some(Err(e)) => (Value::Bool(false), Value::from(e.clone()), Value::Null),
        None => (Value::Null, Value::Null, Value::Null),
    };
    json!({
        "path": path.to_string_lossy(),
        "file_len": o.file_len,
        "primary": copy_json(&o.primary),
        "backup": copy_json(&o.backup),
        "copies_differ": o.copies_differ,
        "size_problem": o.size_problem,
        "damage_found": o.damage_found(),
        "repair": o.repair.map(|r| r.key()),
        "journal": o.journal.as_ref().map(crate::journal::JournalInfo::json),
        "journal_records_dropped": o.journal_dropped,
        "unsafe_shutdown": o.unsafe_shutdown.map(|u| json!({
            "recorded": u.recorded,
            "now": u.now,
            "device_changed": u.device_changed,
        })),
        "unsafe_shutdown_accepted": o.shutdown_accepted.map(shutdown_json),
        "opens": opens,
        "open_error": open_error,
        "domain": domain,
        "collections": o.walk.as_ref().map_or(Value::Null, walk_json),
        "ok": o.is_ok(),
    })
}

/// The transaction layer's rows (`ptm info`, `ptm create`).
pub(crate) fn txn_text(s: &ptm::Summary) -> String {
    let g = &s.geometry;
    let h = &s.heap;
    let mut t = Table::default();
    t.row(
        "lanes",
        format!("{} x {}", g.lane_count, format_size(g.lane_size)),
    );
    t.row(
        "lane logs",
        if g.packed_log {
            "packed (superblock format 5)"
        } else {
            "64-byte aligned records (superblock format 3 or 4)"
        },
    );
    t.row("root", format!("{} bytes at {:#x}", g.root_size, g.root_offset));
    t.row(
        "heap",
        format!(
            "{} at {:#x} ({} chunks of 64 KiB)",
            format_size(g.heap_size),
            g.heap_offset,
            h.chunks
        ),
    );
    t.row(
        "heap used",
        format!(
            "{} ({} slab chunks, {} run chunks)",
            format_size(h.used_bytes),
            h.slab_chunks,
            h.run_chunks
        ),
    );
    t.row(
        "heap free",
        format!(
            "{} ({} in free chunks, largest run {} chunks; {} in slab blocks of their class)",
            format_size(h.free_bytes),
            format_size(h.free_chunks * ptm::internals::heap::CHUNK),
            h.largest_free_run,
            format_size(h.slab_free_bytes),
        ),
    );
    t.row(
        "fragmentation",
        format!(
            "{:.2} of free bytes outside the largest free run ({:.2} among free chunks)",
            h.free_space_fragmentation(),
            h.fragmentation()
        ),
    );
    for (c, &block) in ptm::internals::heap::CLASSES.iter().enumerate() {
        let slabs = h.per_class_slabs.get(c).copied().unwrap_or(0);
        if slabs == 0 {
            continue;
        }
        let used = h.per_class.get(c).copied().unwrap_or(0);
        let cap = h.class_capacity(c);
        t.row(
            &format!("class {block}"),
            format!(
                "{used}/{cap} blocks used ({:.0}%) in {slabs} slab{} of {} KiB",
                100.0 * used as f64 / cap.max(1) as f64,
                if slabs == 1 { "" } else { "s" },
                (ptm::internals::heap::slab_geom(c).chunks * ptm::internals::heap::CHUNK) >> 10
            ),
        );
    }
    t.row("generation", s.generation);
    t.row(
        "clean shutdown",
        if s.clean {
            "yes"
        } else {
            "no (recovery runs at the next open)"
        },
    );
    t.row("lanes with log", s.lanes_with_log);
    t.into_string()
}

/// The transaction layer as JSON.
pub(crate) fn txn_json(s: &ptm::Summary) -> Value {
    let g = &s.geometry;
    let h = &s.heap;
    json!({
        "lanes": g.lane_count,
        "lane_size": g.lane_size,
        "packed_log": g.packed_log,
        "root_offset": g.root_offset,
        "root_size": g.root_size,
        "heap_offset": g.heap_offset,
        "heap_size": g.heap_size,
        "generation": s.generation,
        "clean": s.clean,
        "lanes_with_log": s.lanes_with_log,
        "heap_stats": {
            "chunks": h.chunks,
            "free_chunks": h.free_chunks,
            "slab_chunks": h.slab_chunks,
            "run_chunks": h.run_chunks,
            "used_bytes": h.used_bytes,
            "free_bytes": h.free_bytes,
            "per_class": h.per_class,
            "per_class_slabs": h.per_class_slabs,
            "slab_free_bytes": h.slab_free_bytes,
            "free_runs": h.free_runs,
            "largest_free_run": h.largest_free_run,
            "fragmentation": h.fragmentation(),
            "free_space_fragmentation": h.free_space_fragmentation(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn table_aligns_keys() {
        let mut t = Table::default();
        t.row("a", 1);
        t.row("domain", "clwb");
        assert_eq!(t.into_string(), "a               1\ndomain          clwb\n");
    }
}
