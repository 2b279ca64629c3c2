//! Progress bars on stderr, only when it is a terminal. Workers bump a shared counter; a ticker
//! copies it into the bar a few times a second, so hot loops never touch the bar.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

/// A progress bar fed from a counter.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
    counter: Arc<AtomicU64>,
}

impl Progress {
    /// A bar labelled `label` counting `counter` up to `total`.
    pub fn start(label: &str, total: u64, counter: Arc<AtomicU64>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self {
                bar: ProgressBar::hidden(),
                ticker: None,
                counter,
            };
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        let ticker = {
            let bar = bar.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    bar.set_position(counter.load(Ordering::Relaxed));
                }
            })
        };
        Self {
            bar,
            ticker: Some(ticker),
            counter,
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        self.bar.set_position(self.counter.load(Ordering::Relaxed));
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
    }
}
