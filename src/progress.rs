//! Progress of a pass, told to whoever wants it: the binary draws a bar on a
//! terminal (`src/cli/progress.rs`), an embedding program may count rows. The
//! library draws nothing itself.

/// Told how far a pass has got. Called from the writer thread, in row order.
pub trait Progress: Send + Sync {
    /// The pass begins; it will go through `total_rows` rows.
    fn begin(&self, total_rows: u64);
    /// `rows` more rows are done.
    fn advance(&self, rows: u64);
    /// The pass ended (done, failed or stopped).
    fn finish(&self);
}
