//! The source side: pre-copy rounds while the VM runs, then stop and copy.
//!
//! 1. Hello (version, accelerator, CPU model, memory layout, VM
//!    description); the destination answers ready or refused.
//! 2. The memory slots log dirty pages (turned on if they did not), the
//!    log is cleared, and every non-zero page is sent while the VM runs.
//! 3. Rounds: the pages dirtied since the last round are sent, until
//!    what is left would take less than the downtime target at the
//!    bandwidth measured so far, or after `max_rounds`.
//! 4. The VM is paused; the last dirty pages are sent; the disks and
//!    TAPs are handed over (disks flushed and unlocked, TAPs detached:
//!    the destination takes them as it restores); the state (vCPUs, VM, devices: a snapshot
//!    state file) is sent; the destination restores the VM, answers
//!    *prepared*, and on the source's *go* starts it and answers
//!    *resumed*.
//!
//! On any failure the disks and TAPs are taken back (if they were
//! handed over), the VM is resumed (if this migration paused it) and the
//! dirty log is turned off again (if this migration turned it on) — but
//! for one: the destination restores the VM without starting it and
//! answers *prepared*; the source then sends *go*, and from there a lost
//! answer (the connection broke, the destination said nothing in time)
//! means the destination may be running the VM. The source then stays paused with its disks and TAPs
//! handed over ([`MigrationError::OutcomeUnknown`]): two running copies of
//! one VM would write one disk twice over; an explicit `Failed` from the
//! destination (it did not start the VM) still resumes the source.

use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::protocol::{Frame, Hello, MAX_PAGES_PER_FRAME, PAGE_SIZE, PROTOCOL_VERSION};
use super::{MigrationError, MigrationReport, SendOptions, Source};

/// How long the destination may take to answer the hello, and to
/// restore and resume the VM.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// A destination that takes no data for this long has failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Migrates the machine `source` controls over `stream`. On success the
/// destination runs the VM and the caller ends this one; on failure the
/// VM runs on here as before.
pub fn send(
    source: &mut dyn Source,
    stream: TcpStream,
    spec_json: &str,
    options: &SendOptions,
) -> Result<MigrationReport, MigrationError> {
    let was_paused = source.paused();
    let had_log = source.dirty_logging();
    let mut released = false;
    let result = Sender::new(stream, options).and_then(|mut s| {
        let result = s.run(source, spec_json, was_paused);
        released = s.released;
        result
    });
    if let Err(MigrationError::OutcomeUnknown(why)) = &result {
        tracing::error!(
            "migration outcome unknown ({why}): the VM stays paused with its disks and TAPs handed over"
        );
        if !had_log {
            if let Err(e) = source.set_dirty_logging(false) {
                tracing::warn!(error = %e, "cannot turn the dirty log off after a migration");
            }
        }
        return result;
    }
    if result.is_err() {
        if released {
            source.retake_backends();
        }
        if !had_log {
            if let Err(e) = source.set_dirty_logging(false) {
                tracing::warn!(error = %e, "cannot turn the dirty log off after a failed migration");
            }
        }
        if !was_paused {
            source.resume();
        }
    }
    result
}

struct Sender {
    out: BufWriter<TcpStream>,
    input: TcpStream,
    options: SendOptions,
    report: MigrationReport,
    /// Bytes per second measured so far.
    bandwidth: f64,
    started: Instant,
    /// The disks and TAPs were handed to the destination.
    released: bool,
}

impl Sender {
    fn new(stream: TcpStream, options: &SendOptions) -> Result<Sender, MigrationError> {
        let io = |e| MigrationError::Stream(super::ProtocolError::Io(e));
        stream.set_nodelay(true).map_err(io)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(io)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        let input = stream.try_clone().map_err(io)?;
        Ok(Sender {
            out: BufWriter::with_capacity(1 << 20, stream),
            input,
            options: *options,
            report: MigrationReport::default(),
            bandwidth: 0.0,
            started: Instant::now(),
            released: false,
        })
    }

    fn send(&mut self, frame: &Frame) -> Result<(), MigrationError> {
        frame
            .write_to(&mut self.out)
            .map_err(MigrationError::Stream)
    }

    fn send_flush(&mut self) -> Result<(), MigrationError> {
        self.out
            .flush()
            .map_err(|e| MigrationError::Stream(e.into()))
    }

