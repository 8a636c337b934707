//! What sysfs says about the hardware under a pool: the libnvdimm region (`regionN`) its device
//! belongs to, the region's persistence domain, and the unsafe-shutdown counts of the DIMMs
//! (or CXL memory devices) the region is made of.
//!
//! The walk, for a device number `MAJ:MIN` (the file system's `st_dev` for a pool file, the
//! node's `st_rdev` for device-DAX):
//!
//! 1. `<root>/dev/{block,char}/MAJ:MIN` is a symlink into the device tree, e.g.
//!    `devices/…/ndbus0/region0/namespace0.0/block/pmem0` (fsdax, a partition adds
//!    `/pmem0p1`) or `devices/…/ndbus0/region0/dax0.0/dax0.0` (device-DAX). Its nearest
//!    ancestor named `region<digits>` whose parent is a bus `ndbus<digits>` is the region. A
//!    device that is not on libnvdimm (a SATA or NVMe disk, tmpfs's anonymous device,
//!    device-mapper, device-DAX on a CXL RAM region) has no such ancestor: no region.
//! 2. `<region>/persistence_domain` holds `cpu_cache` (the CPU caches are inside the
//!    persistence domain: eADR), `memory_controller` (ADR: flushed lines are safe) or nothing
//!    (the kernel hides the file when the platform does not say).
//! 3. `<region>/mapping0`, `mapping1`, … hold `nmemX,offset,length,position`, one per DIMM
//!    extent of the region; the kernel shows exactly as many as the region has.
//! 4. `<root>/bus/nd/devices/nmemX/{nfit,papr,cxl}/dirty_shutdown` holds the DIMM's unsafe
//!    (dirty) shutdown count, by provider: ACPI NFIT (Intel), PAPR (POWER) or CXL; the
//!    matching `…/id` its unique id where the provider has one.
//!
//! Anything missing, unreadable or malformed makes the answer *unknown*, never an error and
//! never a panic: the region then keeps the safe default (flush every line, no shutdown check).
//! The root is `/sys` unless [`RegionOptions::sysfs_root`](super::RegionOptions::sysfs_root)
//! or `PTM_SYSFS_ROOT` names another one (tests build fake trees).

use std::io::Read;
use std::path::{Path, PathBuf};

/// The sysfs root when neither the option nor the environment names one.
pub(super) const DEFAULT_SYSFS_ROOT: &str = "/sys";

/// Most DIMM extents read from one region (a region interleaves at most a few dozen DIMMs; the
/// bound only keeps a garbage tree from making the walk long).
const MAX_MAPPINGS: usize = 256;

/// Longest sysfs attribute read (they are one short line).
const MAX_ATTR_LEN: u64 = 4096;

/// The providers whose DIMM attributes carry a dirty-shutdown count, in the order tried.
const PROVIDERS: [&str; 3] = ["nfit", "papr", "cxl"];

/// The persistence domain the platform reports for a libnvdimm region
/// (`/sys/bus/nd/devices/regionN/persistence_domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlatformDomain {
    /// `cpu_cache`: the platform flushes the CPU caches to the media on power loss (eADR), so
    /// a store is persistent once it is globally visible; flushes are not needed.
    CpuCache,
    /// `memory_controller`: the platform drains the memory controller's queues on power loss
    /// (ADR, as on NVDIMMs and CXL memory devices), so lines must be flushed out of the caches.
    MemoryController,
    /// The attribute is absent, empty or unrecognized: treated like `memory_controller`.
    Unknown,
}

impl PlatformDomain {
    /// `cpu_cache`, `memory_controller` or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            PlatformDomain::CpuCache => "cpu_cache",
            PlatformDomain::MemoryController => "memory_controller",
            PlatformDomain::Unknown => "unknown",
        }
    }

    /// Parses the attribute's content (surrounding white space ignored); anything else than
    /// the two known words is [`Unknown`](PlatformDomain::Unknown).
    fn parse(text: &str) -> PlatformDomain {
        match text.trim() {
            "cpu_cache" => PlatformDomain::CpuCache,
            "memory_controller" => PlatformDomain::MemoryController,
            _ => PlatformDomain::Unknown,
        }
    }
}

