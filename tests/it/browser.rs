//! Opens generated HTML pages in a real headless Chromium and checks they render without errors.
//!
//! Three signals, all from one `chromium --headless --dump-dom` run:
//! - the exit status;
//! - the dumped DOM, where the page's own self-check script leaves `data-rendered="ok"` on `<html>`
//!   (or `"broken:<reason>"`); a page whose script never ran has no attribute at all;
//! - chromium's log on stderr. Chromium 148 logs every page console message there at INFO,
//!   whatever its level, e.g.
//!   `[123:123:1126/093907.735427:INFO:CONSOLE:12] "Uncaught Error: x", source: file:///t.html (12)`.
//!   `console.log` and `console.error` look identical in that log, so any console line fails the
//!   check: the pages under test keep the console silent, and an uncaught exception is always
//!   logged as `"Uncaught ..."`. The rest of the log (dbus, gcm, sandbox and bluetooth warnings on a
//!   headless box, even at ERROR level) is chromium's own noise and is ignored.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM_NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// A page renders in well under a second; a minute means chromium hung.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Log lines shown when chromium fails, enough to see its last complaint.
const LOG_TAIL_LINES: usize = 40;

/// Panics with a clear message if the page does not render: chromium exits non-zero, the dumped DOM
/// lacks data-rendered="ok", or chromium's log shows a JavaScript error ("Uncaught" / console error
/// lines; chromium logs every console level alike, so any console line counts).
/// When no chromium binary is found (names: chromium, chromium-browser, google-chrome, via PATH):
/// panic if the environment variable CI is set (CI installs it), otherwise print a clear
/// "skipped: no chromium" line to stderr and return false. Returns true when the page was checked.
pub fn assert_renders_in_chromium(page: &std::path::Path) -> bool {
    let page = page
        .canonicalize()
        .unwrap_or_else(|e| panic!("cannot open page {}: {e}", page.display()));
    let Some(chromium) = find_chromium() else {
        return skip_without_chromium(&page);
    };
    let run = run_chromium(&chromium, &page);
    let shown = page.display();
    assert!(
        run.status.success(),
        "chromium exited with {} on {shown}\n{}",
        run.status,
        log_tail(&run.log)
    );
    let console = console_lines(&run.log);
    assert!(
        console.is_empty(),
        "{shown} wrote to the JavaScript console in chromium \
         (any console line fails: chromium logs all levels alike){}",
        describe_console(&console)
    );
    match rendered_attribute(&run.dom) {
        Some(verdict) if verdict == "ok" => true,
        Some(verdict) => panic!("{shown} did not render in chromium: its self-check says data-rendered=\"{verdict}\""),
        None => panic!(
            "{shown} did not render in chromium: the dumped DOM lacks data-rendered=\"ok\" on <html> \
             (the self-check script did not run, or chromium showed an error page)\n{}",
            head_of(&run.dom)
        ),
    }
}

fn skip_without_chromium(page: &Path) -> bool {
    let names = CHROMIUM_NAMES.join(", ");
    if crate::common::in_ci() {
        panic!(
            "no chromium on PATH (looked for {names}); CI installs it, so {} must be checked",
            page.display()
        );
    }
    eprintln!(
        "skipped: no chromium on PATH (looked for {names}); {} was not checked in a browser",
        page.display()
    );
    false
}

/// The first executable named like a chromium in a PATH directory, in name order.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    CHROMIUM_NAMES
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

struct ChromiumRun {
    status: ExitStatus,
    dom: String,
    log: String,
}

fn run_chromium(chromium: &Path, page: &Path) -> ChromiumRun {
    let scratch = tempfile::tempdir().expect("create a temporary directory for chromium");
    let dom_path = scratch.path().join("dom.html");
    let log_path = scratch.path().join("chromium.log");
    // A fresh profile per run: no state, locks or cached pages carried over between tests.
    let mut profile = OsString::from("--user-data-dir=");
    profile.push(scratch.path().join("profile"));
    // Files rather than pipes: chromium's helper processes inherit the handles and may outlive the
    // browser, and a pipe reader would wait for them.
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(profile)
        .arg("--dump-dom")
        .arg(file_url(page))
        .stdin(Stdio::null())
        .stdout(create(&dom_path))
        .stderr(create(&log_path))
        // Its own process group, so a hung run can be killed with all its helpers.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let Some(status) = wait_with_timeout(&mut child, TIMEOUT) else {
        kill_process_group(&mut child);
        panic!(
            "chromium did not finish rendering {} within {} s; killed it\n{}",
            page.display(),
            TIMEOUT.as_secs(),
            log_tail(&read_lossy(&log_path))
        );
    };
    ChromiumRun {
        status,
        dom: read_lossy(&dom_path),
        log: read_lossy(&log_path),
    }
}

fn create(path: &Path) -> File {
    File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
}

fn read_lossy(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            return Some(status);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the group this helper started chromium in (it is the group leader), then reaps it.
fn kill_process_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// `file://` URL for an absolute path, percent-encoding every byte a URL path cannot carry as is.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// Page console messages in chromium's log: the bracketed prefix ends in `:CONSOLE:<line>]`
/// (`:CONSOLE(<line>)]` in older builds), whatever the level word before it.
fn console_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            let Some(prefix) = line
                .strip_prefix('[')
                .and_then(|rest| rest.split_once("] "))
                .map(|(p, _)| p)
            else {
                return false;
            };
            prefix.contains(":CONSOLE:") || prefix.contains(":CONSOLE(")
        })
        .collect()
}

fn describe_console(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|line| {
            let message = line.split_once("] ").map_or(*line, |(_, m)| m);
            let kind = if message.starts_with("\"Uncaught") {
                "uncaught JavaScript error"
            } else {
                "console output"
            };
            format!("\n  {kind}: {message}")
        })
        .collect()
}

/// The value of `data-rendered` on the dumped `<html>` tag, if it has one.
fn rendered_attribute(dom: &str) -> Option<String> {
    let tag_start = dom.find("<html")?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let value_start = tag.find("data-rendered=\"")? + "data-rendered=\"".len();
    let value = &tag[value_start..value_start + tag[value_start..].find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn head_of(dom: &str) -> String {
    let end = dom.char_indices().nth(600).map_or(dom.len(), |(i, _)| i);
    format!("dumped DOM starts:\n{}", &dom[..end])
}

fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!("chromium log (last {} lines):\n{}", tail.len(), tail.join("\n"))
}
