//! Bandit campaigns over tables (the policy and the hash are
//! [`crate::bandit`]'s): [`allocate`] gives every customer one arm (or the
//! holdout) and publishes the assignments atomically; [`feedback`] updates
//! the posteriors from outcome tables into the policy's next version;
//! [`off_policy`] estimates a candidate policy's conversion rate from logged
//! assignments (IPS, SNIPS); [`table`] reads outcome and assignment tables.

pub mod allocate;
pub mod feedback;
pub mod off_policy;
pub mod table;
