//! Locks by key: a fixed set of mutexes, a key taking the one its hash
//! picks, so writers of the same key are ordered and writers of different
//! keys rarely wait for each other. Used by the session cache (writers of
//! one id, and cache fills against them) and the sled store (a conditional
//! write against a delete of the same key).

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

pub struct KeyLocks<const N: usize> {
    locks: [Mutex<()>; N],
    pick: foldhash::fast::FixedState,
}

impl<const N: usize> Default for KeyLocks<N> {
    fn default() -> Self {
        KeyLocks {
            locks: std::array::from_fn(|_| Mutex::new(())),
            pick: foldhash::fast::FixedState::default(),
        }
    }
}

impl<const N: usize> KeyLocks<N> {
    /// The lock of `key`'s stripe.
    pub fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let i = usize::try_from(self.pick.hash_one(key) % N as u64).unwrap_or(0);
        self.locks[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stripe's lock, taken in order (no two callers deadlock).
    pub fn lock_all(&self) -> Vec<MutexGuard<'_, ()>> {
        self.locks
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::KeyLocks;

    #[test]
    fn a_key_always_takes_the_same_lock() {
        let locks = KeyLocks::<8>::default();
        let held = locks.lock("apikey-1");
        // Its stripe is held: the same key cannot take it again now.
        let i =
            usize::try_from(std::hash::BuildHasher::hash_one(&locks.pick, "apikey-1") % 8).unwrap();
        assert!(locks.locks[i].try_lock().is_err());
        drop(held);
        assert!(locks.locks[i].try_lock().is_ok());
        assert_eq!(locks.lock_all().len(), 8);
    }
}
