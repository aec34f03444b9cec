//! Service levels a scoring job promises its pipeline: how long it may take,
//! by when it must be done, how many rows it must publish, how fast. A breach
//! does not stop or unpublish a run (late scores beat no scores); it is put in
//! the report, the ledger and the metrics, and the process exits 4.

use std::time::SystemTime;

use serde::Serialize;

use crate::util::{epoch_seconds, rfc3339_from_epoch};

/// The limits of `score --max-duration --deadline --min-rows --min-rows-per-second`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sla {
    pub max_duration_seconds: Option<u64>,
    pub deadline: Option<Deadline>,
    pub min_rows: Option<u64>,
    pub min_rows_per_second: Option<f64>,
}

/// A time of day (`06:30`, local time as the `TZ` variable says) by which the
/// run must be done: the occurrence of that time nearest the run's start
/// (within 12 hours either way). A job started at 23:30 with a 06:00
/// deadline is due the next morning; a retry started at 07:10 has already
/// missed its 06:30 deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub hour: u32,
    pub minute: u32,
}

impl std::str::FromStr for Deadline {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{text}` is not a time of day such as `06:30`");
        let (hour, minute) = text.split_once(':').ok_or_else(invalid)?;
        let (hour, minute): (u32, u32) = (
            hour.parse().map_err(|_| invalid())?,
            minute.parse().map_err(|_| invalid())?,
        );
        if hour > 23 || minute > 59 || text.len() != 5 {
            return Err(invalid());
        }
        Ok(Deadline { hour, minute })
    }
}

impl Deadline {
    /// Seconds since the epoch of the HH:MM local time nearest `start`.
    pub fn nearest(&self, start: i64) -> i64 {
        let mut best = start;
        let mut best_distance = i64::MAX;
        for day in -1..=1 {
            // SAFETY: localtime_r and mktime only read and write the structs we own.
            let at = unsafe {
                let mut local: libc::tm = std::mem::zeroed();
                let time: libc::time_t = start as libc::time_t;
                libc::localtime_r(&time, &mut local);
                local.tm_mday += day;
                local.tm_hour = self.hour as libc::c_int;
                local.tm_min = self.minute as libc::c_int;
                local.tm_sec = 0;
                local.tm_isdst = -1;
                libc::mktime(&mut local) as i64
            };
            if (at - start).abs() < best_distance {
                best = at;
                best_distance = (at - start).abs();
            }
        }
        best
    }
}

/// One limit, judged.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlaCheck {
    /// `max_duration`, `deadline`, `min_rows` or `min_rows_per_second`.
    pub name: &'static str,
    pub limit: String,
    pub actual: String,
    pub breached: bool,
}

/// The SLA section of a run report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlaReport {
    pub breached: bool,
    pub checks: Vec<SlaCheck>,
}

impl SlaReport {
    /// The names of the SLAs missed.
    pub fn missed(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.breached)
            .map(|c| c.name.to_string())
            .collect()
    }

    /// `deadline (limit 06:00 ..., actual ...)` for each breach, in one line.
    pub fn summary(&self) -> String {
        self.checks
            .iter()
            .filter(|c| c.breached)
            .map(|c| format!("{}: {} against a limit of {}", c.name, c.actual, c.limit))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Sla {
    pub fn is_empty(&self) -> bool {
        *self == Sla::default()
    }

    /// Judges a run that started at `started` and is done at `finished`,
    /// having published `rows` rows at `rows_per_second`.
    pub fn judge(
        &self,
        started: SystemTime,
        finished: SystemTime,
        rows: u64,
        rows_per_second: f64,
    ) -> Option<SlaReport> {
        if self.is_empty() {
            return None;
        }
        let seconds = epoch_seconds(finished) - epoch_seconds(started);
        let mut checks = Vec::new();
        if let Some(limit) = self.max_duration_seconds {
            checks.push(SlaCheck {
                name: "max_duration",
                limit: format!("{limit}s"),
                actual: format!("{seconds:.1}s"),
                breached: seconds > limit as f64,
            });
        }
        if let Some(deadline) = self.deadline {
            let due = deadline.nearest(epoch_seconds(started) as i64);
            let done = epoch_seconds(finished);
            checks.push(SlaCheck {
                name: "deadline",
                limit: rfc3339_from_epoch(due),
                actual: rfc3339_from_epoch(done as i64),
                breached: done > due as f64,
            });
        }
        if let Some(limit) = self.min_rows {
            checks.push(SlaCheck {
                name: "min_rows",
                limit: limit.to_string(),
                actual: rows.to_string(),
                breached: rows < limit,
            });
        }
        if let Some(limit) = self.min_rows_per_second {
            checks.push(SlaCheck {
                name: "min_rows_per_second",
                limit: format!("{limit}"),
                actual: format!("{rows_per_second:.0}"),
                breached: rows_per_second < limit,
            });
        }
        Some(SlaReport {
            breached: checks.iter().any(|c| c.breached),
            checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_parse_and_fall_nearest_the_start() {
        assert_eq!("06:30".parse::<Deadline>(), Ok(Deadline { hour: 6, minute: 30 }));
        for bad in ["6:30", "24:00", "06:60", "0630", "06:30:00"] {
            assert!(bad.parse::<Deadline>().is_err(), "{bad}");
        }
        let start = 1_795_685_400; // 2026-11-26T09:30:00Z
        for text in ["00:00", "09:30", "23:59", "21:29", "21:31"] {
            let due = text.parse::<Deadline>().unwrap().nearest(start);
            assert!((due - start).abs() <= 12 * 3600 + 3600, "{text}: {due}");
            // SAFETY: as in Deadline::after.
            let local = unsafe {
                let mut local: libc::tm = std::mem::zeroed();
                libc::localtime_r(&(due as libc::time_t), &mut local);
                local
            };
            assert_eq!(format!("{:02}:{:02}", local.tm_hour, local.tm_min), text);
        }
    }

    #[test]
    fn every_limit_is_judged() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_685_400);
        let sla = Sla {
            max_duration_seconds: Some(60),
            deadline: None,
            min_rows: Some(1000),
            min_rows_per_second: Some(10.0),
        };
        let fine = sla.judge(start, start + Duration::from_secs(30), 1000, 33.3).unwrap();
        assert!(!fine.breached && fine.checks.len() == 3);
        let late = sla.judge(start, start + Duration::from_secs(61), 999, 16.4).unwrap();
        assert!(late.breached);
        assert_eq!(
            late.summary(),
            "max_duration: 61.0s against a limit of 60s; min_rows: 999 against a limit of 1000"
        );
        assert_eq!(Sla::default().judge(start, start, 0, 0.0), None);
    }
}
