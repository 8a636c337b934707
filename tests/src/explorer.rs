//! The explorer: runs a workload on a simulated persistence domain, and at every drain builds
//! the crash images the fault model allows, recovers each one and checks it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ptm::pmem_core::{CrashPoint, FaultModel, Simulation};
use ptm::pmem_core::{Region, RegionOptions};
use ptm::{Persistent, Pool, PoolOptions};

use crate::image_file::ImageFile;
use crate::images::{followup_seed, point_seed, recovery_seed, ImageBuffer, ImageId, Plan};
use crate::report::{Budget, CrashImage, Failure, Report, Stage};
use crate::Error;

/// The error type of setup, workload and check closures: anything that converts into it
/// (`ptm::Error`, `String`, `&str`, `std::io::Error`, ...) works with `?` and `.into()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What setup, workload and check closures return.
pub type CheckResult = Result<(), BoxError>;

/// Environment variable: a positive integer multiplying the explorer's budgets and its random
/// images per crash point, for a longer run (`PTM_CRASHTEST_SCALE=20 cargo test ...`).
pub const ENV_SCALE: &str = "PTM_CRASHTEST_SCALE";

/// Default random images per workload crash point (besides "nothing" and "everything").
pub const DEFAULT_IMAGES_PER_POINT: u32 = 8;
/// Default random images per crash point inside a recovery (double crash).
pub const DEFAULT_RECOVERY_IMAGES_PER_POINT: u32 = 2;
/// Default limit of pending units up to which every subset is checked.
pub const DEFAULT_EXHAUSTIVE_UNITS: u32 = 6;
/// Default budget of workload crash points explored.
pub const DEFAULT_MAX_POINTS: u64 = 2_000;
/// Default budget of images checked.
pub const DEFAULT_MAX_IMAGES: u64 = 50_000;
/// Default pool size.
pub const DEFAULT_POOL_SIZE: u64 = 1 << 20;
/// Default number of failures kept in the report.
pub const DEFAULT_MAX_FAILURES: usize = 16;

/// Explores the crash states of a workload (builder; see the [crate docs](crate)).
///
/// Settings that determine the images (`seed`, `fault_model`, `exhaustive_units`,
/// `recovery_images_per_point`) appear in a failure's reproduction line; keep the pool settings
/// (`pool_size`, `pool_options`, `layout`) of the run that failed.
#[derive(Debug, Clone)]
pub struct Explorer {
    seed: u64,
    images_per_point: u32,
    recovery_images_per_point: u32,
    exhaustive_units: u32,
    fault_model: FaultModel,
    double_crash: bool,
    max_points: u64,
    max_images: u64,
    max_time: Option<Duration>,
    max_failures: usize,
    only_point: Option<u64>,
    only_image: Option<u32>,
    only_recovery: Option<(u64, u32)>,
    only_followup: Option<(u64, u32)>,
    pool_size: u64,
    pool_options: PoolOptions,
    layout: String,
    image_dir: Option<PathBuf>,
    scale: Option<u32>,
}

impl Default for Explorer {
    fn default() -> Self {
        Explorer {
            seed: 0,
            images_per_point: DEFAULT_IMAGES_PER_POINT,
            recovery_images_per_point: DEFAULT_RECOVERY_IMAGES_PER_POINT,
            exhaustive_units: DEFAULT_EXHAUSTIVE_UNITS,
            fault_model: FaultModel::Words,
            double_crash: false,
            max_points: DEFAULT_MAX_POINTS,
            max_images: DEFAULT_MAX_IMAGES,
            max_time: None,
            max_failures: DEFAULT_MAX_FAILURES,
            only_point: None,
            only_image: None,
            only_recovery: None,
            only_followup: None,
            pool_size: DEFAULT_POOL_SIZE,
            pool_options: PoolOptions::new().layout("crashtest").lanes(1),
            layout: "crashtest".to_owned(),
            image_dir: None,
            scale: None,
        }
    }
}

impl Explorer {
    /// Default settings: seed 0, word fault model, 8 random images per crash point, every subset
    /// when at most 6 units are pending, no double crash; budgets of 2000 crash points and
    /// 50 000 images (times `PTM_CRASHTEST_SCALE`) and no time budget, so whether an exploration
    /// completes depends on counts alone, never on the machine's speed or load; 1 MiB pools with
    /// one lane (so the lane a transaction takes, hence every offset, is the same in every run).
    pub fn new() -> Self {
        Self::default()
    }

    /// The seed all random subsets derive from.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Random subsets checked per workload crash point, besides "nothing pending persisted" and
    /// "everything pending persisted" (when more units are pending than
    /// [`exhaustive_units`](Explorer::exhaustive_units)).
    pub fn images_per_point(mut self, k: u32) -> Self {
        self.images_per_point = k;
        self
    }

