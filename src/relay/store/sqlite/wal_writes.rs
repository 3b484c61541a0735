//! A VFS for the writer's connection that hands a transaction's WAL frames to the kernel
//! in a few large writes instead of two per page.
//!
//! SQLite writes each WAL frame as two `pwrite`s: its 24-byte header, then the page. The
//! frames are not aligned to the file's 4 KiB pages, so a frame costs two system calls and
//! three page-cache folios in the kernel; with ~3–4 frames per event that was a quarter of
//! the writer thread's CPU (docs/benchmarks.md, issue 12).
//!
//! This VFS wraps the default one and forwards every call, except that on a WAL file it
//! gathers writes that append new frames and passes them on in writes of up to [`CHUNK`]
//! bytes:
//!
//! - **when a commit frame is complete** (its header says the database size after the
//!   commit, bytes 4–8 non-zero), inside the write that completes it, so an error reaches
//!   SQLite as the commit's own error, and the commit is on the file before SQLite
//!   publishes it in the WAL index (its header is written after the frames);
//! - **before any other call on the WAL file or its database file** (read, size, sync,
//!   truncate, lock, close, a write that is not the next append), so SQLite never sees the
//!   file without what it wrote;
//! - **before any shared-memory call on the database file** (the WAL index's locks and
//!   barriers), a backstop: SQLite makes a commit visible to other connections only there;
//! - when a transaction has gathered [`FLUSH_AT`] bytes.
//!
//! Writes below the highest offset written since the WAL last started over (a rewrite of
//! frames a transaction wrote before) are never gathered: they pass straight on. So what
//! the file holds, and when, is what SQLite would have written by itself at each point
//! another connection or process can look, and an acknowledged commit is in the kernel
//! before SQLite returns from it (the relay's durability promise is unchanged).

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name the VFS is registered under.
const NAME: &CStr = c"axon-wal-writes";

/// Gathered bytes are written out once a transaction has this many.
const FLUSH_AT: usize = 1 << 20;

/// The most bytes passed on in one write (the default VFS takes less than 128 KiB per
/// call); writes end at multiples of it in the file.
const CHUNK: usize = 64 * 1024;

/// WAL file layout (sqlite.org/fileformat2.html#walformat): a 32-byte header, then frames
/// of a 24-byte header and a page.
const WAL_HEADER: i64 = 32;
const FRAME_HEADER: i64 = 24;

/// The VFS this one wraps (the default at registration).
static REAL_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

static RECEIVED: AtomicU64 = AtomicU64::new(0);
static PASSED_ON: AtomicU64 = AtomicU64::new(0);
static REWRITES: AtomicU64 = AtomicU64::new(0);
static COMMITS: AtomicU64 = AtomicU64::new(0);
static LATE: AtomicU64 = AtomicU64::new(0);

/// What the VFS did with WAL writes since the process started (for tests and curiosity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalWriteCounts {
    /// Writes SQLite made to WAL files it can gather for.
    pub received: u64,
    /// Writes the wrapped VFS got for them.
    pub passed_on: u64,
    /// Writes below the high-water mark (rewrites of frames), passed straight on.
    pub rewrites: u64,
    /// Commits whose frames the write completing the commit frame passed on.
    pub commits: u64,
    /// Times a shared-memory call on a database file (where SQLite publishes a commit)
    /// found its WAL's bytes still gathered and passed them on first: a rolled-back
    /// transaction's frames, or frames SQLite wrote in a way this VFS does not expect.
    pub late: u64,
}

/// The counts so far.
pub fn wal_write_counts() -> WalWriteCounts {
    WalWriteCounts {
        received: RECEIVED.load(Ordering::Relaxed),
        passed_on: PASSED_ON.load(Ordering::Relaxed),
        rewrites: REWRITES.load(Ordering::Relaxed),
        commits: COMMITS.load(Ordering::Relaxed),
        late: LATE.load(Ordering::Relaxed),
    }
}

