//! SQLite's own page cache behind a thin layer that skips truncations with nothing to drop.
//!
//! At the end of every write transaction SQLite truncates the connection's page cache to
//! the database's size. The default cache (`pcache1`) remembers only the highest page
//! number it has ever held and, when that number is past the limit, walks its whole hash
//! table. While it splits B-tree pages, SQLite parks a page for a moment at the number just
//! past the lock-byte page (262,145 with 4 KiB pages). So in a database under 1 GiB nearly
//! every commit that split an index page walks the writer's whole cache (~6,000 pages at
//! 32 MiB) and frees nothing: ~350 µs per commit, 8–10 % of the writer thread's CPU when
//! commits are small (docs/benchmarks.md, issue 12).
//!
//! This layer forwards every call to the default cache and keeps, per cache, an upper bound
//! of the page numbers the cache can hold: the highest number it created or moved a page
//! to, not counting a page while it is parked. A truncation whose limit is past that bound,
//! with no page parked, has nothing to drop and is skipped. Every other truncation runs as
//! before, so a rolled-back transaction still drops the pages it added.

use std::ffi::{c_int, c_uint};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// SQLite's lock-byte offset (`PENDING_BYTE`: 1 GiB unless a build changes it).
const PENDING_BYTE: c_uint = 0x4000_0000;

/// The default page cache's methods, captured before the layer replaces them.
static DEFAULT: OnceLock<Methods> = OnceLock::new();

/// Truncations skipped since start (for tests and curiosity).
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// The default cache's method table.
struct Methods(ffi::sqlite3_pcache_methods2);

// SAFETY: the table holds function pointers and the default cache's global argument,
// which SQLite itself shares between all threads (its page cache is thread-safe).
unsafe impl Send for Methods {}
unsafe impl Sync for Methods {}

/// One cache: the default cache's handle and a bound on the page numbers in it.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// No page in the cache has a number above this, except the parked one.
    bound: c_uint,
    /// The number SQLite parks a page at while it swaps two pages in a split.
    parking: c_uint,
    /// The page now parked, if any.
    parked: *mut ffi::sqlite3_pcache_page,
}

/// Installs the layer. It must run before SQLite is first used in the process; returns
/// false, changing nothing, when SQLite is already initialised or refuses.
pub fn install() -> bool {
    // SAFETY: each sqlite3_config call passes the one pointer argument its option takes.
    unsafe {
        let mut default: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
        let read =
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut default as *mut ffi::sqlite3_pcache_methods2);
        if read != ffi::SQLITE_OK || default.xCreate.is_none() || DEFAULT.set(Methods(default)).is_err() {
            return false;
        }
        let layered = ffi::sqlite3_pcache_methods2 {
            iVersion: 1,
            pArg: default.pArg,
            xInit: default.xInit,
            xShutdown: default.xShutdown,
            xCreate: Some(create),
            xCachesize: Some(cachesize),
            xPagecount: Some(pagecount),
            xFetch: Some(fetch),
            xUnpin: Some(unpin),
            xRekey: Some(rekey),
            xTruncate: Some(truncate),
            xDestroy: Some(destroy),
            xShrink: Some(shrink),
        };
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &layered as *const ffi::sqlite3_pcache_methods2)
            == ffi::SQLITE_OK
    }
}

/// How many truncations the layer has skipped in this process.
pub fn skipped_truncations() -> u64 {
    SKIPPED.load(Ordering::Relaxed)
}

/// The default cache's methods (always set: the layer is installed only after).
fn default_methods() -> Option<&'static ffi::sqlite3_pcache_methods2> {
    DEFAULT.get().map(|methods| &methods.0)
}

/// # Safety
/// `handle` must come from [`create`] and not yet be destroyed; SQLite calls one cache's
/// methods from one thread at a time.
unsafe fn cache<'a>(handle: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    &mut *(handle as *mut Cache)
}

unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let Some(create) = default_methods().and_then(|methods| methods.xCreate) else { return ptr::null_mut() };
    let inner = create(page_size, extra, purgeable);
    if inner.is_null() {
        return ptr::null_mut();
    }
    let parking = PENDING_BYTE / c_uint::try_from(page_size).unwrap_or(1).max(1) + 1;
    let cache = Cache { inner, bound: 0, parking, parked: ptr::null_mut() };
    Box::into_raw(Box::new(cache)) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(handle: *mut ffi::sqlite3_pcache, pages: c_int) {
    if let Some(resize) = default_methods().and_then(|methods| methods.xCachesize) {
        resize(cache(handle).inner, pages)
    }
}

unsafe extern "C" fn pagecount(handle: *mut ffi::sqlite3_pcache) -> c_int {
    default_methods().and_then(|methods| methods.xPagecount).map_or(0, |count| count(cache(handle).inner))
}

unsafe extern "C" fn fetch(
    handle: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let cache = cache(handle);
    let Some(fetch) = default_methods().and_then(|methods| methods.xFetch) else { return ptr::null_mut() };
    let page = fetch(cache.inner, key, create);
    if !page.is_null() {
        cache.bound = cache.bound.max(key);
    }
    page
}

unsafe extern "C" fn unpin(handle: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    let cache = cache(handle);
    if discard != 0 && page == cache.parked {
        cache.parked = ptr::null_mut();
    }
    if let Some(unpin) = default_methods().and_then(|methods| methods.xUnpin) {
        unpin(cache.inner, page, discard)
    }
}

unsafe extern "C" fn rekey(
    handle: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let cache = cache(handle);
    if new == cache.parking && cache.parked.is_null() {
        cache.parked = page;
    } else {
        if page == cache.parked {
            cache.parked = ptr::null_mut();
        }
        cache.bound = cache.bound.max(new);
    }
    if let Some(rekey) = default_methods().and_then(|methods| methods.xRekey) {
        rekey(cache.inner, page, old, new)
    }
}

unsafe extern "C" fn truncate(handle: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let cache = cache(handle);
    if cache.bound < limit && cache.parked.is_null() {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if let Some(truncate) = default_methods().and_then(|methods| methods.xTruncate) {
        truncate(cache.inner, limit)
    }
    cache.bound = cache.bound.min(limit.saturating_sub(1));
    if cache.parking >= limit {
        cache.parked = ptr::null_mut();
    }
}

unsafe extern "C" fn destroy(handle: *mut ffi::sqlite3_pcache) {
    let cache = Box::from_raw(handle as *mut Cache);
    if let Some(destroy) = default_methods().and_then(|methods| methods.xDestroy) {
        destroy(cache.inner)
    }
}

unsafe extern "C" fn shrink(handle: *mut ffi::sqlite3_pcache) {
    if let Some(shrink) = default_methods().and_then(|methods| methods.xShrink) {
        shrink(cache(handle).inner)
    }
}