    /// Random subsets per crash point inside a recovery (double crash), besides nothing and
    /// everything; every subset is checked when there are at most `k + 2` of them.
    pub fn recovery_images_per_point(mut self, k: u32) -> Self {
        self.recovery_images_per_point = k;
        self
    }

    /// Up to this many pending units (at most 20), every subset is checked (2^n images).
    pub fn exhaustive_units(mut self, n: u32) -> Self {
        self.exhaustive_units = n;
        self
    }

    /// The fault model: independent 8-byte words (default) or whole 64-byte lines (x86).
    pub fn fault_model(mut self, model: FaultModel) -> Self {
        self.fault_model = model;
        self
    }

    /// Also crash inside recovery: each image is recovered on a simulated domain whose drains
    /// are crash points in turn; their images are recovered again and checked.
    pub fn double_crash(mut self, yes: bool) -> Self {
        self.double_crash = yes;
        self
    }

    /// Budget: workload crash points explored (times the scale).
    pub fn max_points(mut self, n: u64) -> Self {
        self.max_points = n;
        self
    }

    /// Budget: images checked (times the scale).
    pub fn max_images(mut self, n: u64) -> Self {
        self.max_images = n;
        self
    }

    /// Budget: wall time (times the scale; none by default). The workload always runs to its
    /// end; crash points past the budget are counted but not explored. A time budget makes how
    /// much is explored depend on the machine's speed and load: a test asserting
    /// [`Report::is_complete`] must not set one.
    pub fn max_time(mut self, t: Duration) -> Self {
        self.max_time = Some(t);
        self
    }

    /// Failures kept in the report (all are counted).
    pub fn max_failures(mut self, n: usize) -> Self {
        self.max_failures = n;
        self
    }

    /// Explore only workload crash point `point` (for reproduction).
    pub fn only_point(mut self, point: u64) -> Self {
        self.only_point = Some(point);
        self
    }

    /// At the explored crash points, check only image `image` (for reproduction).
    pub fn only_image(mut self, image: u32) -> Self {
        self.only_image = Some(image);
        self
    }

    /// Check only image `image` of recovery crash point `point` (implies
    /// [`double_crash`](Explorer::double_crash); for reproduction).
    pub fn only_recovery(mut self, point: u64, image: u32) -> Self {
        self.only_recovery = Some((point, image));
        self.double_crash = true;
        self
    }

    /// Check only image `image` of crash point `point` of the follow-up workload
    /// ([`run_then`](Explorer::run_then); for reproduction).
    pub fn only_followup(mut self, point: u64, image: u32) -> Self {
        self.only_followup = Some((point, image));
        self
    }

    /// Size of the pool the workload runs on (default 1 MiB).
    pub fn pool_size(mut self, bytes: u64) -> Self {
        self.pool_size = bytes;
        self
    }

    /// Options of the ptm pool (layout, lanes, lane size, lock timeout; default: layout
    /// `crashtest`, one lane). The explorer adds the simulation, and forces the cache-flush
    /// domain for the images (they live on tmpfs).
    pub fn pool_options(mut self, opts: PoolOptions) -> Self {
        self.pool_options = opts;
        self
    }

    /// Layout name of raw-region pools ([`run_raw`](Explorer::run_raw); default `crashtest`).
    pub fn layout(mut self, name: &str) -> Self {
        self.layout = name.to_owned();
        self
    }