/// Registers the VFS (once, not as the default) and returns its name for
/// `Connection::open_with_flags_and_vfs`; `None` if SQLite refused it.
pub fn vfs_name() -> Option<&'static str> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    // SAFETY: `register` only reads the default VFS and hands SQLite a leaked copy.
    let registered = *REGISTERED.get_or_init(|| unsafe { register() });
    registered.then(|| NAME.to_str().ok()).flatten()
}

/// Where the wrapped file sits in the memory SQLite gives [`open`]: after a [`Shim`],
/// 8-byte aligned.
const REAL_OFFSET: usize = (std::mem::size_of::<Shim>() + 7) & !7;

unsafe fn register() -> bool {
    let real = ffi::sqlite3_vfs_find(ptr::null());
    if real.is_null() {
        return false;
    }
    // A copy of the default VFS (its other methods and their app data are used as they
    // are: none of them sees a file), with room for a Shim before each file.
    let mut vfs: ffi::sqlite3_vfs = ptr::read(real);
    vfs.szOsFile = REAL_OFFSET as c_int + (*real).szOsFile;
    vfs.zName = NAME.as_ptr();
    vfs.pNext = ptr::null_mut();
    vfs.xOpen = Some(open);
    REAL_VFS.store(real, Ordering::Release);
    ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0) == ffi::SQLITE_OK
}

/// What [`open`] puts in front of every file: the wrapped file, and for a WAL file of a
/// database opened here, the writes gathered so far.
#[repr(C)]
struct Shim {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// A WAL file: its gathered writes (`None` for other files, and for a WAL whose
    /// database was not opened through this VFS: nothing would flush it).
    gathered: Option<Box<Gathered>>,
    /// A database file: the shim of its WAL file while that is open.
    wal: *mut Shim,
    /// A WAL file: the shim of its database file.
    database: *mut Shim,
}

/// Appended bytes not yet passed on.
struct Gathered {
    /// File offset of `bytes[0]`.
    start: i64,
    bytes: Vec<u8>,
    /// The page size (from the WAL header), 0 until known.
    page_size: i64,
    /// The highest offset written since the WAL last started over: below it is a rewrite.
    high_water: i64,
    /// The offset where the next frame header not yet looked at begins.
    next_frame: i64,
    /// The end of a commit frame found in `bytes`, if any.
    commit_end: Option<i64>,
}

impl Gathered {
    fn end(&self) -> i64 {
        self.start + self.bytes.len() as i64
    }

    /// Frame headers now complete in `bytes`: notes the end of a commit frame.
    fn scan(&mut self) {
        if self.page_size == 0 {
            return;
        }
        let stride = FRAME_HEADER + self.page_size;
        while self.next_frame + FRAME_HEADER <= self.end() {
            if self.next_frame >= self.start {
                let at = (self.next_frame - self.start) as usize;
                if self.bytes[at + 4..at + 8] != [0; 4] {
                    self.commit_end = Some(self.next_frame + stride);
                }
            }
            self.next_frame += stride;
        }
    }

