//! Small helpers shared by several stages: name suggestions, durable file
//! writes, timestamps and process statistics.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// "did you mean `x`?" for a name the user gave that does not exist.
///
/// Displays as nothing when there is no close candidate, so that messages can
/// always interpolate it: `"no column `{name}`{suggestion}"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suggestion(pub Option<String>);

impl Suggestion {
    /// The candidate closest to `name`: an exact match ignoring case first, then
    /// the most similar name by Jaro-Winkler similarity, if it is similar enough
    /// that a person would call it a typo.
    pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        let lowered = name.to_lowercase();
        let mut best: Option<(f64, &str)> = None;
        for candidate in candidates {
            if candidate.to_lowercase() == lowered {
                return Suggestion(Some(candidate.to_string()));
            }
            let similarity = strsim::jaro_winkler(&lowered, &candidate.to_lowercase());
            if similarity >= 0.85 && best.is_none_or(|(b, _)| similarity > b) {
                best = Some((similarity, candidate));
            }
        }
        Suggestion(best.map(|(_, c)| c.to_string()))
    }
}

impl fmt::Display for Suggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(name) => write!(f, "; did you mean `{name}`?"),
            None => Ok(()),
        }
    }
}

/// Makes a rename or a new entry in `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What names the temporary files of [`write_atomically`]: `.name.tmp-<pid>`.
const TEMPORARY_MARK: &str = ".tmp-";

/// Whether a file name is that of a temporary file [`write_atomically`]
/// leaves behind when the process dies mid-write.
pub fn is_atomic_write_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMPORARY_MARK)
}

/// Writes `bytes` to `path` so that readers see either the old file or the
/// whole new one: a temporary sibling is written and fsynced, then renamed over
/// `path`, then the directory is fsynced. A `path` that is a URL on object
/// storage is one PUT of the object.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let text = path.to_string_lossy();
    if crate::store::is_remote(&text) {
        // One PUT: readers see the old object or the new one, never part.
        return crate::store::write_object(&text, bytes).map_err(|error| io::Error::other(error.to_string()));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}{TEMPORARY_MARK}{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// `2026-11-26T04:53:00Z`: RFC 3339 in UTC, second precision.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let (date, (hour, minute, second)) = civil_utc(time);
    format!("{date}T{hour:02}:{minute:02}:{second:02}Z")
}

/// `2026-11-26T04:53:00.123Z`: RFC 3339 in UTC, millisecond precision.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let (date, (hour, minute, second)) = civil_utc(time);
    let millis = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_millis());
    format!("{date}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// Now, in whole seconds since the epoch.
pub fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since the epoch, with fractions.
pub fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `20261126T045300Z`: a compact UTC timestamp that sorts as text.
pub fn compact_utc(time: SystemTime) -> String {
    let (date, (hour, minute, second)) = civil_utc(time);
    format!("{}T{hour:02}{minute:02}{second:02}Z", date.replace('-', ""))
}

/// RFC 3339 for a count of seconds since the epoch (clamped at the epoch).
pub fn rfc3339_from_epoch(seconds: i64) -> String {
    rfc3339_utc(UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64))
}

