//! Progress of long client work (catalog import and export) on a terminal: one line on stderr,
//! redrawn while bytes move and while the server works, erased when the work ends. Silent when
//! stderr is not a terminal or the output is JSON, so pipes and scripts see only the result.

use berth_client::Transfer;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How often the line is redrawn while nothing moves (the elapsed time still counts).
const REDRAW_EVERY: Duration = Duration::from_millis(100);

struct State {
    label: String,
    server_work: &'static str,
    transfer: Option<Transfer>,
    started: Instant,
    last_drawn: Option<Instant>,
}

/// A progress line; clones share it.
#[derive(Clone)]
pub struct Progress {
    state: Option<Arc<Mutex<State>>>,
}

impl Progress {
    /// A line for `label` (e.g. "importing catalog.yaml") when stderr is a terminal and the
    /// output is not JSON. `server_work` names what the server does between the upload and the
    /// answer ("the server is importing").
    pub fn on_terminal(label: String, server_work: &'static str, json: bool) -> Progress {
        let shown = !json && std::io::stderr().is_terminal();
        Progress {
            state: shown.then(|| {
                Arc::new(Mutex::new(State {
                    label,
                    server_work,
                    transfer: None,
                    started: Instant::now(),
                    last_drawn: None,
                }))
            }),
        }
    }

    /// Records a transfer step; redraws when the phase changes or the line is due.
    pub fn transferred(&self, transfer: Transfer) {
        let Some(state) = &self.state else { return };
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let phase_changed = !matches!(
            (state.transfer, transfer),
            (Some(Transfer::Sent { .. }), Transfer::Sent { .. })
                | (Some(Transfer::Received { .. }), Transfer::Received { .. })
        );
        let upload_done = matches!(transfer, Transfer::Sent { done, total } if done == total);
        state.transfer = Some(transfer);
        let due = state
            .last_drawn
            .is_none_or(|drawn| drawn.elapsed() >= REDRAW_EVERY);
        if phase_changed || upload_done || due {
            draw(&mut state);
        }
    }

    /// Keeps the line moving while the server works: redraws until [`Progress::finish`].
    pub fn tick(&self) -> Option<tokio::task::JoinHandle<()>> {
        let state = self.state.clone()?;
        Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(REDRAW_EVERY);
            loop {
                interval.tick().await;
                draw(
                    &mut state
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                );
            }
        }))
    }

    /// Erases the line.
    pub fn finish(&self, ticker: Option<tokio::task::JoinHandle<()>>) {
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        if self.state.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn line(state: &State) -> String {
    let elapsed = state.started.elapsed().as_secs_f64();
    let what = match state.transfer {
        None => "connecting".to_string(),
        Some(Transfer::Sent { done, total }) if done < total => format!(
            "sent {} of {} ({}%)",
            mebibytes(done),
            mebibytes(total),
            done * 100 / total.max(1)
        ),
        Some(Transfer::Sent { .. }) => state.server_work.to_string(),
        Some(Transfer::Received {
            done,
            total: Some(total),
        }) => format!(
            "received {} of {} ({}%)",
            mebibytes(done),
            mebibytes(total),
            done * 100 / total.max(1)
        ),
        Some(Transfer::Received { done, total: None }) => {
            format!("received {}", mebibytes(done))
        }
    };
    format!("{}: {what}… {elapsed:.1} s", state.label)
}

fn draw(state: &mut State) {
    state.last_drawn = Some(Instant::now());
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K{}", line(state));
    let _ = stderr.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(transfer: Option<Transfer>) -> State {
        State {
            label: "importing c.json".into(),
            server_work: "the server is importing",
            transfer,
            started: Instant::now(),
            last_drawn: None,
        }
    }

    #[test]
    fn the_line_names_the_phase_and_the_share_done() {
        let sending = line(&state(Some(Transfer::Sent {
            done: 1 << 20,
            total: 4 << 20,
        })));
        assert!(
            sending.starts_with("importing c.json: sent 1.0 MiB of 4.0 MiB (25%)"),
            "{sending}"
        );
        let working = line(&state(Some(Transfer::Sent {
            done: 4 << 20,
            total: 4 << 20,
        })));
        assert!(working.contains("the server is importing"), "{working}");
        let receiving = line(&state(Some(Transfer::Received {
            done: 3 << 19,
            total: None,
        })));
        assert!(receiving.contains("received 1.5 MiB"), "{receiving}");
    }
}
