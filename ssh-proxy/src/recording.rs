//! Recording a pty session as asciicast v2: what the host prints (`"o"` events) and the client's
//! window changes (`"r"` events), gzip-compressed in chunks uploaded to the control plane as the
//! session goes, so a crash of the gateway loses at most the last [`FLUSH_EVERY`].
//!
//! What the client types (`"i"` events) is not recorded: a terminal echoes what it shows, and
//! what it does not echo (a password at a `sudo` prompt) is exactly what must not be stored.
//!
//! The relay only hands each block of output, by reference count, to a bounded queue; formatting,
//! compression and uploads run in the recording's own task. A queue that fills (uploads slower
//! than the output) slows the session's output down rather than dropping what the audit wants.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh::{ChannelId, ChannelWriteHalf, client, server};
use tokio::sync::mpsc;
use wire::gateway::{RecordingEnd, RecordingFailure, RecordingOpen, RecordingPolicy};

use crate::control_plane::ControlPlane;

/// Uncompressed event bytes gathered before a chunk is uploaded.
pub const FLUSH_BYTES: usize = 256 << 10;
/// Longest time output waits before it is uploaded.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Blocks of output queued between the relay and the recording's task.
const QUEUE: usize = 256;
/// Attempts per chunk before the recording counts as failed.
const ATTEMPTS: u32 = 3;

/// A session channel's recorder, set once its pty is granted and its recording opened. The relay
/// and the connection's handler share it; most sessions never set it.
pub type Tap = Arc<OnceLock<Recorder>>;

enum Event {
    Output(Bytes, Duration),
    Resize(u32, u32, Duration),
}

/// The sending side of a recording.
pub struct Recorder {
    tx: mpsc::Sender<Event>,
    started: Instant,
    /// Set when the recording stopped (it failed and the session goes on): nothing more is queued.
    stopped: Arc<AtomicBool>,
}

impl Recorder {
    /// Queues a block of the host's output; waits while the queue is full.
    pub async fn output(&self, data: &Bytes) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let at = self.started.elapsed();
        let _ = self.tx.send(Event::Output(data.clone(), at)).await;
    }

    /// Records a window change; never waits (a resize is tiny and the handler must not stall).
    pub fn resize(&self, cols: u32, rows: u32) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let _ = self
            .tx
            .try_send(Event::Resize(cols, rows, self.started.elapsed()));
    }
}

/// How a recording that cannot be stored ends its session (`RECORDING_FAILURE=refuse`).
pub struct Ending {
    pub handle: server::Handle,
    pub channel: ChannelId,
    pub up: Arc<ChannelWriteHalf<client::Msg>>,
}

impl Ending {
    /// Tells the client why on stderr, then ends the channel on both sides.
    pub async fn end(&self, why: &str) {
        let line = format!("cloud-cli-proxy: {why}; the session is ended (recording is required)\r\n");
        let _ = self
            .handle
            .extended_data(self.channel, 1, Bytes::from(line.into_bytes()))
            .await;
        let _ = self.handle.exit_status_request(self.channel, 1).await;
        let _ = self.handle.eof(self.channel).await;
        let _ = self.handle.close(self.channel).await;
        let _ = self.up.close().await;
    }
}

/// Opens a recording at the control plane and starts its task. `Err` is the reason to give when
/// it cannot be opened.
pub async fn open(
    cp: ControlPlane,
    open: RecordingOpen,
    policy: RecordingPolicy,
    ending: Ending,
) -> Result<Recorder, String> {
    let opened = cp.recording_open(&open).await.map_err(|e| {
        tracing::warn!(connection = %open.connection_id, error = %e, "cannot open a session recording");
        "the session recording cannot be stored".to_owned()
    })?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let stopped = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    tracing::info!(connection = %open.connection_id, recording = %opened.id, "recording the session");
    let writer = Writer {
        cp,
        id: opened.id,
        policy,
        ending,
        stopped: stopped.clone(),
        started,
    };
    tokio::spawn(writer.run(rx));
    Ok(Recorder { tx, started, stopped })
}

struct Writer {
    cp: ControlPlane,
    id: String,
    policy: RecordingPolicy,
    ending: Ending,
    stopped: Arc<AtomicBool>,
    started: Instant,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Event>) {
        let mut lines = Lines::default();
        let mut seq = 0_u64;
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut error = None;
        loop {
            let flush = tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => {
                        lines.push(event);
                        lines.buf.len() >= FLUSH_BYTES
                    }
                    None => break,
                },
                _ = tick.tick() => !lines.buf.is_empty(),
            };
            if flush && let Err(e) = self.upload(&mut lines, &mut seq).await {
                error = Some(e);
                break;
            }
        }
        if error.is_none() {
            lines.finish();
            if let Err(e) = self.upload(&mut lines, &mut seq).await {
                error = Some(e);
            }
        }
        if let Some(e) = &error {
            self.stopped.store(true, Ordering::Relaxed);
            rx.close();
            tracing::warn!(recording = %self.id, error = %e, policy = ?self.policy.on_failure, "session recording failed");
            if self.policy.on_failure == RecordingFailure::Refuse {
                self.ending.end("the session recording cannot be stored").await;
            }
        }
        let end = RecordingEnd {
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
        };
        if let Err(e) = self.cp.recording_end(&self.id, &end).await {
            tracing::warn!(recording = %self.id, error = %e, "cannot mark the recording ended");
        }
    }

    /// Compresses and uploads what is gathered, as chunk `seq`, retrying a few times.
    async fn upload(&self, lines: &mut Lines, seq: &mut u64) -> Result<(), String> {
        if lines.buf.is_empty() {
            return Ok(());
        }
        let body = gzip(&lines.buf).map_err(|e| format!("compressing: {e}"))?;
        let body = Bytes::from(body);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.cp.recording_chunk(&self.id, *seq, body.clone()).await {
                Ok(()) => break,
                Err(e) if attempt < ATTEMPTS && e.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        *seq += 1;
        lines.buf.clear();
        Ok(())
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}

/// asciicast v2 event lines, gathered for the next chunk. Output is text: a UTF-8 sequence cut
/// between two blocks is held back until its end arrives; bytes that are not UTF-8 become U+FFFD.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// The start of a UTF-8 sequence whose end has not arrived yet.
    carry: Vec<u8>,
    /// Time of the last output event, for the carried bytes flushed at the end.
    last: Duration,
}

