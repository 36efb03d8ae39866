//! A tiny bare-metal virtio-mmio driver, as a guest program: it drives one
//! request through a device of the machine and reports on COM1 and through
//! the debug-exit port. It exists to exercise, on every accelerator, what
//! a Linux guest would: the virtio-mmio transport, the ioeventfd that takes
//! the QueueNotify write, the device's worker thread, and the interrupt
//! through the accelerator's IOAPIC and LAPIC.
//!
//! It is also a reference for the register sequence of a virtio 1.x driver
//! on the MMIO transport (virtio 1.2, sections 3.1.1 "Driver Requirements:
//! Device Initialization", 4.2.2 "MMIO Device Register Layout" and 4.2.3.2
//! "Virtqueue Configuration"):
//!
//! 1. check MagicValue ("virt"), Version (2: not the legacy layout) and
//!    DeviceID;
//! 2. reset (Status = 0), then ACKNOWLEDGE, then DRIVER;
//! 3. read the device's features (DeviceFeaturesSel 0 and 1), write the
//!    driver's (here only VERSION_1, feature bit 32), set FEATURES_OK and
//!    read Status back: the device clears FEATURES_OK if it refuses;
//! 4. for queue 0: QueueSel, QueueNumMax (nonzero, at least our size),
//!    QueueReady must read 0, QueueNum, the three ring addresses, then
//!    QueueReady = 1;
//! 5. DRIVER_OK;
//! 6. per request: fill descriptors, put the head in the available ring,
//!    then (after a barrier) bump the available index, then write the
//!    queue index to QueueNotify;
//! 7. on the interrupt: read InterruptStatus, write it to InterruptACK
//!    (which lowers the level-triggered line), EOI the LAPIC; the used
//!    ring then holds the request's head and the bytes written.
//!
//! Only vCPU 0 runs; boot with `--boot bare --cpus 1`. Every check that
//! fails prints `virtio: check N failed` (N in hex) and exits with N.

use super::*;
use crate::{CODE_SELECTOR, IOAPIC, LAPIC_EOI, LAPIC_SVR};

/// The debug-exit value of a driver that saw everything it expected (the
/// machine's exit status is then `EXIT_OK << 1 | 1`).
pub const EXIT_OK: u32 = 0x2a;

/// Where a virtio-mmio device is: its register window and its GSI (an
/// IOAPIC pin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub base: u64,
    pub gsi: u8,
}

/// Where the machine puts the first virtio-mmio device (the first disk,
/// else the entropy device, ...; see vmm::board).
pub const FIRST_SLOT: Slot = Slot {
    base: 0xd000_0000,
    gsi: 5,
};

/// virtio-mmio register offsets (virtio 1.2, 4.2.2).
pub(crate) mod reg {
    pub const MAGIC: i32 = 0x000;
    pub const VERSION: i32 = 0x004;
    pub const DEVICE_ID: i32 = 0x008;
    pub const DEVICE_FEATURES: i32 = 0x010;
    pub const DEVICE_FEATURES_SEL: i32 = 0x014;
    pub const DRIVER_FEATURES: i32 = 0x020;
    pub const DRIVER_FEATURES_SEL: i32 = 0x024;
    pub const QUEUE_SEL: i32 = 0x030;
    pub const QUEUE_NUM_MAX: i32 = 0x034;
    pub const QUEUE_NUM: i32 = 0x038;
    pub const QUEUE_READY: i32 = 0x044;
    pub const QUEUE_NOTIFY: i32 = 0x050;
    pub const INTERRUPT_STATUS: i32 = 0x060;
    pub const INTERRUPT_ACK: i32 = 0x064;
    pub const STATUS: i32 = 0x070;
    pub const QUEUE_DESC_LOW: i32 = 0x080;
    pub const QUEUE_DESC_HIGH: i32 = 0x084;
    pub const QUEUE_DRIVER_LOW: i32 = 0x090;
    pub const QUEUE_DRIVER_HIGH: i32 = 0x094;
    pub const QUEUE_DEVICE_LOW: i32 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: i32 = 0x0a4;
    pub const CONFIG: i32 = 0x100;
}

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;
/// Device status bits (virtio 1.2, 2.1).
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
/// VIRTIO_F_VERSION_1 is feature bit 32: bit 0 of feature word 1.
const VERSION_1_IN_WORD_1: u32 = 1;
/// Descriptor flags (virtio 1.2, 2.7.5).
const DESC_F_NEXT: u32 = 1;
const DESC_F_WRITE: u32 = 2;
/// InterruptStatus bit: the device used a buffer.
const ISR_USED: u32 = 1;

