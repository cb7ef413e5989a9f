//! Keeping the process's resident memory near what it uses (issue 9: the whole mesh
//! ≤ 50 MB idle).
//!
//! Two settings of the allocator and the kernel, made once at start-up, before any
//! service runs:
//!
//! * **No transparent huge pages.** mimalloc asks the kernel for huge pages on its arenas
//!   (`madvise(MADV_HUGEPAGE)`), so a few live objects in a 2 MiB range keep all of it
//!   resident: the idle mesh measured 92 MB of RSS with 53 MB of it in huge pages, 59 MB
//!   without them. The mesh's hot paths are bound by syscalls and small allocations, not
//!   by TLB misses, so it gives them up (`PR_SET_THP_DISABLE`, for this process only).
//! * **Start-up garbage goes back to the kernel.** mimalloc returns ("purges") freed
//!   pages after a delay (10 ms), but only when the heap that freed them allocates again,
//!   and after start-up most of ours go quiet — above all sqlx's SQLite connection
//!   threads, which run the migrations and then wait. The idle mesh kept ~20 MB of such
//!   pages (anonymous RSS ~41 MB; ~22 MB with immediate purging). So start-up runs with
//!   purge delay 0 and the mesh switches to the default delay once it serves
//!   ([`steady`]): immediate purging in steady state would cost the hot paths a syscall
//!   per emptied page. A thread that exits purges at once (`abandoned_page_purge`), and
//!   a background thread calls `mi_collect(false)` every [`COLLECT_EVERY`]: the purges
//!   that are due in the arenas and abandoned segments (where the 19 MiB of an Argon2
//!   hash, freed on a blocking thread that then idles, end up).
//!
//! `MIMALLOC_PURGE_DELAY` in the environment wins over both delays (to compare in a
//! bench). mimalloc has no timer of its own for this (glibc's nearest is `malloc_trim`),
//! hence the thread. Everything here is best effort: a failure is logged and changes
//! nothing else.

use std::time::Duration;

/// How often the background thread hands due allocator pages back to the kernel.
pub const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// mimalloc's default purge delay (ms), restored by [`steady`].
const DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 10;

// Positions in mimalloc.h's `mi_option_e` (v2, the version libmimalloc-sys 0.1.49
// builds); libmimalloc-sys names no constants for these two.
const MI_OPTION_ABANDONED_PAGE_PURGE: libmimalloc_sys::mi_option_t = 12;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Start-up settings (see the module docs). Call first thing in `main`.
pub fn tune() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("cannot disable transparent huge pages (RSS will be higher): {e}");
    }
    set_option(MI_OPTION_ABANDONED_PAGE_PURGE, 1);
    set_purge_delay(0);
    let spawned = std::thread::Builder::new()
        .name("mimalloc-collect".into())
        .spawn(|| {
            loop {
                std::thread::sleep(COLLECT_EVERY);
                // SAFETY: `mi_collect` takes no pointers and may be called from any
                // thread at any time; with `force = false` it only does what is due.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(e) = spawned {
        eprintln!("cannot start the allocator's collect thread (RSS will be higher): {e}");
    }
}

/// Start-up is over (every target serves): back to mimalloc's delayed purging.
pub fn steady() {
    set_purge_delay(DEFAULT_PURGE_DELAY_MS);
}

fn set_purge_delay(ms: std::ffi::c_long) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_option(MI_OPTION_PURGE_DELAY, ms);
    }
}

fn set_option(option: libmimalloc_sys::mi_option_t, value: std::ffi::c_long) {
    // SAFETY: sets one integer option; mimalloc reads its options atomically and these
    // two at each purge decision / thread exit, so they may change at any time.
    unsafe { libmimalloc_sys::mi_option_set(option, value) };
}