    /// Directory for the pool and image files (default: a fresh directory in `/dev/shm`, else
    /// in the system temp directory).
    pub fn image_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.image_dir = Some(dir.into());
        self
    }

    /// Multiplies budgets and random images per point; overrides `PTM_CRASHTEST_SCALE`.
    pub fn scale(mut self, n: u32) -> Self {
        self.scale = Some(n.max(1));
        self
    }

    /// The scale in effect: [`scale`](Explorer::scale), else `PTM_CRASHTEST_SCALE`, else 1.
    pub fn effective_scale(&self) -> u32 {
        self.scale.unwrap_or_else(|| {
            std::env::var(ENV_SCALE)
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|&n| n > 0)
                .unwrap_or(1)
        })
    }

    /// The code of an explorer that checks exactly image `id` (append to nothing: it starts
    /// with `Explorer::new()`; add the pool settings of the failing run).
    pub fn reproduction(&self, id: &ImageId) -> String {
        let mut s = format!("Explorer::new().seed({})", self.seed);
        if self.fault_model != FaultModel::Words {
            s.push_str(".fault_model(FaultModel::Lines)");
        }
        if self.exhaustive_units != DEFAULT_EXHAUSTIVE_UNITS {
            s.push_str(&format!(".exhaustive_units({})", self.exhaustive_units));
        }
        if (id.recovery.is_some() || id.followup.is_some())
            && self.recovery_images_per_point != DEFAULT_RECOVERY_IMAGES_PER_POINT
        {
            s.push_str(&format!(
                ".recovery_images_per_point({})",
                self.recovery_images_per_point
            ));
        }
        s.push_str(&format!(".only_point({}).only_image({})", id.point, id.image));
        if let Some((p, i)) = id.recovery {
            s.push_str(&format!(".only_recovery({p}, {i})"));
        }
        if let Some((p, i)) = id.followup {
            s.push_str(&format!(".only_followup({p}, {i})"));
        }
        s
    }

    /// Explores a ptm workload.
    ///
    /// 1. Creates a pool with root `R` and runs `setup` on it (not explored), then closes it.
    /// 2. Reopens it on a simulated domain and runs `workload`, then closes it. Every drain from
    ///    that open to the close is a crash point, and so is the state after the last drain.
    /// 3. At each crash point, builds the images (see the crate docs), opens each one with
    ///    [`Pool::open`] (recovery runs) and calls `check` on it (`&mut`, so it may also call
    ///    `check_heap` or `allocated_blocks`). With
    ///    [`double_crash`](Explorer::double_crash), recovery itself runs on a simulated domain
    ///    and its drains are crash points too.
    ///
    /// `check` runs many times, synchronously inside the workload's drains: state the workload
    /// shares with it (e.g. a `Cell` counting the transactions that returned) tells it what
    /// had happened at the crash.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] / [`Error::Workload`] when those closures fail, pool errors of setup and
    /// workload, I/O errors writing images. Failing images are not errors: they are in the
    /// report's [`failures`](Report::failures).
    pub fn run<R: Persistent>(
        &self,
        setup: impl FnOnce(&Pool<R>) -> CheckResult,
        workload: impl FnOnce(&Pool<R>) -> CheckResult,
        check: impl Fn(&mut Pool<R>) -> CheckResult,
    ) -> Result<Report, Error> {
        self.run_pool(setup, workload, None, &check)
    }

    /// Explores a workload and, on every crash image once recovered, a *follow-up* workload:
    /// a crash, a recovery, more work in the same process, and a crash again.
    ///
    /// Like [`run`](Explorer::run), except that each workload image is opened on a simulated
    /// domain (recovery's own writes are then only as durable as its flushes and drains make
    /// them), checked, and then `followup` runs on that recovered pool, which is closed after
    /// it. Every drain of the follow-up (and of that close), and the state after its last
    /// drain, is a crash point: its images (nothing, everything, and
    /// [`recovery_images_per_point`](Explorer::recovery_images_per_point) random subsets, or
    /// every subset when there are at most that many + 2) are recovered normally and checked
    /// with `check`. With [`double_crash`](Explorer::double_crash), recovery's drains are crash
    /// points too, before the follow-up runs.
    ///
    /// What this finds that [`run`](Explorer::run) cannot: a recovery that writes something
    /// (a completion mark) and does not make it durable, which only matters once later work
    /// depends on it; in-memory state of the reopened pool (the allocator's free lists and
    /// quarantine) exercised by new transactions rather than rebuilt by another open; and
    /// protocols between lanes, when the follow-up changes, on another lane, what the
    /// workload's last transaction changed (hold a lane with a relaxed commit, see
    /// [`Pool::transaction_relaxed`], so the next transaction of the thread takes another).
    ///
    /// Images of the workload's crash points are checked with `check` (before the follow-up
    /// runs on them), images of the follow-up's crash points with `check_followup`. All of
    /// these run many times, synchronously inside the drains: state shared with them (`Cell`s)
    /// tells `check_followup` what the follow-up had returned at the crash (reset it at the
    /// follow-up's start) and what the recovered image held before it.
    ///
    /// # Errors
    ///
    /// As [`run`](Explorer::run). A follow-up that fails on a recovered image is a
    /// [`Failure`] of [`Stage::Followup`].
    pub fn run_then<R: Persistent>(
        &self,
        setup: impl FnOnce(&Pool<R>) -> CheckResult,
        workload: impl FnOnce(&Pool<R>) -> CheckResult,
        followup: impl Fn(&Pool<R>) -> CheckResult,
        check: impl Fn(&mut Pool<R>) -> CheckResult,
        check_followup: impl Fn(&mut Pool<R>) -> CheckResult,
    ) -> Result<Report, Error> {
        self.run_pool(setup, workload, Some((&followup, &check_followup)), &check)
    }

    fn run_pool<R: Persistent>(
        &self,
        setup: impl FnOnce(&Pool<R>) -> CheckResult,
        workload: impl FnOnce(&Pool<R>) -> CheckResult,
        followup: Option<Followup<'_, R>>,
        check: &dyn Fn(&mut Pool<R>) -> CheckResult,
    ) -> Result<Report, Error> {
        let start = Instant::now();
        let dir = self.tempdir()?;
        let base = dir.path().join("workload.pool");
        let opts = self.pool_options.clone().force_pmem(true);
        let pool = Pool::<R>::create(&base, self.pool_size, &opts)?;
        setup(&pool).map_err(Error::Setup)?;
        pool.close()?;
        let subject = PoolSubject {
            opts: opts.clone(),
            check,
            followup,
        };
        let sim = Simulation::new();
        let sim_opts = opts.simulation(sim.clone());
        self.explore(&subject, dir.path(), &base, &sim, start, || {
            let pool = Pool::<R>::open(&base, &sim_opts)?;
            workload(&pool).map_err(Error::Workload)?;
            pool.close()?;
            Ok(())
        })
    }

    /// Explores a workload written directly against a pmem-core [`Region`] (a toy protocol, or
    /// a layer below ptm). Like [`run`](Explorer::run), but the pool is a bare region of
    /// [`pool_size`](Explorer::pool_size) bytes with layout [`layout`](Explorer::layout), and
    /// `recover_and_check` both recovers and checks an image (with
    /// [`double_crash`](Explorer::double_crash), its drains are the recovery's crash points, and
    /// it is called again on their images while the outer call is still running: hence `Fn`).
    ///
    /// # Errors
    ///
    /// As [`run`](Explorer::run).
    pub fn run_raw(
        &self,
        setup: impl FnOnce(&mut Region) -> CheckResult,
        workload: impl FnOnce(&mut Region) -> CheckResult,
        recover_and_check: impl Fn(&mut Region) -> CheckResult,
    ) -> Result<Report, Error> {
        let start = Instant::now();
        let dir = self.tempdir()?;
        let base = dir.path().join("workload.pool");
        let opts = RegionOptions::new().layout(&self.layout).force_pmem(true);
        let mut region = opts.create(&base, self.pool_size)?;
        setup(&mut region).map_err(Error::Setup)?;
        drop(region);
        let subject = RawSubject {
            opts: opts.clone(),
            check: &recover_and_check,
        };
        let sim = Simulation::new();
        let sim_opts = opts.simulate(sim.clone());
        self.explore(&subject, dir.path(), &base, &sim, start, || {
            let mut region = sim_opts.open(&base)?;
            workload(&mut region).map_err(Error::Workload)?;
            Ok(())
        })
    }

    fn tempdir(&self) -> Result<tempfile::TempDir, Error> {
        let parent = match &self.image_dir {
            Some(d) => d.clone(),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        tempfile::Builder::new()
            .prefix("ptm-crashtest-")
            .tempdir_in(&parent)
            .or_else(|_| tempfile::tempdir())
            .map_err(|source| Error::Io { path: parent, source })
    }

    fn explore<S: Subject>(
        &self,
        subject: &S,
        dir: &Path,
        base: &Path,
        sim: &Simulation,
        start: Instant,
        body: impl FnOnce() -> Result<(), Error>,
    ) -> Result<Report, Error> {
        let engine = Engine::new(self, subject, dir, start)?;
        sim.with_hook(&mut |cp| engine.on_point(cp), body)?;
        engine.st.borrow_mut().report.redundant = sim.redundancy();
        // The crash after the last drain: whatever was stored but never made durable.
        let durable = sim.durable_image();
        let working = std::fs::read(base).map_err(|source| Error::Io {
            path: base.to_owned(),
            source,
        })?;
        engine.on_point(&CrashPoint::new(&durable, &working, &[], sim.drains()));
        engine.finish()
    }
}

