//! The process-wide SIGSEGV handler and the fixed table of registered regions.
//!
//! Everything the handler touches is preallocated: a static array of [`MAX_REGIONS`] slots whose
//! fields are atomics, and each region's [`Shared`] state (allocated at open). Registration claims
//! a slot by compare-and-swap; unregistration marks it retiring and waits until no handler is
//! inside it (a Dekker-style handshake on `users`/`state`, both `SeqCst`).

use std::cell::UnsafeCell;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::Once;

use crate::checksum::StackRoom;
use crate::engine::Shared;

/// Maximum number of paged regions open at once in one process.
pub const MAX_REGIONS: usize = 64;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const ACTIVE: u32 = 2;
const RETIRING: u32 = 3;

struct Slot {
    state: AtomicU32,
    users: AtomicUsize,
    base: AtomicUsize,
    len: AtomicUsize,
    shared: AtomicPtr<Shared>,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            state: AtomicU32::new(FREE),
            users: AtomicUsize::new(0),
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            shared: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

static SLOTS: [Slot; MAX_REGIONS] = [const { Slot::new() }; MAX_REGIONS];

/// The action that was installed before ours, written once before ours is installed.
struct PrevAction(UnsafeCell<MaybeUninit<libc::sigaction>>);

// SAFETY: written exactly once inside `INSTALL.call_once`, before our handler (the only reader)
// is installed; read-only afterwards.
unsafe impl Sync for PrevAction {}

static PREV: PrevAction = PrevAction(UnsafeCell::new(MaybeUninit::zeroed()));
static INSTALL: Once = Once::new();
static INSTALL_ERRNO: AtomicUsize = AtomicUsize::new(0);

fn install() -> io::Result<()> {
    INSTALL.call_once(|| {
        // SAFETY: plain sigaction calls with valid pointers. `PREV` is written before our handler
        // is installed, so no handler invocation can observe it half-written.
        unsafe {
            let prev = (*PREV.0.get()).as_mut_ptr();
            if libc::sigaction(libc::SIGSEGV, std::ptr::null(), prev) != 0 {
                INSTALL_ERRNO.store(
                    io::Error::last_os_error().raw_os_error().unwrap_or(1) as usize,
                    Ordering::SeqCst,
                );
                return;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigsegv as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // Block every signal while the handler runs: another handler touching a page this
            // thread is loading would otherwise wait for itself.
            libc::sigfillset(&mut act.sa_mask);
            if libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut()) != 0 {
                INSTALL_ERRNO.store(
                    io::Error::last_os_error().raw_os_error().unwrap_or(1) as usize,
                    Ordering::SeqCst,
                );
            }
        }
    });
    match INSTALL_ERRNO.load(Ordering::SeqCst) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Installs the handler (once) and registers `[base, base + len)` served by `shared`; returns the
/// slot index for [`unregister`].
pub(crate) fn register(shared: *mut Shared, base: usize, len: usize) -> crate::Result<usize> {
    install().map_err(crate::Error::Handler)?;
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot
            .state
            .compare_exchange(FREE, CLAIMED, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            slot.base.store(base, Ordering::SeqCst);
            slot.len.store(len, Ordering::SeqCst);
            slot.shared.store(shared, Ordering::SeqCst);
            slot.state.store(ACTIVE, Ordering::SeqCst);
            return Ok(i);
        }
    }
    Err(crate::Error::TooManyRegions { max: MAX_REGIONS })
}

/// Removes a registration and waits until no handler invocation still uses it. Afterwards faults
/// in the range are no longer ours (they go to the previous handler).
pub(crate) fn unregister(index: usize) {
    let slot = &SLOTS[index];
    slot.state.store(RETIRING, Ordering::SeqCst);
    while slot.users.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
    slot.shared.store(std::ptr::null_mut(), Ordering::SeqCst);
    slot.base.store(0, Ordering::SeqCst);
    slot.len.store(0, Ordering::SeqCst);
    slot.state.store(FREE, Ordering::SeqCst);
}

extern "C" fn on_sigsegv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; the handler must leave it as it found it.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in SLOTS.iter() {
        if slot.state.load(Ordering::Acquire) != ACTIVE {
            continue;
        }
        slot.users.fetch_add(1, Ordering::SeqCst);
        if slot.state.load(Ordering::SeqCst) == ACTIVE {
            let base = slot.base.load(Ordering::SeqCst);
            let len = slot.len.load(Ordering::SeqCst);
            let shared = slot.shared.load(Ordering::SeqCst);
            if addr >= base && addr - base < len && !shared.is_null() {
                // SAFETY: the slot is active and we are counted in `users`, so `unregister` has
                // not returned and `shared` is alive.
                unsafe { (*shared).handle_fault((addr - base) / crate::PAGE_SIZE, stack_room(ctx)) };
                slot.users.fetch_sub(1, Ordering::SeqCst);
                // SAFETY: as above.
                unsafe { *libc::__errno_location() = errno };
                return;
            }
        }
        slot.users.fetch_sub(1, Ordering::SeqCst);
    }
    // SAFETY: not our address: hand it on unchanged.
    unsafe { chain(sig, info, ctx) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The stack left below the handler's frame: on the alternate signal stack (`SA_ONSTACK`) the
/// bytes between here and its bottom; otherwise (the thread has none, so the handler runs on the
/// stack of the code it interrupted) [`StackRoom::Ample`]. Read from the `uc_stack` the kernel
/// saved in the signal frame (the thread's `sigaltstack` settings at delivery): no system call.
fn stack_room(ctx: *mut libc::c_void) -> StackRoom {
    // SAFETY: the kernel passes a valid `ucontext_t` as the third argument of an SA_SIGINFO
    // handler; only its `uc_stack` field is read.
    let alt = unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_stack };
    if alt.ss_flags & libc::SS_DISABLE != 0 || alt.ss_size == 0 {
        return StackRoom::Ample;
    }
    let here = &alt as *const libc::stack_t as usize;
    let bottom = alt.ss_sp as usize;
    match here.checked_sub(bottom) {
        // The stack grows down from `bottom + ss_size`.
        Some(room) if room < alt.ss_size => StackRoom::Bytes(room),
        // Not on the alternate stack after all (it was changed meanwhile): unknown, so assume the
        // least.
        _ => StackRoom::Bytes(0),
    }
}

/// Passes a fault that is not ours to the previously installed handler.
///
/// # Safety
/// Only from the SIGSEGV handler, with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: `PREV` was initialised before our handler was installed and is never written again.
    let prev = unsafe { (*PREV.0.get()).assume_init_ref() };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction re-executes and the
        // kernel terminates the process with SIGSEGV, as it would have without us.
        // SAFETY: sigaction is async-signal-safe; the struct is fully initialised.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGSEGV, &dfl, std::ptr::null_mut());
        }
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the stored value is a three-argument handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the stored value is a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}