/// Device IDs (virtio 1.2, 5).
const DEVICE_BLOCK: u32 = 2;
const DEVICE_ENTROPY: u32 = 4;

/// The queue size the driver uses (a power of two the devices accept).
const QUEUE_SIZE: u32 = 8;

/// IOREGSEL / IOWIN offsets from the IOAPIC base.
const IOAPIC_WINDOW: i32 = 0x10;
/// The vector the device's interrupt is routed to.
const VECTOR: u8 = 0x30;

// Guest RAM the driver uses (identity-mapped, above the program at
// LOAD_ADDR and zero at boot).
const IDT: u64 = 0x30_0000;
const IDTR: u64 = IDT + 0x1000;
/// How many interrupts the handler saw (u32).
const IRQ_COUNT: u64 = IDTR + 0x10;
/// The InterruptStatus bits the handler saw, ORed (u32).
const ISR_SEEN: u64 = IDTR + 0x14;
/// The split virtqueue: 16-byte descriptors, the available ("driver")
/// ring and the used ("device") ring, each on its own page (more than the
/// 16/2/4-byte alignments they need).
const DESC_TABLE: u64 = 0x31_0000;
const AVAIL_RING: u64 = 0x31_1000;
const USED_RING: u64 = 0x31_2000;
/// Request buffers.
const BUF_HEADER: u64 = 0x32_0000;
const BUF_DATA: u64 = 0x32_1000;
const BUF_STATUS: u64 = 0x32_2000;

/// How many bytes the entropy request asks for.
pub const RNG_BYTES: u32 = 64;
/// The sector size of virtio-blk.
pub const SECTOR: u32 = 512;

/// A driver program and what it does on the device's MMIO window.
#[derive(Debug, Clone)]
pub struct Driver {
    pub program: Program,
    /// How many accesses the driver makes to the device's registers when
    /// the device interrupts once, besides the QueueNotify write: what an
    /// accelerator whose ioeventfd takes the notification (and whose
    /// irqchip is in the kernel) shows as MMIO exits.
    pub register_accesses: u32,
}

/// Reads 64 bytes from the virtio-rng device in the first virtio-mmio
/// slot (boot with `--rng` and no disk) and prints `virtio-rng: 64 bytes`.
pub fn rng_driver() -> Result<Driver> {
    rng_driver_at(FIRST_SLOT)
}

/// [`rng_driver`] for a device in `slot`.
pub fn rng_driver_at(slot: Slot) -> Result<Driver> {
    build(Request::Entropy, slot)
}

/// Reads sector 0 of the virtio-blk disk in the first virtio-mmio slot
/// and prints `virtio-blk: sector 0 sum <16 hex digits>`: the wrapping
/// sum of its 64 little-endian u64 words, in hex (see [`sector_sum`]).
pub fn blk_driver() -> Result<Driver> {
    blk_driver_at(FIRST_SLOT)
}

/// [`blk_driver`] for a device in `slot`.
pub fn blk_driver_at(slot: Slot) -> Result<Driver> {
    build(Request::BlockRead, slot)
}

/// What [`blk_driver`] prints for a sector 0 of `bytes`.
pub fn sector_sum(bytes: &[u8; 512]) -> u64 {
    bytes.chunks_exact(8).fold(0u64, |sum, w| {
        sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()))
    })
}

/// The debug-exit value of [`queue_rearm_flood`] once its loop is done.
pub const FLOOD_DONE: u32 = 0x2b;