/// The libnvdimm region a pool's device belongs to, as sysfs described it at open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NvdimmRegion {
    /// The region's name, `regionN`.
    pub name: String,
    /// What the platform says about its persistence domain.
    pub domain: PlatformDomain,
    /// The DIMMs (`nmemX`) whose extents make up the region, in mapping order.
    pub dimms: Vec<String>,
    /// The sum of the DIMMs' unsafe-shutdown counts, or `None` if the region has no DIMMs or
    /// any of them does not report a readable count.
    pub unsafe_shutdowns: Option<u64>,
    /// A 64-bit digest of the DIMMs' unique ids (sorted), or 0 if none reports one: tells
    /// whether a recorded count was taken on the same DIMMs.
    pub device_id: u64,
}

/// Which device number a pool lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeviceNumber {
    /// The block device holding a file system (`st_dev` of a pool file).
    Block(u64),
    /// A character device (`st_rdev` of a device-DAX node).
    Char(u64),
}

/// Finds the libnvdimm region of `device` in the sysfs tree at `root`, or `None` when there is
/// none (or the tree cannot be read). Never fails: unreadable parts of a region found make
/// their fields unknown.
pub(super) fn find_region(root: &Path, device: DeviceNumber) -> Option<NvdimmRegion> {
    let (kind, dev) = match device {
        DeviceNumber::Block(d) => ("block", d),
        DeviceNumber::Char(d) => ("char", d),
    };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let root = std::fs::canonicalize(root).ok()?;
    let mut dir = std::fs::canonicalize(root.join(format!("dev/{kind}/{major}:{minor}"))).ok()?;
    // The nearest ancestor that is a libnvdimm region (`regionN` on a bus `ndbusM`), staying
    // inside the tree.
    loop {
        if !dir.starts_with(&root) || dir == root {
            return None;
        }
        if is_nd_region(&dir) {
            break;
        }
        if !dir.pop() {
            return None;
        }
    }
    let name = dir.file_name()?.to_str()?.to_owned();
    let domain = read_attr(&dir.join("persistence_domain"))
        .map_or(PlatformDomain::Unknown, |t| PlatformDomain::parse(&t));
    let (dimms, all_parsed) = region_dimms(&dir);
    let dimm_dir = |d: &str| root.join("bus/nd/devices").join(d);
    let unsafe_shutdowns = if all_parsed && !dimms.is_empty() {
        dimms.iter().try_fold(0u64, |sum, d| {
            provider_attr(&dimm_dir(d), "dirty_shutdown")
                .and_then(|t| parse_count(&t))
                .map(|c| sum.wrapping_add(c))
        })
    } else {
        None
    };
    let mut ids: Vec<String> = dimms
        .iter()
        .filter_map(|d| provider_attr(&dimm_dir(d), "id"))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    ids.sort();
    let device_id = if ids.is_empty() { 0 } else { digest(&ids) };
    Some(NvdimmRegion {
        name,
        domain,
        dimms,
        unsafe_shutdowns,
        device_id,
    })
}

/// The DIMM names of the region at `dir` from its `mappingN` attributes, and whether every
/// mapping parsed.
fn region_dimms(dir: &Path) -> (Vec<String>, bool) {
    let mut dimms: Vec<String> = Vec::new();
    let mut all_parsed = true;
    for i in 0..MAX_MAPPINGS {
        let path = dir.join(format!("mapping{i}"));
        if !path.exists() {
            break;
        }
        match read_attr(&path)
            .as_deref()
            .and_then(|t| t.trim().split(',').next())
        {
            Some(d) if is_dimm_name(d) => {
                if !dimms.iter().any(|x| x == d) {
                    dimms.push(d.to_owned());
                }
            }
            _ => all_parsed = false,
        }
    }
    (dimms, all_parsed)
}

