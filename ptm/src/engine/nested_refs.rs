//! The nested references alive in one transaction ([`NestedRefs`]): the registry behind
//! [`Nested`](crate::Nested) guards and their staleness checks (see `nested.rs` for the model).

use std::cell::{Cell, RefCell};

use crate::error::{Error, Result};

/// One registered nested reference.
#[derive(Debug, Clone, Copy)]
struct Pin {
    id: u64,
    /// The referenced handle's bytes.
    start: usize,
    len: usize,
    /// The address of the collection (or struct) handle it was taken from.
    container: usize,
    stale: bool,
}

/// The nested references alive in one transaction.
#[derive(Debug, Default)]
pub(crate) struct NestedRefs {
    pins: RefCell<Vec<Pin>>,
    next_id: Cell<u64>,
    /// Some pin is stale: the fast path of [`check`](NestedRefs::check).
    any_stale: Cell<bool>,
}

impl NestedRefs {
    pub(crate) fn pin(&self, start: usize, len: usize, container: usize) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.pins.borrow_mut().push(Pin {
            id,
            start,
            len: len.max(1),
            container,
            stale: false,
        });
        id
    }

    pub(crate) fn unpin(&self, id: u64) {
        let mut pins = self.pins.borrow_mut();
        if let Some(i) = pins.iter().position(|p| p.id == id) {
            pins.swap_remove(i);
        }
        self.any_stale.set(pins.iter().any(|p| p.stale));
    }

    pub(crate) fn invalidate(&self, container: usize) {
        let mut pins = self.pins.borrow_mut();
        if pins.is_empty() {
            return;
        }
        // Mark the pins taken from `container`, then, transitively, the pins whose container
        // handle lies inside a newly stale pin's bytes (taken through it).
        let mut work = vec![(container, 1usize)];
        while let Some((start, len)) = work.pop() {
            for p in pins.iter_mut() {
                if !p.stale && p.container >= start && p.container < start + len {
                    p.stale = true;
                    self.any_stale.set(true);
                    work.push((p.start, p.len));
                }
            }
        }
    }

    #[inline]
    pub(crate) fn check(&self, addr: usize) -> Result<()> {
        if !self.any_stale.get() {
            return Ok(());
        }
        self.check_pins(addr)
    }

    /// [`check`](Self::check) once some reference went stale: searches the pins.
    #[inline(never)]
    fn check_pins(&self, addr: usize) -> Result<()> {
        let pins = self.pins.borrow();
        match pins
            .iter()
            .find(|p| p.stale && addr >= p.start && addr < p.start + p.len)
        {
            Some(_) => Err(Error::StaleReference),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NestedRefs;

    #[test]
    fn invalidation_is_transitive_and_checks_cover_the_bytes() {
        let r = NestedRefs::default();
        // container 100 holds a handle at 200..224, through which one at 300..324 was taken.
        let a = r.pin(200, 24, 100);
        let b = r.pin(300, 24, 200);
        let other = r.pin(400, 24, 900);
        assert!(r.check(210).is_ok());
        r.invalidate(100);
        assert!(r.check(200).is_err());
        assert!(r.check(223).is_err());
        assert!(r.check(224).is_ok());
        assert!(r.check(310).is_err(), "taken through a stale reference");
        assert!(r.check(400).is_ok(), "another container's reference stays live");
        r.unpin(a);
        r.unpin(b);
        assert!(
            r.check(200).is_ok() && r.check(300).is_ok(),
            "dropping the stale guards lifts the check"
        );
        r.invalidate(900);
        assert!(r.check(410).is_err());
        r.unpin(other);
        assert!(!r.any_stale.get());
    }

    #[test]
    fn invalidating_a_container_without_references_marks_nothing() {
        let r = NestedRefs::default();
        let a = r.pin(200, 24, 100);
        r.invalidate(150);
        assert!(r.check(200).is_ok());
        r.unpin(a);
    }
}
