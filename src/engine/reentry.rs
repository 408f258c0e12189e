//! Calls back into the database from inside a view read or a command's
//! decision would wait for themselves (the views lock is held, or the
//! caller is the leader). A thread-local flag turns that hang into an
//! error.

use std::cell::Cell;

use crate::error::{Error, Result};

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as inside a callback until dropped.
pub(crate) struct Inside {
    was: bool,
}

impl Inside {
    pub(crate) fn enter() -> Inside {
        Inside {
            was: INSIDE.with(|c| c.replace(true)),
        }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let was = self.was;
        INSIDE.with(|c| c.set(was));
    }
}

/// Fails if this thread is inside a view read or a command's decision.
pub(crate) fn check(op: &'static str) -> Result<()> {
    if INSIDE.with(Cell::get) {
        return Err(Error::Reentrant { op });
    }
    Ok(())
}