/// The first readable `<dimm>/<provider>/<attr>` of the known providers.
fn provider_attr(dimm: &Path, attr: &str) -> Option<String> {
    PROVIDERS.iter().find_map(|p| read_attr(&dimm.join(p).join(attr)))
}

/// Whether `dir` is a libnvdimm region: named `regionN` and a child of a bus `ndbusM`. (A CXL
/// region is named `regionN` too but sits under a decoder; its persistent memory is exposed as
/// an nd region on the CXL bridge's `ndbusM`, which is found instead.)
fn is_nd_region(dir: &Path) -> bool {
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .map(str::to_owned)
    };
    name(Some(dir)).is_some_and(|n| is_numbered(&n, "region"))
        && name(dir.parent()).is_some_and(|n| is_numbered(&n, "ndbus"))
}

/// `<prefix>N` with N decimal.
fn is_numbered(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `nmemN` with N decimal (so a garbage mapping cannot name a path outside the bus directory).
fn is_dimm_name(s: &str) -> bool {
    is_numbered(s, "nmem")
}

/// A count as the kernel prints it: decimal, or hexadecimal with `0x`; anything else (empty,
/// negative, too large, text) is `None`.
fn parse_count(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

/// Reads a short sysfs attribute as UTF-8; `None` if missing, unreadable, too long or not text.
fn read_attr(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_ATTR_LEN + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= MAX_ATTR_LEN).then_some(text)
}

/// FNV-1a (64 bit) over the ids, each followed by a NUL; never 0 (0 means "no id").
fn digest(ids: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.iter().flat_map(|s| s.bytes().chain([0])) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// The sysfs root chosen by an explicit option, else `PTM_SYSFS_ROOT`, else `/sys`.
pub(super) fn sysfs_root(option: Option<&Path>) -> PathBuf {
    option
        .map(Path::to_owned)
        .or_else(|| std::env::var_os(super::ENV_SYSFS_ROOT).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSFS_ROOT))
}

#[cfg(test)]
pub(crate) mod fake {
    //! Fake sysfs trees for tests.

    use std::path::{Path, PathBuf};

    /// One DIMM of a fake region: its name, its count file's content (under `provider`) and id.
    #[derive(Debug, Clone)]
    pub(crate) struct FakeDimm {
        pub(crate) name: String,
        pub(crate) provider: &'static str,
        pub(crate) count: Option<String>,
        pub(crate) id: Option<String>,
    }

    impl FakeDimm {
        /// An NFIT DIMM `name` with `count` and id `id-<name>`.
        pub(crate) fn nfit(name: &str, count: u64) -> FakeDimm {
            FakeDimm {
                name: name.into(),
                provider: "nfit",
                count: Some(format!("{count}\n")),
                id: Some(format!("8089-a2-1837-{name}\n")),
            }
        }
    }

    /// Builds, under `root`, a region `regionN` on bus `ndbus0` with the given persistence
    /// domain file content (`None`: no file) and DIMMs, and links the device `dev`
    /// (`"block"` or `"char"`, a `st_dev`/`st_rdev` value) to a namespace in it, the way the
    /// kernel does. Returns the region directory.
    pub(crate) fn region(
        root: &Path,
        region: &str,
        domain: Option<&str>,
        dimms: &[FakeDimm],
        kind: &str,
        dev: u64,
    ) -> PathBuf {
        let bus = root.join("devices/platform/ndbus0");
        let rdir = bus.join(region);
        let target = if kind == "block" {
            rdir.join("namespace0.0/block/pmem0")
        } else {
            rdir.join("dax0.0/dax0.0")
        };
        std::fs::create_dir_all(&target).unwrap();
        if let Some(d) = domain {
            std::fs::write(rdir.join("persistence_domain"), d).unwrap();
        }
        for (i, d) in dimms.iter().enumerate() {
            std::fs::write(
                rdir.join(format!("mapping{i}")),
                format!("{},0,1073741824,{i}\n", d.name),
            )
            .unwrap();
            set_dimm(root, d);
        }
        let link_dir = root.join("dev").join(kind);
        std::fs::create_dir_all(&link_dir).unwrap();
        let link = link_dir.join(format!("{}:{}", libc::major(dev), libc::minor(dev)));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, link).unwrap();
        rdir
    }

    /// Writes (or rewrites) one DIMM's attributes under `root/bus/nd/devices/<name>/`.
    pub(crate) fn set_dimm(root: &Path, d: &FakeDimm) {
        let dir = root.join("bus/nd/devices").join(&d.name).join(d.provider);
        std::fs::create_dir_all(&dir).unwrap();
        let count = dir.join("dirty_shutdown");
        match &d.count {
            Some(c) => std::fs::write(count, c).unwrap(),
            None => {
                let _ = std::fs::remove_file(count);
            }
        }
        if let Some(id) = &d.id {
            std::fs::write(dir.join("id"), id).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{region, set_dimm, FakeDimm};
    use super::*;

    fn dev() -> u64 {
        libc::makedev(259, 3)
    }

    #[test]
    fn domain_words_parse_and_anything_else_is_unknown() {
        assert_eq!(PlatformDomain::parse("cpu_cache\n"), PlatformDomain::CpuCache);
        assert_eq!(
            PlatformDomain::parse(" memory_controller \n"),
            PlatformDomain::MemoryController
        );
        for junk in [
            "",
            "\n",
            "cpu_cache memory_controller",
            "CPU_CACHE",
            "\u{fffd}",
            "cpu",
        ] {
            assert_eq!(PlatformDomain::parse(junk), PlatformDomain::Unknown, "{junk:?}");
        }
        // The names are the attribute's words (what `ptm info` prints).
        for d in [
            PlatformDomain::CpuCache,
            PlatformDomain::MemoryController,
            PlatformDomain::Unknown,
        ] {
            assert_eq!(PlatformDomain::parse(d.name()), d, "{d:?}");
        }
        assert_eq!(PlatformDomain::Unknown.name(), "unknown");
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn attributes_are_read_up_to_4096_bytes_and_no_further() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attr");
        // The word last, after padding: a read one byte short would cut it.
        let exact = format!("{}cpu_cache", " ".repeat(MAX_ATTR_LEN as usize - 9));
        std::fs::write(&path, &exact).unwrap();
        assert_eq!(read_attr(&path).as_deref(), Some(exact.as_str()));
        // One byte more is too long, however the rest reads.
        std::fs::write(
            &path,
            format!("cpu_cache{}", " ".repeat(MAX_ATTR_LEN as usize - 8)),
        )
        .unwrap();
        assert_eq!(read_attr(&path), None);
        assert_eq!(read_attr(&dir.path().join("missing")), None);
    }

    #[test]
    fn counts_parse_in_decimal_and_hex_and_garbage_is_none() {
        assert_eq!(parse_count("42\n"), Some(42));
        assert_eq!(parse_count("0x10"), Some(16));
        assert_eq!(parse_count("18446744073709551615"), Some(u64::MAX));
        for junk in ["", "-1", "18446744073709551616", "12abc", "0x", "many", "4 2"] {
            assert_eq!(parse_count(junk), None, "{junk:?}");
        }
        assert!(is_numbered("region12", "region") && !is_numbered("region", "region"));
        assert!(!is_numbered("regionx", "region") && !is_numbered("region1 ", "region"));
        assert!(is_dimm_name("nmem0") && !is_dimm_name("../../etc") && !is_dimm_name("nmem"));
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn a_block_device_on_an_nvdimm_region_is_found_with_its_domain_and_counts() {
        let root = tempfile::tempdir().unwrap();
        let dimms = [FakeDimm::nfit("nmem0", 3), FakeDimm::nfit("nmem1", 4)];
        region(
            root.path(),
            "region0",
            Some("cpu_cache\n"),
            &dimms,
            "block",
            dev(),
        );
        let r = find_region(root.path(), DeviceNumber::Block(dev())).unwrap();
        assert_eq!(r.name, "region0");
        assert_eq!(r.domain, PlatformDomain::CpuCache);
        assert_eq!(r.dimms, ["nmem0", "nmem1"]);
        assert_eq!(r.unsafe_shutdowns, Some(7));
        assert_ne!(r.device_id, 0);
        // The character-device table does not hold it.
        assert_eq!(find_region(root.path(), DeviceNumber::Char(dev())), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn a_device_dax_node_is_found_through_the_char_table() {
        let root = tempfile::tempdir().unwrap();
        let dimms = [FakeDimm {
            provider: "cxl",
            ..FakeDimm::nfit("nmem4", 9)
        }];
        region(
            root.path(),
            "region7",
            Some("memory_controller\n"),
            &dimms,
            "char",
            dev(),
        );
        let r = find_region(root.path(), DeviceNumber::Char(dev())).unwrap();
        assert_eq!(
            (r.name.as_str(), r.domain, r.unsafe_shutdowns),
            ("region7", PlatformDomain::MemoryController, Some(9))
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn missing_or_garbage_attributes_make_fields_unknown_never_an_error() {
        let root = tempfile::tempdir().unwrap();
        let mut dimms = vec![FakeDimm::nfit("nmem0", 1), FakeDimm::nfit("nmem1", 2)];
        let rdir = region(root.path(), "region0", None, &dimms, "block", dev());
        let found = || find_region(root.path(), DeviceNumber::Block(dev())).unwrap();
        assert_eq!(
            found().domain,
            PlatformDomain::Unknown,
            "no persistence_domain file"
        );
        assert_eq!(found().unsafe_shutdowns, Some(3));
        // One DIMM's count is garbage, then missing: the sum is unknown.
        dimms[1].count = Some("lots\n".into());
        set_dimm(root.path(), &dimms[1]);
        assert_eq!(found().unsafe_shutdowns, None);
        dimms[1].count = None;
        set_dimm(root.path(), &dimms[1]);
        assert_eq!(found().unsafe_shutdowns, None);
        dimms[1].count = Some("2".into());
        set_dimm(root.path(), &dimms[1]);
        // A garbage mapping (a path instead of a DIMM name) makes the count unknown too.
        std::fs::write(rdir.join("mapping2"), "../../../etc,0,0,0\n").unwrap();
        assert_eq!(found().unsafe_shutdowns, None);
        std::fs::write(rdir.join("mapping2"), [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(found().unsafe_shutdowns, None);
        std::fs::remove_file(rdir.join("mapping2")).unwrap();
        assert_eq!(found().unsafe_shutdowns, Some(3));
        // A huge attribute is not read whole.
        std::fs::write(rdir.join("persistence_domain"), "x".repeat(10_000)).unwrap();
        assert_eq!(found().domain, PlatformDomain::Unknown);
        // A region without DIMMs (e.g. legacy e820 pmem) has no count.
        for i in 0..2 {
            std::fs::remove_file(rdir.join(format!("mapping{i}"))).unwrap();
        }
        assert_eq!(found().unsafe_shutdowns, None);
        assert_eq!(found().device_id, 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn a_mapping_naming_a_path_is_not_read_as_a_dimm() {
        let root = tempfile::tempdir().unwrap();
        let dimms = [FakeDimm::nfit("nmem0", 1), FakeDimm::nfit("nmem1", 2)];
        let rdir = region(root.path(), "region0", None, &dimms, "block", dev());
        // A mapping naming a directory outside the bus that holds a readable count: the count
        // is unknown, not the sum with that directory's count.
        std::fs::write(rdir.join("mapping2"), "../../../escape,0,0,2\n").unwrap();
        let escape = root.path().join("escape/nfit");
        std::fs::create_dir_all(&escape).unwrap();
        std::fs::write(escape.join("dirty_shutdown"), "0\n").unwrap();
        let r = find_region(root.path(), DeviceNumber::Block(dev())).unwrap();
        assert_eq!(r.dimms, ["nmem0", "nmem1"]);
        assert_eq!(r.unsafe_shutdowns, None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn a_region_outside_the_tree_or_at_its_root_is_not_found() {
        // The device's link leads out of the tree into something laid out as a region.
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("ndbus0/region0/namespace0.0/block/pmem0");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(
            outside.path().join("ndbus0/region0/persistence_domain"),
            "cpu_cache\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("dev/block/259:3")).unwrap();
        assert_eq!(find_region(root.path(), DeviceNumber::Block(dev())), None);
        // The tree's root is itself named as a region on a bus: the walk stops at the root.
        let root = outside.path().join("ndbus0/region0");
        std::fs::create_dir_all(root.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(
            root.join("namespace0.0/block/pmem0"),
            root.join("dev/block/259:3"),
        )
        .unwrap();
        assert_eq!(find_region(&root, DeviceNumber::Block(dev())), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn devices_off_libnvdimm_and_broken_trees_have_no_region() {
        let root = tempfile::tempdir().unwrap();
        // No tree at all, a missing root, a disk that is not on an nd bus.
        assert_eq!(find_region(root.path(), DeviceNumber::Block(dev())), None);
        assert_eq!(
            find_region(&root.path().join("nope"), DeviceNumber::Block(dev())),
            None
        );
        let disk = root.path().join("devices/pci0000:00/0000:00:1f.2/ata1/block/sda");
        std::fs::create_dir_all(&disk).unwrap();
        std::fs::create_dir_all(root.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&disk, root.path().join("dev/block/259:3")).unwrap();
        assert_eq!(find_region(root.path(), DeviceNumber::Block(dev())), None);
        // Device-DAX on a CXL RAM region: a `region0`, but a CXL one under a decoder (volatile
        // memory, no persistence domain), not a libnvdimm region.
        let cxl = root
            .path()
            .join("devices/platform/ACPI0017:00/root0/decoder0.0/region0");
        let dax = cxl.join("dax_region0/dax0.0");
        std::fs::create_dir_all(&dax).unwrap();
        std::fs::write(cxl.join("mode"), "ram\n").unwrap();
        std::fs::create_dir_all(root.path().join("dev/char")).unwrap();
        std::os::unix::fs::symlink(&dax, root.path().join("dev/char/259:3")).unwrap();
        assert_eq!(find_region(root.path(), DeviceNumber::Char(dev())), None);
        // A link leaving the tree is not followed out of it.
        let outside = tempfile::tempdir().unwrap();
        let escaped = outside.path().join("region0/namespace0.0");
        std::fs::create_dir_all(&escaped).unwrap();
        std::fs::remove_file(root.path().join("dev/block/259:3")).unwrap();
        std::os::unix::fs::symlink(&escaped, root.path().join("dev/block/259:3")).unwrap();
        assert_eq!(find_region(root.path(), DeviceNumber::Block(dev())), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn the_device_id_follows_the_dimms_not_their_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (x, y) = (FakeDimm::nfit("nmem0", 1), FakeDimm::nfit("nmem1", 1));
        region(a.path(), "region0", None, &[x.clone(), y.clone()], "block", dev());
        region(b.path(), "region0", None, &[y, x.clone()], "block", dev());
        let id = |r: &Path| find_region(r, DeviceNumber::Block(dev())).unwrap().device_id;
        assert_eq!(id(a.path()), id(b.path()));
        let c = tempfile::tempdir().unwrap();
        region(
            c.path(),
            "region0",
            None,
            &[x, FakeDimm::nfit("nmem2", 1)],
            "block",
            dev(),
        );
        assert_ne!(id(a.path()), id(c.path()));
    }
}