    /// The first frame boundary at or after `offset`.
    fn frame_at_or_after(&self, offset: i64) -> i64 {
        let stride = FRAME_HEADER + self.page_size;
        if offset <= WAL_HEADER {
            return WAL_HEADER;
        }
        WAL_HEADER + (offset - WAL_HEADER + stride - 1) / stride * stride
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = REAL_VFS.load(Ordering::Acquire);
    let Some(real_open) = (*real_vfs).xOpen else { return ffi::SQLITE_CANTOPEN };
    let real = file.cast::<u8>().add(REAL_OFFSET).cast::<ffi::sqlite3_file>();
    (*real).pMethods = ptr::null();
    (*file).pMethods = ptr::null();
    let rc = real_open(real_vfs, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        // SQLite closes a file whose open failed only if it has methods: close it here.
        if let Some(close) = (*real).pMethods.as_ref().and_then(|methods| methods.xClose) {
            close(real);
        }
        return rc;
    }
    let database = if flags & ffi::SQLITE_OPEN_WAL != 0 && !name.is_null() {
        let database = ffi::sqlite3_database_file_object(name).cast::<Shim>();
        let ours = !database.is_null() && ptr::eq((*database).base.pMethods, &METHODS);
        if ours {
            database
        } else {
            ptr::null_mut()
        }
    } else {
        ptr::null_mut()
    };
    let gathered = (!database.is_null()).then(|| {
        Box::new(Gathered {
            start: 0,
            bytes: Vec::new(),
            page_size: 0,
            high_water: i64::MAX,
            next_frame: WAL_HEADER,
            commit_end: None,
        })
    });
    let shim = file.cast::<Shim>();
    ptr::write(
        shim,
        Shim { base: ffi::sqlite3_file { pMethods: &METHODS }, real, gathered, wal: ptr::null_mut(), database },
    );
    if !database.is_null() {
        (*database).wal = shim;
    }
    ffi::SQLITE_OK
}

/// The wrapped file's methods.
unsafe fn real_methods(file: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    let real = (*file.cast::<Shim>()).real;
    (real, &*(*real).pMethods)
}

/// Passes the gathered writes of the WAL file `shim` on; an SQLite result code.
unsafe fn flush(shim: *mut Shim) -> c_int {
    let Some(gathered) = (*shim).gathered.as_deref_mut() else { return ffi::SQLITE_OK };
    if gathered.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let real = (*shim).real;
    let Some(real_write) = (*(*real).pMethods).xWrite else { return ffi::SQLITE_IOERR_WRITE };
    let mut written = 0;
    while written < gathered.bytes.len() {
        // Up to the next CHUNK boundary of the file.
        let offset = gathered.start + written as i64;
        let room = CHUNK - (offset % CHUNK as i64) as usize;
        let length = room.min(gathered.bytes.len() - written);
        let rc = real_write(real, gathered.bytes[written..].as_ptr().cast(), length as c_int, offset);
        PASSED_ON.fetch_add(1, Ordering::Relaxed);
        if rc != ffi::SQLITE_OK {
            // Keep what did not go: a later call retries it and reports the error.
            gathered.bytes.drain(..written);
            gathered.start = offset;
            return rc;
        }
        written += length;
    }
    gathered.bytes.clear();
    gathered.commit_end = None;
    ffi::SQLITE_OK
}

/// Before any other call: flushes `file` if it is a WAL file, and its WAL file if it is a
/// database file.
unsafe fn flush_all(file: *mut ffi::sqlite3_file) -> c_int {
    let shim = file.cast::<Shim>();
    let rc = flush(shim);
    if rc != ffi::SQLITE_OK || (*shim).wal.is_null() {
        return rc;
    }
    flush((*shim).wal)
}

/// [`flush_all`] before a shared-memory call, counting it when it found gathered bytes.
unsafe fn flush_before_shm(file: *mut ffi::sqlite3_file) -> c_int {
    let wal = (*file.cast::<Shim>()).wal;
    if !wal.is_null() && (*wal).gathered.as_ref().is_some_and(|gathered| !gathered.bytes.is_empty()) {
        LATE.fetch_add(1, Ordering::Relaxed);
    }
    flush_all(file)
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let shim = file.cast::<Shim>();
    let flushed = flush_all(file);
    if !(*shim).database.is_null() {
        (*(*shim).database).wal = ptr::null_mut();
    }
    if !(*shim).wal.is_null() {
        (*(*shim).wal).database = ptr::null_mut();
    }
    let (real, methods) = real_methods(file);
    let closed = methods.xClose.map_or(ffi::SQLITE_OK, |close| close(real));
    ptr::drop_in_place(shim);
    (*file).pMethods = ptr::null();
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let shim = file.cast::<Shim>();
    let write_through = |real: *mut ffi::sqlite3_file, methods: &ffi::sqlite3_io_methods| {
        methods.xWrite.map_or(ffi::SQLITE_IOERR_WRITE, |write| write(real, data, amount, offset))
    };
    if (*shim).gathered.is_none() {
        let (real, methods) = real_methods(file);
        return write_through(real, methods);
    }
    RECEIVED.fetch_add(1, Ordering::Relaxed);
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), usize::try_from(amount).unwrap_or(0));
    match gather(shim, bytes, offset) {
        Gather::Kept => ffi::SQLITE_OK,
        Gather::Commit => {
            COMMITS.fetch_add(1, Ordering::Relaxed);
            flush(shim)
        }
        Gather::Full => flush(shim),
        Gather::PassOn => flushed_then(file, flush_all, |real, methods| {
            PASSED_ON.fetch_add(1, Ordering::Relaxed);
            write_through(real, methods)
        }),
    }
}