impl Lines {
    fn push(&mut self, event: Event) {
        match event {
            Event::Output(data, at) => {
                self.last = at;
                let text = if self.carry.is_empty() {
                    let cut = complete_prefix(&data);
                    self.carry.extend_from_slice(&data[cut..]);
                    String::from_utf8_lossy(&data[..cut]).into_owned()
                } else {
                    self.carry.extend_from_slice(&data);
                    let cut = complete_prefix(&self.carry);
                    let rest = self.carry.split_off(cut);
                    let text = String::from_utf8_lossy(&self.carry).into_owned();
                    self.carry = rest;
                    text
                };
                if !text.is_empty() {
                    self.line(at, "o", &text);
                }
            }
            Event::Resize(cols, rows, at) => self.line(at, "r", &format!("{cols}x{rows}")),
        }
    }

    /// Writes out a sequence still held back (the session ended in the middle of it).
    fn finish(&mut self) {
        if !self.carry.is_empty() {
            let text = String::from_utf8_lossy(&std::mem::take(&mut self.carry)).into_owned();
            self.line(self.last, "o", &text);
        }
    }

    fn line(&mut self, at: Duration, code: &str, data: &str) {
        let secs = at.as_micros() as f64 / 1e6;
        // Serializing a tuple of a float and two strings cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, &(secs, code, data));
        self.buf.push(b'\n');
    }
}

/// The length of `data` up to a UTF-8 sequence that starts in its last three bytes and is not
/// complete yet (all of `data` when there is none).
fn complete_prefix(data: &[u8]) -> usize {
    let len = data.len();
    for back in 1..=len.min(3) {
        let b = data[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead
        }
        let needed = match b {
            b if b & 0b1110_0000 == 0b1100_0000 => 2,
            b if b & 0b1111_0000 == 0b1110_0000 => 3,
            b if b & 0b1111_1000 == 0b1111_0000 => 4,
            _ => 1,
        };
        return if needed > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &Lines) -> Vec<serde_json::Value> {
        String::from_utf8(lines.buf.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn utf8_cut_between_blocks_is_joined() {
        let mut lines = Lines::default();
        let text = "a€b".as_bytes(); // € is three bytes
        lines.push(Event::Output(
            Bytes::copy_from_slice(&text[..2]),
            Duration::from_millis(1),
        ));
        lines.push(Event::Output(
            Bytes::copy_from_slice(&text[2..]),
            Duration::from_millis(2),
        ));
        lines.push(Event::Resize(100, 30, Duration::from_millis(3)));
        let got = events(&lines);
        assert_eq!(got[0], serde_json::json!([0.001, "o", "a"]));
        assert_eq!(got[1], serde_json::json!([0.002, "o", "€b"]));
        assert_eq!(got[2], serde_json::json!([0.003, "r", "100x30"]));
    }

    #[test]
    fn bad_bytes_become_replacement_and_a_dangling_lead_is_flushed() {
        let mut lines = Lines::default();
        lines.push(Event::Output(
            Bytes::from_static(b"x\xff\x1b[0m\xe2\x82"),
            Duration::ZERO,
        ));
        lines.finish();
        let got = events(&lines);
        assert_eq!(got[0][2], "x\u{fffd}\u{1b}[0m");
        assert_eq!(got[1][2], "\u{fffd}");
    }

    #[test]
    fn complete_prefix_finds_unfinished_sequences() {
        assert_eq!(complete_prefix(b"abc"), 3);
        assert_eq!(complete_prefix("é".as_bytes()), 2);
        assert_eq!(complete_prefix(&"é".as_bytes()[..1]), 0);
        assert_eq!(complete_prefix(&"😀".as_bytes()[..3]), 0);
        assert_eq!(complete_prefix(b"ab\xff"), 3);
    }

    #[test]
    fn chunks_are_gzip_of_the_lines() {
        let mut lines = Lines::default();
        lines.push(Event::Output(Bytes::from_static(b"hello"), Duration::ZERO));
        let packed = gzip(&lines.buf).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out).unwrap();
        assert_eq!(out, "[0.0,\"o\",\"hello\"]\n");
    }
}
