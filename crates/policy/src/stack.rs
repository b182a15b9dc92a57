//! Recursion that cannot overflow the thread's stack.
//!
//! Compiling and running a policy recurse once per nesting level of the document and of its
//! expressions. The levels are bounded at write time ([`crate::expr::MAX_NESTING`],
//! [`crate::doc::MAX_POLICY_NESTING`]), which bounds the work; how much stack a level takes
//! depends on the build (a debug build's frame for one policy element is ~50 KiB) and the
//! thread (a test's, a tokio worker's, a gateway worker's). So every recursive step also goes
//! through [`deeper`]: when less than [`RED_ZONE`] of the stack is left, the rest runs on a
//! fresh segment of [`SEGMENT`] bytes (`stacker`, which rustc uses for the same reason).
//! Whatever the input and the thread, the process never dies of a stack overflow.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// More than the deepest single level takes between two checks, in any build.
pub const RED_ZONE: usize = 256 * 1024;
/// The size of each extra stack segment.
pub const SEGMENT: usize = 2 * 1024 * 1024;

/// Runs `f` with at least [`RED_ZONE`] of stack available.
#[inline]
pub fn deeper<T>(f: impl FnOnce() -> T) -> T {
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}

/// A boxed future polled with at least [`RED_ZONE`] of stack available: what a nested policy
/// (`<choose>`, `<retry>`, …) is run as, since polling recurses like a call.
pub struct Deeper<'a, T>(pub Pin<Box<dyn Future<Output = T> + Send + 'a>>);

impl<T> Future for Deeper<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let inner = &mut self.0;
        deeper(|| inner.as_mut().poll(cx))
    }
}
