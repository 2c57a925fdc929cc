//! Inference without gradient bookkeeping.
//!
//! candle records, for every op that involves a parameter, the inputs it needs for backward,
//! and keeps them alive as long as the result lives. That is what training needs, but a pass
//! that only evaluates (sampling, density evaluation) pays for it in memory, and layers whose
//! inverse iterates (MAF's D sequential passes) keep every pass alive: at batch 4096 and
//! width 256 that is hundreds of megabytes of buffers for nothing.
//!
//! Code that will never call `backward` on a result can run inside [`without_gradients`]; layers
//! check [`gradients_enabled`] and drop their intermediate graphs. The flag is per thread.

use std::cell::Cell;

thread_local! {
    static GRADIENTS: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` with gradient bookkeeping off on this thread (restored afterwards, also on panic).
pub fn without_gradients<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRADIENTS.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRADIENTS.with(|g| g.replace(false)));
    f()
}

/// Whether results computed now may be differentiated (false inside [`without_gradients`]).
pub fn gradients_enabled() -> bool {
    GRADIENTS.with(|g| g.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_scoped_and_nests() {
        assert!(gradients_enabled());
        without_gradients(|| {
            assert!(!gradients_enabled());
            without_gradients(|| assert!(!gradients_enabled()));
            assert!(!gradients_enabled());
        });
        assert!(gradients_enabled());
    }
}