/// Seconds since the epoch of `2026-11-26`, `2026-11-26T09:30:00Z` or
/// `2026-11-26T09:30:00+01:00` (also with a space for `T`, and fractions of a
/// second, which are dropped).
pub fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    let days = crate::datagen::days_since_epoch(text.get(..10)?)? as i64;
    let rest = &text[10..];
    if rest.is_empty() {
        return Some(days * 86_400);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let number = |range: std::ops::Range<usize>| rest.get(range)?.parse::<i64>().ok();
    let (hour, minute, second) = (number(0..2)?, number(3..5)?, number(6..8)?);
    if rest.get(2..3)? != ":" || rest.get(5..6)? != ":" || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut zone = &rest[8..];
    if let Some(fraction) = zone.strip_prefix('.') {
        zone = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match zone {
        "Z" | "z" | "" => 0,
        _ => {
            let sign = match zone.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let hours: i64 = zone.get(1..3)?.parse().ok()?;
            let minutes: i64 = zone.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn civil_utc(time: SystemTime) -> (String, (u64, u64, u64)) {
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        (of_day / 3_600, of_day % 3_600 / 60, of_day % 60),
    )
}

/// Peak resident set size of this process so far, in bytes.
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    // Linux reports kilobytes.
    (usage.ru_maxrss as u64) * 1024
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// `12345678` -> `12,345,678`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An error and its causes, outermost first.
pub fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

/// What a caught panic said.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// `error: cause: cause` on one line, for the ledger, logs and lineage.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    causes(error).map(message_of).collect::<Vec<_>>().join(": ")
}

/// An error's message for people, without a library's backtrace: candle
/// appends one to its errors' messages when `RUST_BACKTRACE` is set, which
/// is the program's business, not the user's.
pub fn message_of(error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(candle_core::Error::WithBacktrace { inner, .. }) = error.downcast_ref::<candle_core::Error>() {
        return message_of(inner.as_ref());
    }
    let message = error.to_string();
    // A backtrace nested deeper in a wrapped message: std prints its frames
    // as `   0: name`.
    match message.find("\n   0: ") {
        Some(start) => message[..start].trim_end().to_string(),
        None => message,
    }
}

/// A number for people: four significant digits, trailing zeros dropped;
/// scientific notation outside [1e-4, 1e6).
pub fn short_number(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "∞" } else { "-∞" }.to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let magnitude = x.abs().log10().floor();
    if !(-4.0..6.0).contains(&magnitude) {
        return format!("{x:.3e}");
    }
    let decimals = (3.0 - magnitude).max(0.0) as usize;
    trim_zeros(format!("{x:.decimals$}"))
}

fn trim_zeros(number: String) -> String {
    if !number.contains('.') {
        return number;
    }
    number.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_leave_library_backtraces_out() {
        let with_backtrace = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("shape mismatch".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(with_backtrace.to_string().contains("   0: "), "candle prints it");
        assert_eq!(super::message_of(&with_backtrace), "shape mismatch");
        let wrapped = crate::model::ModelError::Compute {
            model: "m".into(),
            device: "cpu".into(),
            source: Box::new(with_backtrace),
        };
        let chain = super::error_chain(&wrapped);
        assert!(
            chain.ends_with(": shape mismatch") && !chain.contains("   0: "),
            "{chain}"
        );
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(super::group_thousands(0), "0");
        assert_eq!(super::group_thousands(999), "999");
        assert_eq!(super::group_thousands(1000), "1,000");
        assert_eq!(super::group_thousands(12345678), "12,345,678");
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn instants_parse() {
        assert_eq!(parse_instant("1970-01-02"), Some(86_400));
        assert_eq!(parse_instant("2026-11-26T09:30:00Z"), Some(1_795_685_400));
        assert_eq!(parse_instant("2026-11-26 10:30:00.25+01:00"), Some(1_795_685_400));
        assert_eq!(rfc3339_from_epoch(1_795_685_400), "2026-11-26T09:30:00Z");
        for bad in ["yesterday", "2026-13-01", "2026-11-26T9:30", "2026-11-26T09:30:00 UTC"] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn suggests_case_insensitive_match_first() {
        let s = Suggestion::closest("age", ["Agee", "AGE", "page"]);
        assert_eq!(s.to_string(), "; did you mean `AGE`?");
    }

    #[test]
    fn suggests_typo_but_not_unrelated_names() {
        assert_eq!(
            Suggestion::closest("tenure_day", ["tenure_days", "region"])
                .0
                .as_deref(),
            Some("tenure_days")
        );
        assert_eq!(Suggestion::closest("xyz", ["tenure_days", "region"]).0, None);
        assert_eq!(Suggestion(None).to_string(), "");
    }

    #[test]
    fn formats_utc_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_668_780); // 2026-11-26T04:53:00Z
        assert_eq!(rfc3339_utc(t), "2026-11-26T04:53:00Z");
        assert_eq!(compact_utc(t), "20261126T045300Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_utc(leap), "2000-02-29T00:00:00Z");
    }
}