/// A hostile driver: brings the device in `slot` to FEATURES_OK, then
/// `iterations` times sets queue 0 up with its descriptor table at
/// `bad_desc` (outside RAM) and enables it, which the device must refuse
/// each time. Then prints `queue flood done` and exits through the
/// debug-exit port with [`FLOOD_DONE`].
pub fn queue_rearm_flood(slot: Slot, bad_desc: u32, iterations: u32) -> Result<Program> {
    let mut a = assembler()?;
    let mut start = a.create_label();
    let mut again = a.create_label();
    a.test(rdi, rdi)?;
    a.jz(start)?;
    emit_halt_forever(&mut a)?;
    let done = emit_string(&mut a, "queue flood done\n")?;
    a.set_label(&mut start)?;
    a.mov(r15, slot.base)?;
    let write =
        |a: &mut CodeAssembler, offset: i32, value: u32| a.mov(dword_ptr(r15 + offset), value);
    write(&mut a, reg::STATUS, 0)?;
    write(&mut a, reg::STATUS, ACKNOWLEDGE)?;
    write(&mut a, reg::STATUS, ACKNOWLEDGE | DRIVER)?;
    write(&mut a, reg::DRIVER_FEATURES_SEL, 1)?;
    write(&mut a, reg::DRIVER_FEATURES, VERSION_1_IN_WORD_1)?;
    write(&mut a, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)?;
    a.mov(ecx, iterations)?;
    a.set_label(&mut again)?;
    write(&mut a, reg::QUEUE_SEL, 0)?;
    write(&mut a, reg::QUEUE_NUM, QUEUE_SIZE)?;
    write(&mut a, reg::QUEUE_DESC_LOW, bad_desc)?;
    write(&mut a, reg::QUEUE_DESC_HIGH, 0)?;
    write(&mut a, reg::QUEUE_READY, 1)?;
    a.dec(ecx)?;
    a.jnz(again)?;
    emit_print(&mut a, done)?;
    a.mov(eax, FLOOD_DONE)?;
    emit_debug_exit_eax(&mut a)?;
    finish(a)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Request {
    Entropy,
    BlockRead,
}

/// The assembler, the device's registers (base in R15) and the failure
/// path; counts the register accesses it emits.
struct Emitter {
    a: CodeAssembler,
    fail: CodeLabel,
    accesses: u32,
}

impl Emitter {
    /// EAX = the 32-bit register at `offset`.
    fn read(&mut self, offset: i32) -> Result<()> {
        self.accesses += 1;
        self.a.mov(eax, dword_ptr(r15 + offset))
    }

    /// The 32-bit register at `offset` = `value`.
    fn write(&mut self, offset: i32, value: u32) -> Result<()> {
        self.accesses += 1;
        self.a.mov(dword_ptr(r15 + offset), value)
    }

    /// Fails with `code` unless EAX == `value`.
    fn expect_eax(&mut self, value: u32, code: u32) -> Result<()> {
        self.a.cmp(eax, value)?;
        // MOV leaves the flags alone.
        self.a.mov(r14d, code)?;
        self.a.jne(self.fail)
    }

    /// Fails with `code` unless EAX has all bits of `mask`.
    fn expect_bits(&mut self, mask: u32, code: u32) -> Result<()> {
        self.a.and(eax, mask)?;
        self.expect_eax(mask, code)
    }

    /// Writes descriptor `index`: buffer `addr` of `len` bytes, `flags`,
    /// chained to `next` (if `flags` has NEXT).
    fn descriptor(&mut self, index: u64, addr: u64, len: u32, flags: u32, next: u32) -> Result<()> {
        let a = &mut self.a;
        a.mov(rdi, DESC_TABLE + 16 * index)?;
        a.mov(rax, addr)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.mov(dword_ptr(rdi + 8), len)?;
        a.mov(word_ptr(rdi + 12), flags)?;
        a.mov(word_ptr(rdi + 14), next)
    }
}

fn build(request: Request, slot: Slot) -> Result<Driver> {
    let (device_id, name) = match request {
        Request::Entropy => (DEVICE_ENTROPY, "virtio-rng"),
        Request::BlockRead => (DEVICE_BLOCK, "virtio-blk"),
    };
    let mut a = assembler()?;
    let fail = a.create_label();
    let mut e = Emitter {
        a,
        fail,
        accesses: 0,
    };
    let mut main = e.a.create_label();
    let mut handler = e.a.create_label();
    let mut putc = e.a.create_label();
    let mut puts = e.a.create_label();
    let mut puthex = e.a.create_label();
    e.a.jmp(main)?;

    let failed_text = emit_string(&mut e.a, "virtio: check ")?;
    let failed_end = emit_string(&mut e.a, " failed\n")?;
    let ok_text = match request {
        Request::Entropy => emit_string(&mut e.a, &format!("{name}: {RNG_BYTES} bytes\n"))?,
        Request::BlockRead => emit_string(&mut e.a, &format!("{name}: sector 0 sum "))?,
    };
    let newline = emit_string(&mut e.a, "\n")?;

    // The interrupt handler. The line is level-triggered: writing the
    // status bits to InterruptACK lowers it, and it must be low before the
    // EOI, or the IOAPIC would deliver it again at once.
    e.a.set_label(&mut handler)?;
    e.a.push(rax)?;
    e.a.push(rbx)?;
    e.read(reg::INTERRUPT_STATUS)?;
    e.accesses += 1;
    e.a.mov(dword_ptr(r15 + reg::INTERRUPT_ACK), eax)?;
    e.a.mov(rbx, ISR_SEEN)?;
    e.a.or(dword_ptr(rbx), eax)?;
    e.a.mov(rbx, IRQ_COUNT)?;
    e.a.inc(dword_ptr(rbx))?;
    e.a.mov(rbx, LAPIC_EOI)?;
    e.a.mov(dword_ptr(rbx), 0)?;
    e.a.pop(rbx)?;
    e.a.pop(rax)?;
    e.a.iretq()?;

    // putc: AL on COM1 once the transmitter is empty. Clobbers RDX and
    // AH.
    e.a.set_label(&mut putc)?;
    {
        let mut wait = e.a.create_label();
        e.a.mov(ah, al)?;
        e.a.mov(dx, COM1_LSR as u32)?;
        e.a.set_label(&mut wait)?;
        e.a.in_(al, dx)?;
        e.a.test(al, 0x20)?;
        e.a.jz(wait)?;
        e.a.mov(al, ah)?;
        e.a.mov(dx, COM1 as u32)?;
        e.a.out(dx, al)?;
        e.a.ret()?;
    }

    // puts: the NUL-terminated string at RSI. Clobbers RAX, RDX, RSI.
    e.a.set_label(&mut puts)?;
    {
        let mut done = e.a.create_label();
        e.a.mov(al, byte_ptr(rsi))?;
        e.a.test(al, al)?;
        e.a.jz(done)?;
        e.a.call(putc)?;
        e.a.inc(rsi)?;
        e.a.jmp(puts)?;
        e.a.set_label(&mut done)?;
        e.a.ret()?;
    }

    // puthex: the low ECX hex digits of RBX, most significant first.
    // Clobbers RAX, RBX, RCX, RDX.
    e.a.set_label(&mut puthex)?;
    {
        let mut digit = e.a.create_label();
        let mut decimal = e.a.create_label();
        // Move the first digit to print to the top nibble: shift left by
        // 4 * (16 - ECX).
        e.a.push(rcx)?;
        e.a.neg(ecx)?;
        e.a.add(ecx, 16)?;
        e.a.shl(ecx, 2)?;
        e.a.shl(rbx, cl)?;
        e.a.pop(rcx)?;
        e.a.set_label(&mut digit)?;
        e.a.rol(rbx, 4)?;
        e.a.mov(al, bl)?;
        e.a.and(al, 0xf)?;
        e.a.add(al, b'0' as u32)?;
        e.a.cmp(al, b'9' as u32)?;
        e.a.jbe(decimal)?;
        e.a.add(al, (b'a' - b'9' - 1) as u32)?;
        e.a.set_label(&mut decimal)?;
        e.a.call(putc)?;
        e.a.dec(ecx)?;
        e.a.jnz(digit)?;
        e.a.ret()?;
    }

    // The failure path: R14 = the check's code.
    let mut fail = e.fail;
    e.a.set_label(&mut fail)?;
    e.a.lea(rsi, ptr(failed_text))?;
    e.a.call(puts)?;
    e.a.mov(rbx, r14)?;
    e.a.mov(ecx, 2)?;
    e.a.call(puthex)?;
    e.a.lea(rsi, ptr(failed_end))?;
    e.a.call(puts)?;
    e.a.mov(eax, r14d)?;
    emit_debug_exit_eax(&mut e.a)?;

    e.a.set_label(&mut main)?;
    // Only vCPU 0 drives the device.
    {
        let mut bsp = e.a.create_label();
        e.a.test(rdi, rdi)?;
        e.a.jz(bsp)?;
        emit_halt_forever(&mut e.a)?;
        e.a.set_label(&mut bsp)?;
    }
    e.a.mov(r15, slot.base)?;

    // --- Interrupt plumbing: IDT gate, LAPIC, PICs, IOAPIC. ---
    // A 64-bit interrupt gate for VECTOR: offset 15:0, the code selector,
    // type 0xE present (0x8e00), offset 31:16, offset 63:32.
    e.a.lea(rax, ptr(handler))?;
    e.a.mov(rbx, IDT + 16 * u64::from(VECTOR))?;
    e.a.mov(word_ptr(rbx), ax)?;
    e.a.mov(word_ptr(rbx + 2), CODE_SELECTOR)?;
    e.a.mov(word_ptr(rbx + 4), 0x8e00)?;
    e.a.shr(rax, 16)?;
    e.a.mov(word_ptr(rbx + 6), ax)?;
    e.a.shr(rax, 16)?;
    e.a.mov(dword_ptr(rbx + 8), eax)?;
    e.a.mov(dword_ptr(rbx + 12), 0)?;
    // LIDT: limit (256 gates of 16 bytes) and base.
    e.a.mov(rax, IDTR)?;
    e.a.mov(word_ptr(rax), 0xfff)?;
    e.a.mov(rbx, IDT)?;
    e.a.mov(qword_ptr(rax + 2), rbx)?;
    e.a.lidt(ptr(rax))?;
    // The LAPIC on: spurious-interrupt vector register = enable | 0xff.
    e.a.mov(rax, LAPIC_SVR)?;
    e.a.mov(dword_ptr(rax), 0x1ff)?;
    // Mask both 8259 PICs: the GSI also reaches PIC input 5, which the
    // LAPIC's LINT0 (virtual wire) would pass on.
    e.a.mov(al, 0xff)?;
    e.a.out(0x21, al)?;
    e.a.out(0xa1, al)?;
    // IOAPIC redirection entry of the GSI (registers 0x10 + 2 * pin, low
    // then high dword): high first, destination APIC ID 0; then low, which
    // unmasks it: VECTOR, fixed delivery, physical destination, active
    // high, level-triggered (bit 15), as the virtio-mmio line is.
    e.a.mov(rbx, IOAPIC)?;
    e.a.mov(dword_ptr(rbx), 0x10 + 2 * u32::from(slot.gsi) + 1)?;
    e.a.mov(dword_ptr(rbx + IOAPIC_WINDOW), 0)?;
    e.a.mov(dword_ptr(rbx), 0x10 + 2 * u32::from(slot.gsi))?;
    e.a.mov(dword_ptr(rbx + IOAPIC_WINDOW), u32::from(VECTOR) | 1 << 15)?;

    // --- Device identification. ---
    e.read(reg::MAGIC)?;
    e.expect_eax(MAGIC, 1)?;
    e.read(reg::VERSION)?;
    e.expect_eax(2, 2)?;
    e.read(reg::DEVICE_ID)?;
    e.expect_eax(device_id, 3)?;

    // --- Initialization (virtio 1.2, 3.1.1). ---
    // Reset; the device reads back 0 once the reset is done (ours at
    // once).
    e.write(reg::STATUS, 0)?;
    e.read(reg::STATUS)?;
    e.expect_eax(0, 4)?;
    e.write(reg::STATUS, ACKNOWLEDGE)?;
    e.write(reg::STATUS, ACKNOWLEDGE | DRIVER)?;
    // The device's features: word 0 (bits 0..31, device-specific) and
    // word 1 (bits 32..63), which must offer VERSION_1.
    e.write(reg::DEVICE_FEATURES_SEL, 0)?;
    e.read(reg::DEVICE_FEATURES)?;
    e.write(reg::DEVICE_FEATURES_SEL, 1)?;
    e.read(reg::DEVICE_FEATURES)?;
    e.expect_bits(VERSION_1_IN_WORD_1, 5)?;
    // The driver's features: VERSION_1 only.
    e.write(reg::DRIVER_FEATURES_SEL, 0)?;
    e.write(reg::DRIVER_FEATURES, 0)?;
    e.write(reg::DRIVER_FEATURES_SEL, 1)?;
    e.write(reg::DRIVER_FEATURES, VERSION_1_IN_WORD_1)?;
    e.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)?;
    // FEATURES_OK must have stuck: the device accepted the subset.
    e.read(reg::STATUS)?;
    e.expect_bits(FEATURES_OK, 6)?;
    if request == Request::BlockRead {
        // Device configuration: the capacity in sectors (le64 at offset
        // 0, read as two 32-bit halves); sector 0 must exist.
        e.read(reg::CONFIG)?;
        e.a.mov(ebx, eax)?;
        e.read(reg::CONFIG + 4)?;
        e.a.or(eax, ebx)?;
        e.a.mov(r14d, 7)?;
        e.a.jz(e.fail)?;
    }

    // --- Queue 0 (virtio 1.2, 4.2.3.2). ---
    e.write(reg::QUEUE_SEL, 0)?;
    // Not already live, and large enough.
    e.read(reg::QUEUE_READY)?;
    e.expect_eax(0, 8)?;
    e.read(reg::QUEUE_NUM_MAX)?;
    e.a.cmp(eax, QUEUE_SIZE)?;
    e.a.mov(r14d, 9)?;
    e.a.jb(e.fail)?;
    e.write(reg::QUEUE_NUM, QUEUE_SIZE)?;
    // The rings lie below 4 GiB: the high halves are 0.
    e.write(reg::QUEUE_DESC_LOW, DESC_TABLE as u32)?;
    e.write(reg::QUEUE_DESC_HIGH, 0)?;
    e.write(reg::QUEUE_DRIVER_LOW, AVAIL_RING as u32)?;
    e.write(reg::QUEUE_DRIVER_HIGH, 0)?;
    e.write(reg::QUEUE_DEVICE_LOW, USED_RING as u32)?;
    e.write(reg::QUEUE_DEVICE_HIGH, 0)?;
    e.write(reg::QUEUE_READY, 1)?;
    // The driver is ready: the device may now use the queue.
    e.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)?;

    // --- The request: a descriptor chain from descriptor 0. ---
    match request {
        Request::Entropy => {
            // One device-writable buffer.
            e.descriptor(0, BUF_DATA, RNG_BYTES, DESC_F_WRITE, 0)?;
        }
        Request::BlockRead => {
            // struct virtio_blk_req: the header (type VIRTIO_BLK_T_IN = 0,
            // reserved, sector 0) the device reads, the data it writes,
            // then the status byte it writes (preset to 0xff, so that a
            // device that does not write it is caught).
            e.a.mov(rdi, BUF_HEADER)?;
            e.a.mov(dword_ptr(rdi), 0)?;
            e.a.mov(dword_ptr(rdi + 4), 0)?;
            e.a.mov(qword_ptr(rdi + 8), 0)?;
            e.a.mov(rdi, BUF_STATUS)?;
            e.a.mov(byte_ptr(rdi), 0xff)?;
            e.descriptor(0, BUF_HEADER, 16, DESC_F_NEXT, 1)?;
            e.descriptor(1, BUF_DATA, SECTOR, DESC_F_NEXT | DESC_F_WRITE, 2)?;
            e.descriptor(2, BUF_STATUS, 1, DESC_F_WRITE, 0)?;
        }
    }
    // Available ring: flags 0 (interrupts wanted), ring[0] = head 0, then
    // idx = 1. The head must be visible before the index, and the index
    // before the notification: x86 keeps stores in order, and MFENCE
    // stands for the barriers other architectures need.
    e.a.mov(rdi, AVAIL_RING)?;
    e.a.mov(word_ptr(rdi), 0)?;
    e.a.mov(word_ptr(rdi + 4), 0)?;
    e.a.mfence()?;
    e.a.mov(word_ptr(rdi + 2), 1)?;
    e.a.mfence()?;
    // QueueNotify = 0 (the queue index). Not counted: an accelerator with
    // ioeventfds takes it without an exit to the VMM.
    e.a.mov(dword_ptr(r15 + reg::QUEUE_NOTIFY), 0)?;

    // --- Wait for the interrupt. ---
    // STI's one-instruction shadow covers the HLT: an interrupt that is
    // already pending wakes it instead of slipping in between.
    {
        let mut wait = e.a.create_label();
        let mut done = e.a.create_label();
        e.a.set_label(&mut wait)?;
        e.a.mov(rax, IRQ_COUNT)?;
        e.a.cmp(dword_ptr(rax), 0)?;
        e.a.jne(done)?;
        e.a.sti()?;
        e.a.hlt()?;
        e.a.cli()?;
        e.a.jmp(wait)?;
        e.a.set_label(&mut done)?;
        e.a.cli()?;
    }
    // The handler saw "used buffer" and acknowledged it: nothing is
    // pending any more.
    e.a.mov(rax, ISR_SEEN)?;
    e.a.mov(eax, dword_ptr(rax))?;
    e.expect_bits(ISR_USED, 0x0a)?;
    e.read(reg::INTERRUPT_STATUS)?;
    e.expect_eax(0, 0x0b)?;

    // --- The used ring: idx 1, ring[0] = { id: head 0, len: written }. ---
    let written = match request {
        Request::Entropy => RNG_BYTES,
        Request::BlockRead => SECTOR + 1,
    };
    e.a.mov(rdi, USED_RING)?;
    e.a.movzx(eax, word_ptr(rdi + 2))?;
    e.expect_eax(1, 0x0c)?;
    e.a.mov(eax, dword_ptr(rdi + 4))?;
    e.expect_eax(0, 0x0d)?;
    e.a.mov(eax, dword_ptr(rdi + 8))?;
    e.expect_eax(written, 0x0e)?;

    // --- The data. ---
    e.a.mov(rsi, BUF_DATA)?;
    e.a.xor(ebx, ebx)?;
    e.a.xor(ecx, ecx)?;
    match request {
        Request::Entropy => {
            // Not all zeros: OR the 8 qwords.
            let mut next = e.a.create_label();
            e.a.set_label(&mut next)?;
            e.a.or(rbx, qword_ptr(rsi + rcx * 8))?;
            e.a.inc(ecx)?;
            e.a.cmp(ecx, RNG_BYTES / 8)?;
            e.a.jb(next)?;
            e.a.test(rbx, rbx)?;
            e.a.mov(r14d, 0x0f)?;
            e.a.jz(e.fail)?;
        }
        Request::BlockRead => {
            // The status byte: VIRTIO_BLK_S_OK (0).
            e.a.mov(rax, BUF_STATUS)?;
            e.a.movzx(eax, byte_ptr(rax))?;
            e.expect_eax(0, 0x10)?;
            // The checksum: the wrapping sum of the 64 qwords.
            let mut next = e.a.create_label();
            e.a.set_label(&mut next)?;
            e.a.add(rbx, qword_ptr(rsi + rcx * 8))?;
            e.a.inc(ecx)?;
            e.a.cmp(ecx, SECTOR / 8)?;
            e.a.jb(next)?;
        }
    }
    // The sum (or the OR) is in RBX; puts leaves it alone.
    e.a.lea(rsi, ptr(ok_text))?;
    e.a.call(puts)?;
    if request == Request::BlockRead {
        e.a.mov(ecx, 16)?;
        e.a.call(puthex)?;
        e.a.lea(rsi, ptr(newline))?;
        e.a.call(puts)?;
    }

    // Reset the device (it stops using the queue), then report success.
    e.write(reg::STATUS, 0)?;
    e.a.mov(eax, EXIT_OK)?;
    emit_debug_exit_eax(&mut e.a)?;

    let register_accesses = e.accesses;
    Ok(Driver {
        program: finish(e.a)?,
        register_accesses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_assemble() {
        let rng = rng_driver().unwrap();
        assert!(rng.program.code.windows(10).any(|w| w == b"virtio-rng"));
        // 3 identification reads, reset and its check, ACKNOWLEDGE,
        // DRIVER, 4 device feature selects and reads, 4 driver feature
        // selects and writes, FEATURES_OK and its check, 11 for the queue,
        // DRIVER_OK, 2 in the handler, the ISR check, the final reset; the
        // block driver reads the capacity too.
        assert_eq!(rng.register_accesses, 33);
        let blk = blk_driver().unwrap();
        assert_eq!(blk.register_accesses, 35);
    }

    #[test]
    fn sector_sum_wraps() {
        let mut sector = [0u8; 512];
        sector[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        sector[8] = 2;
        assert_eq!(sector_sum(&sector), 1);
    }
}