/// What went wrong with one image.
type Problem = (Stage, String);

/// How images are opened (recovery) and checked: a ptm pool or a raw region.
trait Subject {
    /// Opens the image at `path` normally and checks it.
    fn verify(&self, path: &Path) -> Result<(), Problem>;
    /// Opens it on simulation `sim` with `hook` called at the drains of its recovery, then
    /// checks it.
    fn verify_sim(
        &self,
        path: &Path,
        sim: &Simulation,
        hook: &mut dyn FnMut(&CrashPoint<'_>),
    ) -> Result<(), Problem>;
    /// Whether a follow-up workload runs on each recovered image.
    fn has_followup(&self) -> bool {
        false
    }
    /// Opens an image of a follow-up crash point normally and checks it.
    fn verify_followup(&self, path: &Path) -> Result<(), Problem> {
        self.verify(path)
    }
    /// Opens the image at `path` on simulation `sim` (with `recovery_hook`, if any, called at
    /// the drains of its recovery), checks it, then runs the follow-up workload on the
    /// recovered pool and closes it, with `followup_hook` called at each of those drains and
    /// once more for the state after the last one.
    fn verify_then(
        &self,
        path: &Path,
        sim: &Simulation,
        recovery_hook: Option<&mut dyn FnMut(&CrashPoint<'_>)>,
        followup_hook: &mut dyn FnMut(&CrashPoint<'_>),
    ) -> Result<(), Problem> {
        let _ = (path, sim, recovery_hook, followup_hook);
        unreachable!("no follow-up workload")
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f`, turning an error or a panic into a [`Problem`] of `stage`.
fn guarded<T, E: std::fmt::Display>(stage: Stage, f: impl FnOnce() -> Result<T, E>) -> Result<T, Problem> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((stage, e.to_string())),
        Err(p) => {
            let stage = match stage {
                Stage::Recovery => Stage::RecoveryPanic,
                Stage::Followup => Stage::Followup,
                _ => Stage::CheckPanic,
            };
            Err((stage, panic_message(&*p)))
        }
    }
}

/// A follow-up workload and the check of its crash images ([`Explorer::run_then`]).
type Followup<'c, R> = (
    &'c dyn Fn(&Pool<R>) -> CheckResult,
    &'c dyn Fn(&mut Pool<R>) -> CheckResult,
);

struct PoolSubject<'c, R> {
    opts: PoolOptions,
    check: &'c dyn Fn(&mut Pool<R>) -> CheckResult,
    followup: Option<Followup<'c, R>>,
}

impl<R: Persistent> Subject for PoolSubject<'_, R> {
    fn verify(&self, path: &Path) -> Result<(), Problem> {
        let mut pool = guarded(Stage::Recovery, || Pool::<R>::open(path, &self.opts))?;
        guarded(Stage::Check, || (self.check)(&mut pool))
    }

    fn verify_sim(
        &self,
        path: &Path,
        sim: &Simulation,
        hook: &mut dyn FnMut(&CrashPoint<'_>),
    ) -> Result<(), Problem> {
        let opts = self.opts.clone().simulation(sim.clone());
        let mut pool = sim.with_hook(hook, || guarded(Stage::Recovery, || Pool::<R>::open(path, &opts)))?;
        guarded(Stage::Check, || (self.check)(&mut pool))
    }

    fn has_followup(&self) -> bool {
        self.followup.is_some()
    }

    fn verify_followup(&self, path: &Path) -> Result<(), Problem> {
        let Some((_, check)) = self.followup else {
            return self.verify(path);
        };
        let mut pool = guarded(Stage::Recovery, || Pool::<R>::open(path, &self.opts))?;
        guarded(Stage::Check, || check(&mut pool))
    }

    fn verify_then(
        &self,
        path: &Path,
        sim: &Simulation,
        recovery_hook: Option<&mut dyn FnMut(&CrashPoint<'_>)>,
        followup_hook: &mut dyn FnMut(&CrashPoint<'_>),
    ) -> Result<(), Problem> {
        let opts = self.opts.clone().simulation(sim.clone());
        let open = || guarded(Stage::Recovery, || Pool::<R>::open(path, &opts));
        let mut pool = match recovery_hook {
            Some(hook) => sim.with_hook(hook, open)?,
            None => open()?,
        };
        guarded(Stage::Check, || (self.check)(&mut pool))?;
        let Some((followup, _)) = self.followup else {
            return Ok(());
        };
        sim.with_hook(followup_hook, || {
            guarded(Stage::Followup, || {
                followup(&pool)?;
                pool.close().map_err(BoxError::from)
            })
        })?;
        // The crash after the follow-up's last drain.
        let durable = sim.durable_image();
        let working = guarded(Stage::Followup, || std::fs::read(path))?;
        followup_hook(&CrashPoint::new(&durable, &working, &[], sim.drains()));
        Ok(())
    }
}

struct RawSubject<'c, C> {
    opts: RegionOptions,
    check: &'c C,
}

impl<C: Fn(&mut Region) -> CheckResult> Subject for RawSubject<'_, C> {
    fn verify(&self, path: &Path) -> Result<(), Problem> {
        let mut region = guarded(Stage::Recovery, || self.opts.open(path))?;
        guarded(Stage::Check, || (self.check)(&mut region))
    }

    fn verify_sim(
        &self,
        path: &Path,
        sim: &Simulation,
        hook: &mut dyn FnMut(&CrashPoint<'_>),
    ) -> Result<(), Problem> {
        let opts = self.opts.clone().simulate(sim.clone());
        let mut region = guarded(Stage::Recovery, || opts.open(path))?;
        sim.with_hook(hook, || guarded(Stage::Check, || (self.check)(&mut region)))
    }
}

/// A failure found inside the recovery or the follow-up of a workload image: its id, the
/// workload crash, the crash in recovery, the crash in the follow-up, and what failed.
type InnerFailure = (
    ImageId,
    CrashImage,
    Option<CrashImage>,
    Option<CrashImage>,
    Problem,
);

/// Mutable state of an exploration (the hooks get `&Engine`).
struct EngineState {
    report: Report,
    seen: HashSet<u128>,
    seen_recovery: HashSet<u128>,
    seen_followup: HashSet<u128>,
    buf: ImageBuffer,
    rbuf: ImageBuffer,
    fbuf: ImageBuffer,
    crash_file: ImageFile,
    recovery_file: ImageFile,
    followup_file: ImageFile,
    /// Failures found in the recovery of the workload image being checked (double crash) or
    /// in its follow-up: reported if that image itself passes (else only counted).
    inner_failures: Vec<InnerFailure>,
    error: Option<Error>,
}

struct Engine<'e, S> {
    x: &'e Explorer,
    subject: &'e S,
    scale: u32,
    start: Instant,
    crash_path: PathBuf,
    recovery_path: PathBuf,
    followup_path: PathBuf,
    /// Reused for every double-crash recovery (keeps its durable-image buffer).
    recovery_sim: Simulation,
    /// Pending units up to which a recovery crash point gets every subset.
    recovery_exhaustive: u32,
    st: RefCell<EngineState>,
}

impl<'e, S: Subject> Engine<'e, S> {
    fn new(x: &'e Explorer, subject: &'e S, dir: &Path, start: Instant) -> Result<Self, Error> {
        let k2 = u64::from(x.recovery_images_per_point) + 2;
        Ok(Engine {
            x,
            subject,
            scale: x.effective_scale(),
            start,
            crash_path: dir.join("crash.pool"),
            recovery_path: dir.join("recovery.pool"),
            followup_path: dir.join("followup.pool"),
            recovery_sim: Simulation::new(),
            recovery_exhaustive: 63 - k2.leading_zeros(),
            st: RefCell::new(EngineState {
                report: Report::default(),
                seen: HashSet::new(),
                seen_recovery: HashSet::new(),
                seen_followup: HashSet::new(),
                buf: ImageBuffer::default(),
                rbuf: ImageBuffer::default(),
                fbuf: ImageBuffer::default(),
                crash_file: ImageFile::create(dir.join("crash.pool"))?,
                recovery_file: ImageFile::create(dir.join("recovery.pool"))?,
                followup_file: ImageFile::create(dir.join("followup.pool"))?,
                inner_failures: Vec::new(),
                error: None,
            }),
        })
    }

    /// Whether a budget is exhausted (recording which).
    fn out_of_budget(&self, st: &mut EngineState) -> bool {
        if st.report.truncated.is_some() || st.error.is_some() {
            return true;
        }
        let scale = u64::from(self.scale);
        if st.report.images_checked >= self.x.max_images.saturating_mul(scale) {
            st.report.truncated = Some(Budget::Images);
        } else if self
            .x
            .max_time
            .is_some_and(|t| self.start.elapsed() >= t.saturating_mul(self.scale))
        {
            st.report.truncated = Some(Budget::Time);
        }
        st.report.truncated.is_some()
    }

    /// Builds the image with `persisted` units of the working image in `img` (which holds the
    /// crash point's durable image, and is restored) and writes it to `file`, unless an
    /// identical image was checked already. Returns whether it is new.
    fn prepare(
        &self,
        img: &mut ImageBuffer,
        cp: &CrashPoint<'_>,
        persisted: &[u64],
        seen: &mut HashSet<u128>,
        file: &mut ImageFile,
    ) -> Result<bool, Error> {
        let model = self.x.fault_model;
        img.apply(cp.working(), persisted, model);
        let fresh = seen.insert(img.key(persisted));
        let written = if fresh { file.write(&img.buf) } else { Ok(()) };
        img.apply(cp.durable(), persisted, model);
        written.map(|()| fresh)
    }

    /// A crash point of the workload.
    fn on_point(&self, cp: &CrashPoint<'_>) {
        let point = cp.drain_seq();
        let model = self.x.fault_model;
        let units;
        let plan;
        {
            let mut st = self.st.borrow_mut();
            st.report.crash_points = st.report.crash_points.max(point + 1);
            if self.x.only_point.is_some_and(|p| p != point) || self.out_of_budget(&mut st) {
                return;
            }
            if st.report.points_explored >= self.x.max_points.saturating_mul(u64::from(self.scale)) {
                st.report.truncated = Some(Budget::CrashPoints);
                return;
            }
            st.report.points_explored += 1;
            units = cp.pending(model);
            st.report.max_pending = st.report.max_pending.max(units.len());
            plan = Plan::new(
                units.len(),
                self.x.exhaustive_units,
                self.x.images_per_point.saturating_mul(self.scale),
                point_seed(self.x.seed, point),
            );
            st.buf.load(cp.durable());
            // Deduplicate within this crash point only: an image identical to one of an earlier
            // point is still checked, because `check` may expect a different state now (a
            // transaction returned in between: its effects must be in the image).
            st.seen.clear();
        }
        let images: Vec<u32> = match self.x.only_image {
            Some(i) => vec![i],
            None => (0..plan.len()).collect(),
        };
        for image in images {
            let (kind, subset) = plan.image(image);
            let persisted: Vec<u64> = subset.iter().map(|&i| units[i]).collect();
            match self.stage_image(false, cp, &persisted) {
                Staged::Fresh => {}
                Staged::Duplicate => continue,
                Staged::Stop => return,
            }
            let crash = CrashImage {
                point,
                image,
                kind,
                pending: units.clone(),
                persisted,
            };
            let outcome = if self.subject.has_followup() {
                let mut rhook = |rcp: &CrashPoint<'_>| self.on_recovery_point(rcp, &crash);
                let mut fhook = |fcp: &CrashPoint<'_>| self.on_followup_point(fcp, &crash);
                let rhook: Option<&mut dyn FnMut(&CrashPoint<'_>)> = if self.x.double_crash {
                    Some(&mut rhook)
                } else {
                    None
                };
                self.subject
                    .verify_then(&self.crash_path, &self.recovery_sim, rhook, &mut fhook)
            } else if self.x.double_crash {
                let mut hook = |rcp: &CrashPoint<'_>| self.on_recovery_point(rcp, &crash);
                self.subject
                    .verify_sim(&self.crash_path, &self.recovery_sim, &mut hook)
            } else {
                self.subject.verify(&self.crash_path)
            };
            let inner = std::mem::take(&mut self.st.borrow_mut().inner_failures);
            // When reproducing a recovery or follow-up image, the outer image is not the subject.
            if self.x.only_recovery.is_none() && self.x.only_followup.is_none() {
                self.st.borrow_mut().report.images_checked += 1;
                if let Err(problem) = outcome {
                    let id = ImageId {
                        point,
                        image,
                        recovery: None,
                        followup: None,
                    };
                    self.fail(id, crash, None, None, problem);
                    // Crashes inside the recovery of an image that fails anyway add nothing.
                    self.st.borrow_mut().report.failures_in_failed_recoveries += inner.len() as u64;
                    continue;
                }
            }
            for (id, crash, recovery_crash, followup_crash, problem) in inner {
                self.fail(id, crash, recovery_crash, followup_crash, problem);
            }
        }
    }

    /// A crash point inside the recovery of workload image `outer` (double crash).
    fn on_recovery_point(&self, cp: &CrashPoint<'_>, outer: &CrashImage) {
        self.on_nested_point(Nested::Recovery, cp, outer);
    }

    /// A crash point of the follow-up workload run on the recovered workload image `outer`
    /// ([`Explorer::run_then`]).
    fn on_followup_point(&self, cp: &CrashPoint<'_>, outer: &CrashImage) {
        self.on_nested_point(Nested::Followup, cp, outer);
    }

    /// A crash point met while running on the recovered workload image `outer` (inside its
    /// recovery, or in the follow-up workload): its images are staged, checked and, when a
    /// check fails, recorded as failures of `outer`.
    fn on_nested_point(&self, stage: Nested, cp: &CrashPoint<'_>, outer: &CrashImage) {
        let point = cp.drain_seq();
        let model = self.x.fault_model;
        let only = match stage {
            Nested::Recovery => self.x.only_recovery,
            Nested::Followup => self.x.only_followup,
        };
        let units;
        let plan;
        {
            let mut st = self.st.borrow_mut();
            if only.is_some_and(|(p, _)| p != point) || self.out_of_budget(&mut st) {
                return;
            }
            let seed = match stage {
                Nested::Recovery => {
                    st.report.recovery_points += 1;
                    recovery_seed(self.x.seed, outer.point, outer.image, point)
                }
                Nested::Followup => {
                    st.report.followup_points += 1;
                    followup_seed(self.x.seed, outer.point, outer.image, point)
                }
            };
            units = cp.pending(model);
            st.report.max_pending = st.report.max_pending.max(units.len());
            plan = Plan::new(
                units.len(),
                self.recovery_exhaustive,
                self.x.recovery_images_per_point.saturating_mul(self.scale),
                seed,
            );
            match stage {
                Nested::Recovery => st.rbuf.load(cp.durable()),
                Nested::Followup => {
                    st.fbuf.load(cp.durable());
                    // As at workload crash points: the check may expect another state now.
                    st.seen_followup.clear();
                }
            }
        }
        let images: Vec<u32> = match only {
            Some((_, i)) => vec![i],
            None => (0..plan.len()).collect(),
        };
        for image in images {
            let (kind, subset) = plan.image(image);
            let persisted: Vec<u64> = subset.iter().map(|&i| units[i]).collect();
            let staged = match stage {
                Nested::Recovery => self.stage_image(true, cp, &persisted),
                Nested::Followup => self.stage_followup_image(cp, &persisted),
            };
            match staged {
                Staged::Fresh => {}
                Staged::Duplicate => continue,
                Staged::Stop => return,
            }
            let outcome = match stage {
                Nested::Recovery => self.subject.verify(&self.recovery_path),
                Nested::Followup => self.subject.verify_followup(&self.followup_path),
            };
            {
                let mut st = self.st.borrow_mut();
                st.report.images_checked += 1;
                match stage {
                    Nested::Recovery => st.report.recovery_images_checked += 1,
                    Nested::Followup => st.report.followup_images_checked += 1,
                }
            }
            if let Err(problem) = outcome {
                let inner = CrashImage {
                    point,
                    image,
                    kind,
                    pending: units.clone(),
                    persisted,
                };
                let mut id = ImageId {
                    point: outer.point,
                    image: outer.image,
                    recovery: None,
                    followup: None,
                };
                let failure = match stage {
                    Nested::Recovery => {
                        id.recovery = Some((point, image));
                        (id, outer.clone(), Some(inner), None, problem)
                    }
                    Nested::Followup => {
                        id.followup = Some((point, image));
                        (id, outer.clone(), None, Some(inner), problem)
                    }
                };
                self.st.borrow_mut().inner_failures.push(failure);
            }
        }
    }

    /// [`stage_image`](Self::stage_image) for a follow-up crash point.
    fn stage_followup_image(&self, cp: &CrashPoint<'_>, persisted: &[u64]) -> Staged {
        let mut st = self.st.borrow_mut();
        if self.out_of_budget(&mut st) {
            return Staged::Stop;
        }
        let EngineState {
            fbuf,
            seen_followup,
            followup_file,
            ..
        } = &mut *st;
        match self.prepare(fbuf, cp, persisted, seen_followup, followup_file) {
            Ok(true) => Staged::Fresh,
            Ok(false) => {
                st.report.duplicates += 1;
                Staged::Duplicate
            }
            Err(e) => {
                st.error = Some(e);
                Staged::Stop
            }
        }
    }

    /// Writes the image `persisted` of `cp` into the crash file (or, for a crash inside
    /// recovery, the recovery file), unless the budget is spent, it duplicates an image already
    /// checked (counted), or writing fails (recorded).
    fn stage_image(&self, recovery: bool, cp: &CrashPoint<'_>, persisted: &[u64]) -> Staged {
        let mut st = self.st.borrow_mut();
        if self.out_of_budget(&mut st) {
            return Staged::Stop;
        }
        let EngineState {
            buf,
            seen,
            crash_file,
            rbuf,
            seen_recovery,
            recovery_file,
            ..
        } = &mut *st;
        let fresh = if recovery {
            self.prepare(rbuf, cp, persisted, seen_recovery, recovery_file)
        } else {
            self.prepare(buf, cp, persisted, seen, crash_file)
        };
        match fresh {
            Ok(true) => Staged::Fresh,
            Ok(false) => {
                st.report.duplicates += 1;
                Staged::Duplicate
            }
            Err(e) => {
                st.error = Some(e);
                Staged::Stop
            }
        }
    }

    fn fail(
        &self,
        id: ImageId,
        crash: CrashImage,
        recovery_crash: Option<CrashImage>,
        followup_crash: Option<CrashImage>,
        (stage, message): Problem,
    ) {
        let mut st = self.st.borrow_mut();
        st.report.failures_total += 1;
        if st.report.failures.len() < self.x.max_failures {
            st.report.failures.push(Failure {
                id,
                crash,
                recovery_crash,
                followup_crash,
                fault_model: self.x.fault_model,
                stage,
                message,
                reproduction: self.x.reproduction(&id),
            });
        }
    }

    fn finish(self) -> Result<Report, Error> {
        let mut st = self.st.into_inner();
        if let Some(e) = st.error {
            return Err(e);
        }
        st.report.elapsed = self.start.elapsed();
        Ok(st.report)
    }
}

/// Where a nested crash point was met: inside the recovery of a workload image, or in the
/// follow-up workload run on the recovered image.
#[derive(Clone, Copy)]
enum Nested {
    Recovery,
    Followup,
}

/// What [`Engine::stage_image`] did with an image.
enum Staged {
    /// Written: check it.
    Fresh,
    /// Same bytes as an image already checked: skip it.
    Duplicate,
    /// Budget spent or an I/O error recorded: stop exploring.
    Stop,
}
