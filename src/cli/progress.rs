//! Progress on stderr: an indicatif bar (rows, rows/s, ETA) when stderr is a
//! terminal and the user did not ask for quiet, nothing otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The library's [`lakescore::progress::Progress`] drawn as a bar.
#[derive(Default)]
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    /// A bar, when stderr is a terminal; `None` otherwise (no one to see it).
    pub fn for_terminal() -> Option<Bar> {
        std::io::stderr().is_terminal().then(Bar::default)
    }
}

impl lakescore::progress::Progress for Bar {
    fn begin(&self, total_rows: u64) {
        let bar = ProgressBar::with_draw_target(Some(total_rows), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows  {per_sec}  ETA {eta}",
            )
            .expect("the template is valid"),
        );
        *self.bar.lock().unwrap() = Some(bar);
    }

    fn advance(&self, rows: u64) {
        if let Some(bar) = self.bar.lock().unwrap().as_ref() {
            bar.inc(rows);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }
}