/// What to do with one write to a WAL file.
enum Gather {
    /// Gathered; nothing to do yet.
    Kept,
    /// Gathered, and it completed a commit frame: the gathered bytes go on.
    Commit,
    /// Gathered, and [`FLUSH_AT`] is reached: the gathered bytes go on.
    Full,
    /// Not gathered: flush what is gathered, then write this one straight on.
    PassOn,
}

/// Decides about one write: keeps its bytes when it appends to the WAL at the high-water
/// mark (new frames, or the header when the WAL starts over).
unsafe fn gather(shim: *mut Shim, bytes: &[u8], offset: i64) -> Gather {
    let Some(gathered) = (*shim).gathered.as_deref_mut() else { return Gather::PassOn };
    let length = bytes.len() as i64;
    if offset == 0 && length == WAL_HEADER {
        // The WAL starts over: learn the page size (bytes 8..12; 1 means 65536).
        let size = i64::from(u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]));
        gathered.page_size = match size {
            1 => 65536,
            512..=65536 if size.count_ones() == 1 => size,
            _ => 0,
        };
        gathered.high_water = 0;
    }
    if gathered.page_size == 0 || offset != gathered.high_water {
        // A rewrite of what this transaction wrote before, or a WAL this connection did not
        // start (its page size is not known here): straight on.
        if gathered.page_size != 0 && offset < gathered.high_water {
            REWRITES.fetch_add(1, Ordering::Relaxed);
        }
        gathered.high_water = gathered.high_water.max(offset.saturating_add(length));
        return Gather::PassOn;
    }
    if gathered.bytes.is_empty() {
        gathered.start = offset;
        gathered.next_frame = gathered.frame_at_or_after(offset);
    }
    gathered.bytes.extend_from_slice(bytes);
    gathered.high_water = offset + length;
    gathered.scan();
    if gathered.commit_end.is_some_and(|end| gathered.end() >= end) {
        Gather::Commit
    } else if gathered.bytes.len() >= FLUSH_AT {
        Gather::Full
    } else {
        Gather::Kept
    }
}

