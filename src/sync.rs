//! Lock recovery in one place. A lock is poisoned when a thread panicked while holding it;
//! every structure guarded here stays consistent between statements (sets and maps updated
//! by single calls), so the relay recovers the guard and goes on instead of failing every
//! later caller or silently skipping the work.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, recovering it if a panic poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `lock`, recovering it if a panic poisoned it.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `lock`, recovering it if a panic poisoned it.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data() {
        let shared = std::sync::Arc::new(RwLock::new(vec![1]));
        let clone = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = clone.write();
            panic!("poison it");
        })
        .join();
        assert!(shared.is_poisoned());
        write(&shared).push(2);
        assert_eq!(*read(&shared), vec![1, 2]);
        let mutex = Mutex::new(3);
        assert_eq!(*lock(&mutex), 3);
    }
}