    fn answer(&mut self) -> Result<Frame, MigrationError> {
        self.out
            .flush()
            .map_err(|e| MigrationError::Stream(e.into()))?;
        Frame::read_from(&mut self.input).map_err(MigrationError::Stream)
    }

    fn run(
        &mut self,
        source: &mut dyn Source,
        spec_json: &str,
        was_paused: bool,
    ) -> Result<MigrationReport, MigrationError> {
        self.send(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            header: source.header(),
            spec_json: spec_json.into(),
        }))?;
        match self.answer()? {
            Frame::Ready => {}
            Frame::Refused(why) => return Err(MigrationError::Refused(why)),
            other => return Err(MigrationError::Unexpected(other.name())),
        }
        if !source.dirty_logging() {
            source.set_dirty_logging(true)?;
        }
        // Everything goes now: what was logged before does not matter.
        take_dirty(source)?;
        let round = Instant::now();
        let sent = self.send_all(source)?;
        self.measure(sent, round.elapsed());
        self.report.rounds = 1;

        let budget = |bw: f64, d: Duration| (bw * d.as_secs_f64()) as u64;
        let mut pending = take_dirty(source)?;
        while self.report.rounds < self.options.max_rounds
            && dirty_bytes(&pending) > budget(self.bandwidth, self.options.downtime)
        {
            let round = Instant::now();
            let sent = self.send_dirty(source, &pending)?;
            self.measure(sent, round.elapsed());
            self.report.rounds += 1;
            pending = take_dirty(source)?;
        }

        source.pause()?;
        let paused = Instant::now();
        let last = take_dirty(source)?;
        let merged: Vec<Vec<u64>> = pending
            .iter()
            .zip(&last)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x | y).collect())
            .collect();
        self.report.last_round_bytes = self.send_dirty(source, &merged)?;
        let file = source.state(spec_json)?;
        let mmds = source.mmds();
        // The destination opens the disks and TAPs as it restores: hand
        // them over (disks flushed and unlocked, TAPs detached) first.
        self.send_flush()?;
        source.release_backends()?;
        self.released = true;
        if let Some(mmds) = mmds {
            self.send(&Frame::Mmds(mmds))?;
        }
        self.send(&Frame::State {
            resume: !was_paused,
            file: file.to_bytes().map_err(MigrationError::Format)?,
        })?;
        // Until the go has left, the destination cannot start the VM:
        // any failure up to there is safe to undo here.
        match self.answer()? {
            Frame::Prepared => {}
            Frame::Failed(why) => return Err(MigrationError::DestinationFailed(why)),
            other => return Err(MigrationError::Unexpected(other.name())),
        }
        self.send(&Frame::Go)?;
        self.send_flush()?;
        let unknown = |why: String| MigrationError::OutcomeUnknown(why);
        match self.answer() {
            Ok(Frame::Resumed) => {}
            // The destination says it did not start the VM.
            Ok(Frame::Failed(why)) => return Err(MigrationError::DestinationFailed(why)),
            Ok(other) => return Err(unknown(format!("an unexpected {} frame", other.name()))),
            Err(e) => return Err(unknown(super::error_line(&e))),
        }
        self.report.downtime = paused.elapsed();
        self.report.total = self.started.elapsed();
        Ok(self.report)
    }

    fn measure(&mut self, bytes: u64, took: Duration) {
        self.report.bytes += bytes;
        if bytes > (1 << 20) && !took.is_zero() {
            self.bandwidth = bytes as f64 / took.as_secs_f64();
        } else if self.bandwidth == 0.0 {
            // Too little to measure: assume a slow link (100 MB/s).
            self.bandwidth = 100e6;
        }
    }

    /// Every non-zero page (the destination's memory starts zeroed).
    /// Chunks of anonymous RAM the process never touched are skipped
    /// unread (see [`crate::snapshot::PageMap`]).
    fn send_all(&mut self, source: &dyn Source) -> Result<u64, MigrationError> {
        const CHUNK_PAGES: u64 = 256;
        let mem = source.memory();
        let pagemap = crate::snapshot::PageMap::open().filter(|_| source.memory_filled_here());
        let mut sent = 0;
        let mut page = vec![0u8; PAGE_SIZE];
        for region in mem.iter() {
            let base = region.start_addr().0;
            let pages = region.len() / PAGE_SIZE as u64;
            let map = pagemap.as_ref().filter(|_| region.file_offset().is_none());
            let mut run: Option<(u64, Vec<u8>)> = None;
            let mut p = 0;
            while p < pages {
                let gpa = base + p * PAGE_SIZE as u64;
                if p.is_multiple_of(CHUNK_PAGES) {
                    let n = (pages - p).min(CHUNK_PAGES);
                    let host = mem.get_host_address(GuestAddress(gpa)).ok();
                    if let (Some(map), Some(host)) = (map, host) {
                        if map.untouched(host as usize, (n * PAGE_SIZE as u64) as usize) {
                            if let Some((at, data)) = run.take() {
                                sent += self.send_run(at, data)?;
                            }
                            p += n;
                            continue;
                        }
                    }
                }
                p += 1;
                mem.read_slice(&mut page, GuestAddress(gpa))
                    .map_err(MigrationError::Memory)?;
                if page.iter().all(|&b| b == 0) {
                    if let Some((at, data)) = run.take() {
                        sent += self.send_run(at, data)?;
                    }
                    continue;
                }
                let (_, data) = run.get_or_insert_with(|| (gpa, Vec::new()));
                data.extend_from_slice(&page);
                if data.len() >= MAX_PAGES_PER_FRAME * PAGE_SIZE {
                    if let Some((at, data)) = run.take() {
                        sent += self.send_run(at, data)?;
                    }
                }
            }
            if let Some((at, data)) = run.take() {
                sent += self.send_run(at, data)?;
            }
        }
        Ok(sent)
    }

    fn send_run(&mut self, gpa: u64, data: Vec<u8>) -> Result<u64, MigrationError> {
        let len = data.len() as u64;
        self.send(&Frame::Pages { gpa, data })?;
        Ok(len)
    }

    /// The pages `log` (one bitmap per memory slot) names.
    fn send_dirty(&mut self, source: &dyn Source, log: &[Vec<u64>]) -> Result<u64, MigrationError> {
        let mem = source.memory();
        let mut sent = 0;
        for (region, bitmap) in mem.iter().zip(log) {
            let base = region.start_addr().0;
            let pages = region.len() / PAGE_SIZE as u64;
            for (first, count) in runs(bitmap, pages) {
                let mut p = first;
                while p < first + count {
                    let n = (first + count - p).min(MAX_PAGES_PER_FRAME as u64);
                    let gpa = base + p * PAGE_SIZE as u64;
                    let mut data = vec![0u8; n as usize * PAGE_SIZE];
                    mem.read_slice(&mut data, GuestAddress(gpa))
                        .map_err(MigrationError::Memory)?;
                    sent += self.send_run(gpa, data)?;
                    p += n;
                }
            }
        }
        Ok(sent)
    }
}