/// Runs `flush` (an error ends the call there), then `call` on the wrapped file.
unsafe fn flushed_then(
    file: *mut ffi::sqlite3_file,
    flush: unsafe fn(*mut ffi::sqlite3_file) -> c_int,
    call: impl FnOnce(*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    let rc = flush(file);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    let (real, methods) = real_methods(file);
    call(real, methods)
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, data: *mut c_void, amount: c_int, offset: i64) -> c_int {
    flushed_then(file, flush_all, |real, methods| {
        methods.xRead.map_or(ffi::SQLITE_IOERR_READ, |read| read(real, data, amount, offset))
    })
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed_then(file, flush_all, |real, methods| {
        // Appends start again at the new end.
        if let Some(gathered) = (*file.cast::<Shim>()).gathered.as_deref_mut() {
            gathered.high_water = gathered.high_water.min(size);
        }
        methods.xTruncate.map_or(ffi::SQLITE_IOERR_TRUNCATE, |truncate| truncate(real, size))
    })
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed_then(file, flush_all, |real, methods| {
        methods.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |sync| sync(real, flags))
    })
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed_then(file, flush_all, |real, methods| {
        methods.xFileSize.map_or(ffi::SQLITE_IOERR_FSTAT, |file_size| file_size(real, size))
    })
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed_then(file, flush_all, |real, methods| {
        methods.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |lock| lock(real, level))
    })
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed_then(file, flush_all, |real, methods| {
        methods.xUnlock.map_or(ffi::SQLITE_IOERR_UNLOCK, |unlock| unlock(real, level))
    })
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let (real, methods) = real_methods(file);
    methods.xCheckReservedLock.map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |check| check(real, out))
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    flushed_then(file, flush_all, |real, methods| {
        methods.xFileControl.map_or(ffi::SQLITE_NOTFOUND, |control| control(real, op, arg))
    })
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, methods) = real_methods(file);
    methods.xSectorSize.map_or(4096, |sector_size| sector_size(real))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, methods) = real_methods(file);
    methods.xDeviceCharacteristics.map_or(0, |characteristics| characteristics(real))
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    flushed_then(file, flush_before_shm, |real, methods| match methods.xShmMap {
        Some(map) if methods.iVersion >= 2 => map(real, region, size, extend, out),
        _ => ffi::SQLITE_IOERR_SHMMAP,
    })
}

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, count: c_int, flags: c_int) -> c_int {
    flushed_then(file, flush_before_shm, |real, methods| match methods.xShmLock {
        Some(lock) if methods.iVersion >= 2 => lock(real, offset, count, flags),
        _ => ffi::SQLITE_IOERR_SHMLOCK,
    })
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // A commit's frames were flushed by the write that completed its commit frame; this
    // catches anything SQLite might write some other way before it publishes a commit.
    // A barrier cannot report an error: a failed flush keeps the bytes, and the next call
    // on either file retries it and reports the error.
    let _ = flush_before_shm(file);
    let (real, methods) = real_methods(file);
    if let Some(barrier) = methods.xShmBarrier.filter(|_| methods.iVersion >= 2) {
        barrier(real);
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    flushed_then(file, flush_before_shm, |real, methods| match methods.xShmUnmap {
        Some(unmap) if methods.iVersion >= 2 => unmap(real, delete),
        _ => ffi::SQLITE_OK,
    })
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    flushed_then(file, flush_all, |real, methods| match methods.xFetch {
        Some(fetch) if methods.iVersion >= 3 => fetch(real, offset, amount, out),
        _ => {
            *out = ptr::null_mut();
            ffi::SQLITE_OK
        }
    })
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    let (real, methods) = real_methods(file);
    match methods.xUnfetch {
        Some(unfetch) if methods.iVersion >= 3 => unfetch(real, offset, page),
        _ => ffi::SQLITE_OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(page_size: i64) -> Gathered {
        Gathered { start: 0, bytes: Vec::new(), page_size, high_water: 0, next_frame: WAL_HEADER, commit_end: None }
    }

    /// A frame header (24 bytes) whose commit field is `commit`.
    fn frame_header(commit: u32) -> Vec<u8> {
        let mut header = vec![0; FRAME_HEADER as usize];
        header[4..8].copy_from_slice(&commit.to_be_bytes());
        header
    }

    #[test]
    fn frame_boundaries_follow_the_wal_layout() {
        let wal = gathered(4096);
        assert_eq!(wal.frame_at_or_after(0), 32);
        assert_eq!(wal.frame_at_or_after(32), 32);
        assert_eq!(wal.frame_at_or_after(33), 32 + 4120);
        assert_eq!(wal.frame_at_or_after(32 + 4120), 32 + 4120);
    }

    #[test]
    fn a_commit_frame_is_found_only_once_its_header_is_whole() {
        let mut wal = gathered(512);
        wal.start = 32 + 536;
        wal.next_frame = wal.frame_at_or_after(wal.start);
        wal.bytes.extend(frame_header(0));
        wal.bytes.extend(vec![0; 512]);
        wal.scan();
        assert_eq!(wal.commit_end, None, "an ordinary frame");
        wal.bytes.extend(&frame_header(9)[..10]);
        wal.scan();
        assert_eq!(wal.commit_end, None, "half a header says nothing yet");
        wal.bytes.extend(&frame_header(9)[10..]);
        wal.scan();
        assert_eq!(wal.commit_end, Some(32 + 3 * 536), "the commit frame ends a page later");
    }
}
