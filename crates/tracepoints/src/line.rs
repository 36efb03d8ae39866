//! One line of `/sys/kernel/tracing/trace`:
//! `<task>-<tid> [<cpu>] <flags> <secs>.<usecs>: <event>: <fields>`,
//! laid out as the kernel's `trace_print_context` does
//! (`%16s-%-7d [%03d] %s %5lu.%06lu: `).

use std::cell::Cell;
use std::fmt::Write;

use crate::Event;

thread_local! {
    /// The thread's id (`gettid`), looked up once.
    static TID: Cell<i32> = const { Cell::new(0) };
    /// The vCPU this thread runs, for the events that print it.
    static VCPU: Cell<u32> = const { Cell::new(0) };
}

/// Records that the calling thread runs vCPU `id` (the accelerators call
/// it on entering `Vcpu::run`); events that print a vCPU number use it.
pub fn set_vcpu(id: u32) {
    VCPU.with(|v| v.set(id));
}

/// The vCPU the calling thread runs (0 outside a vCPU thread).
pub fn current_vcpu() -> u32 {
    VCPU.with(Cell::get)
}

/// Who and when, for the line's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Context {
    /// The task name (the kernel's `comm`, at most 15 bytes).
    pub comm: String,
    pub tid: i32,
    /// The host CPU the event happened on.
    pub cpu: i32,
    /// CLOCK_MONOTONIC, in nanoseconds.
    pub ns: u64,
}

impl Context {
    pub fn now() -> Context {
        let comm = std::thread::current()
            .name()
            .map_or_else(|| "<...>".to_string(), truncate_comm);
        let tid = TID.with(|t| {
            if t.get() == 0 {
                // SAFETY: gettid has no preconditions and cannot fail.
                t.set(unsafe { libc::gettid() });
            }
            t.get()
        });
        // SAFETY: sched_getcpu has no preconditions; it returns -1 on error.
        let cpu = unsafe { libc::sched_getcpu() }.max(0);
        Context {
            comm,
            tid,
            cpu,
            ns: monotonic_ns(),
        }
    }
}

fn truncate_comm(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists
    // on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The whole line, newline included.
pub(crate) fn format(ctx: &Context, event: Event, fields: &dyn Fn(&mut String)) -> String {
    let mut line = String::with_capacity(128);
    let _ = write!(
        line,
        "{:>16}-{:<7} [{:03}] ..... {:>5}.{:06}: {}: ",
        ctx.comm,
        ctx.tid,
        ctx.cpu,
        ctx.ns / 1_000_000_000,
        ctx.ns % 1_000_000_000 / 1_000,
        event.name()
    );
    fields(&mut line);
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_the_kernel_layout() {
        let ctx = Context {
            comm: "vcpu0".into(),
            tid: 4242,
            cpu: 1,
            ns: 1_234_567_890_123,
        };
        let line = format(&ctx, Event::KvmPio, &|w| w.push_str("pio_write at 0x3f8"));
        assert_eq!(
            line,
            "           vcpu0-4242    [001] .....  1234.567890: kvm_pio: pio_write at 0x3f8\n"
        );
    }

    #[test]
    fn comm_is_cut_at_15_bytes_on_a_char_boundary() {
        assert_eq!(truncate_comm("a-very-long-thread-name"), "a-very-long-thr");
        assert_eq!(truncate_comm("ééééééééé"), "ééééééé");
    }

    #[test]
    fn context_names_the_thread() {
        let ctx = std::thread::Builder::new()
            .name("vcpu7".into())
            .spawn(Context::now)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(ctx.comm, "vcpu7");
        assert!(ctx.tid > 0);
        assert!(ctx.ns > 0);
    }

    #[test]
    fn vcpu_is_per_thread() {
        set_vcpu(3);
        let other = std::thread::spawn(current_vcpu).join().unwrap();
        assert_eq!(current_vcpu(), 3);
        assert_eq!(other, 0);
    }
}