/// Takes every memory slot's dirty log (slot n = region n).
fn take_dirty(source: &dyn Source) -> Result<Vec<Vec<u64>>, MigrationError> {
    (0..source.memory().num_regions() as u32)
        .map(|slot| {
            source
                .vm()
                .get_dirty_log(slot)
                .map_err(|e| MigrationError::DirtyLog { slot, source: e })
        })
        .collect()
}

fn dirty_bytes(log: &[Vec<u64>]) -> u64 {
    log.iter()
        .flatten()
        .map(|w| u64::from(w.count_ones()))
        .sum::<u64>()
        * PAGE_SIZE as u64
}

/// Runs of set bits among the first `pages` bits: (first page, count).
fn runs(bitmap: &[u64], pages: u64) -> Vec<(u64, u64)> {
    let bit = |p: u64| {
        bitmap
            .get((p / 64) as usize)
            .is_some_and(|w| w >> (p % 64) & 1 != 0)
    };
    let mut out = Vec::new();
    let mut p = 0;
    while p < pages {
        if bitmap.get((p / 64) as usize) == Some(&0) {
            p = (p / 64 + 1) * 64;
            continue;
        }
        if !bit(p) {
            p += 1;
            continue;
        }
        let start = p;
        while p < pages && bit(p) {
            p += 1;
        }
        out.push((start, p - start));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_dirty_pages() {
        let mut log = vec![0u64; 3];
        log[0] = 0b1011;
        log[1] = 1 << 63;
        log[2] = 1;
        assert_eq!(runs(&log, 192), vec![(0, 2), (3, 1), (127, 2)]);
        assert_eq!(runs(&log, 128), vec![(0, 2), (3, 1), (127, 1)]);
        assert_eq!(dirty_bytes(&[log]), 5 * 4096);
    }
}
