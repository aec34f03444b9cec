//! A run's identity: the id that names it in OUT's ledger, its reports,
//! lineage and every log line, and when it started. Below everything that
//! records a run (reports, the ledger, observers), so each can name it.

use std::time::SystemTime;

use crate::util::{compact_utc, sha256_hex};

/// Who a run is: its id (in OUT's ledger, reports and every log line), the
/// UUID OpenLineage knows it by, and when it started.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// `20261126T045300Z-1a2b3c4d`: sorts by start time.
    pub run_id: String,
    /// A UUID (version 7: the start time in milliseconds, then bits of the
    /// run id's digest), as OpenLineage requires for `run.runId`.
    pub uuid: String,
    pub started_at: SystemTime,
}

impl RunIdentity {
    pub fn new() -> RunIdentity {
        let started_at = SystemTime::now();
        let nanos = started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let digest = sha256_hex(format!("{nanos}-{}", std::process::id()).as_bytes());
        let run_id = format!("{}-{}", compact_utc(started_at), &digest[..8]);
        let millis = (nanos / 1_000_000) as u64 & 0xFFFF_FFFF_FFFF;
        let random = &digest[8..];
        let uuid = format!(
            "{:08x}-{:04x}-7{}-{:x}{}-{}",
            millis >> 16,
            millis & 0xFFFF,
            &random[0..3],
            8 | (u8::from_str_radix(&random[3..4], 16).expect("hex") & 0x3),
            &random[4..7],
            &random[7..19]
        );
        RunIdentity {
            run_id,
            uuid,
            started_at,
        }
    }
}

impl Default for RunIdentity {
    fn default() -> Self {
        RunIdentity::new()
    }
}
