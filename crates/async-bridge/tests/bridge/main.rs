//! The bridge from every calling context, its accounting, and the
//! responsiveness of a runtime that hands work to it. Every test runs its
//! body under a deadline ([`support::within`]), so a deadlock fails the test
//! instead of hanging it.

mod accounting;
mod contexts;
mod responsiveness;
mod support;
