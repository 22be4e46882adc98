//! Writing log lines without ever blocking the thread that logs: lines go through a bounded queue
//! to a thread of their own, and are dropped (and counted) when a stalled stdout lets the queue
//! fill.
//!
//! A log line is written from whatever thread logs it, often one of the
//! runtime's async threads. A stdout that does not drain (a pipe nobody
//! reads, a container log driver under back-pressure) would block that
//! thread in `write`, and with it the broker's heartbeats, confirms and
//! `/healthz`: the whole service. Here the writing thread is the only one
//! that can block.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Log lines held while the output is slow; past it, new lines are dropped.
pub(crate) const QUEUED_LINES: usize = 100_000;

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    Stdout,
    Stderr,
}

/// A handle on the queue of log lines and the thread that writes them.
#[derive(Debug, Clone)]
pub(crate) struct Lines {
    sender: SyncSender<Vec<u8>>,
    /// Lines queued and not written yet, and the signal of each write.
    pending: Arc<(Mutex<usize>, Condvar)>,
    dropped: Arc<AtomicU64>,
}

impl Lines {
    /// Starts the writing thread for `sink`, holding at most `capacity` lines.
    pub(crate) fn start(sink: Sink, capacity: usize) -> io::Result<Lines> {
        let (sender, receiver) = sync_channel(capacity);
        let pending = Arc::new((Mutex::new(0), Condvar::new()));
        let written = pending.clone();
        std::thread::Builder::new()
            .name("slingshot-log".into())
            .spawn(move || write_lines(sink, &receiver, &written))?;
        Ok(Lines {
            sender,
            pending,
            dropped: Arc::default(),
        })
    }

    /// Lines dropped because the output did not keep up.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every queued line is written, at most `timeout`;
    /// whether they all were.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let (count, written) = &*self.pending;
        let deadline = Instant::now() + timeout;
        let mut pending = count.lock().unwrap_or_else(|p| p.into_inner());
        while *pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            pending = written.wait_timeout(pending, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    fn queue(&self, line: Vec<u8>) {
        let (count, _) = &*self.pending;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.sender.try_send(line) {
            *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_lines(sink: Sink, lines: &Receiver<Vec<u8>>, pending: &(Mutex<usize>, Condvar)) {
    for line in lines {
        // A write that fails (a closed stdout) loses the line, as
        // `println!` would not: the service goes on.
        let _ = match sink {
            Sink::Stdout => io::stdout().lock().write_all(&line),
            Sink::Stderr => io::stderr().lock().write_all(&line),
        };
        let (count, written) = pending;
        let mut count = count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        written.notify_all();
    }
}

/// One event's line, queued when the formatter is done with it.
#[derive(Debug)]
pub(crate) struct Line {
    text: Vec<u8>,
    lines: Lines,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.text.is_empty() {
            self.lines.queue(std::mem::take(&mut self.text));
        }
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            text: Vec::new(),
            lines: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_lines_are_written_and_flush_waits_for_them() {
        let lines = Lines::start(Sink::Stderr, 10).unwrap();
        for i in 0..3 {
            writeln!(lines.make_writer(), "(a line of the log writer's test, {i} of 3)").unwrap();
        }
        // Empty writes queue nothing.
        drop(lines.make_writer());
        assert!(lines.flush(Duration::from_secs(5)), "every line written");
        assert_eq!(lines.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (sender, receiver) = sync_channel(2);
        let lines = Lines {
            sender,
            pending: Arc::new((Mutex::new(0), Condvar::new())),
            dropped: Arc::default(),
        };
        // Nobody reads `receiver`: the output is stalled.
        for i in 0..5 {
            write!(lines.make_writer(), "line {i}").unwrap();
        }
        assert_eq!(lines.dropped(), 3, "two queued, three dropped");
        assert!(!lines.flush(Duration::from_millis(50)), "two lines never written");
        assert_eq!(receiver.try_iter().count(), 2);
    }
}
