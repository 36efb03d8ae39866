//! SSE/SSE2 floating point (scalar and packed, with host f32/f64
//! arithmetic: round-to-nearest, no MXCSR exception flags, no DAZ/FTZ) and
//! the rest of the SSE2 integer set.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::sse::{lanes, unpack, xmm_index};
use super::Exec;
use crate::exception::{ud, R};
use crate::state::rflags::*;

/// Float width of an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum W {
    S,
    D,
}

fn f32_lane(x: u128, i: u32) -> f32 {
    f32::from_bits((x >> (32 * i)) as u32)
}
fn f64_lane(x: u128, i: u32) -> f64 {
    f64::from_bits((x >> (64 * i)) as u64)
}
fn set_f32(x: u128, i: u32, v: f32) -> u128 {
    (x & !(0xffff_ffffu128 << (32 * i))) | ((v.to_bits() as u128) << (32 * i))
}
fn set_f64(x: u128, i: u32, v: f64) -> u128 {
    (x & !((u64::MAX as u128) << (64 * i))) | ((v.to_bits() as u128) << (64 * i))
}

fn arith(m: Mnemonic, a: f64, b: f64) -> f64 {
    use Mnemonic::*;
    match m {
        Addss | Addsd | Addps | Addpd => a + b,
        Subss | Subsd | Subps | Subpd => a - b,
        Mulss | Mulsd | Mulps | Mulpd => a * b,
        Divss | Divsd | Divps | Divpd => a / b,
        Minss | Minsd | Minps | Minpd => {
            if a < b {
                a
            } else {
                b
            }
        }
        Maxss | Maxsd | Maxps | Maxpd => {
            if a > b {
                a
            } else {
                b
            }
        }
        Sqrtss | Sqrtsd | Sqrtps | Sqrtpd => b.sqrt(),
        Rcpss | Rcpps => 1.0 / b,
        _ => 1.0 / b.sqrt(),
    }
}

fn arith32(m: Mnemonic, a: f32, b: f32) -> f32 {
    use Mnemonic::*;
    match m {
        Addss | Addps => a + b,
        Subss | Subps => a - b,
        Mulss | Mulps => a * b,
        Divss | Divps => a / b,
        Sqrtss | Sqrtps => b.sqrt(),
        // MIN/MAX return one operand bit for bit (a signalling NaN source
        // included): no round trip through f64, which would quiet it.
        Minss | Minps => {
            if a < b {
                a
            } else {
                b
            }
        }
        Maxss | Maxps => {
            if a > b {
                a
            } else {
                b
            }
        }
        _ => arith(m, a as f64, b as f64) as f32,
    }
}

fn compare(pred: u8, a: f64, b: f64) -> bool {
    let unord = a.is_nan() || b.is_nan();
    match pred & 7 {
        0 => a == b,
        1 => a < b,
        2 => a <= b,
        3 => unord,
        4 => a != b || unord,
        5 => a >= b || unord,
        6 => a > b || unord,
        _ => !unord,
    }
}

/// Rounds per MXCSR.RC.
fn round_mxcsr(v: f64, mxcsr: u32) -> f64 {
    match (mxcsr >> 13) & 3 {
        0 => v.round_ties_even(),
        1 => v.floor(),
        2 => v.ceil(),
        _ => v.trunc(),
    }
}

/// Float (already rounded) → integer with the x86 "integer indefinite"
/// result on overflow/NaN.
fn to_int(v: f64, bits: u32) -> u64 {
    let lim = 2f64.powi(bits as i32 - 1);
    if v.is_nan() || v >= lim || v < -lim {
        return 1u64 << (bits - 1);
    }
    (v as i64 as u64) & crate::flags::size_mask(bits / 8)
}

fn sat_i8(v: i64) -> u64 {
    v.clamp(-128, 127) as u64 & 0xff
}
fn sat_u8(v: i64) -> u64 {
    v.clamp(0, 255) as u64
}
fn sat_i16(v: i64) -> u64 {
    v.clamp(-32768, 32767) as u64 & 0xffff
}
fn sx(v: u64, bits: u32) -> i64 {
    let sh = 64 - bits;
    ((v << sh) as i64) >> sh
}

impl Exec<'_> {
    /// A scalar source: low lane of an XMM register or m32/m64.
    fn scalar_src(&mut self, insn: &Instruction, n: u32, w: W) -> R<u128> {
        match insn.op_kind(n) {
            OpKind::Memory => {
                let size = if w == W::S { 4 } else { 8 };
                Ok(self.read_op(insn, n, size)? as u128)
            }
            OpKind::Register => {
                let i = xmm_index(insn.op_register(n)).ok_or_else(ud)?;
                Ok(self.c.state.fpu.xmm[i])
            }
            _ => Err(ud()),
        }
    }

    fn packed_src(&mut self, insn: &Instruction, n: u32) -> R<u128> {
        match insn.op_kind(n) {
            OpKind::Memory => {
                let v = self.read_op_m128(insn)?;
                Ok(v)
            }
            OpKind::Register => {
                let i = xmm_index(insn.op_register(n)).ok_or_else(ud)?;
                Ok(self.c.state.fpu.xmm[i])
            }
            _ => Err(ud()),
        }
    }

    fn read_op_m128(&mut self, insn: &Instruction) -> R<u128> {
        let seg = Self::mem_seg(insn);
        let off = self.ea(insn);
        let lin = self.seg_lin(seg, off, 16, false)?;
        if lin & 15 != 0 {
            return Err(crate::exception::gp(0));
        }
        let lo = self.read(seg, off, 8)?;
        let hi = self.read(seg, off.wrapping_add(8), 8)?;
        Ok(lo as u128 | ((hi as u128) << 64))
    }

    fn xmm0_dst(insn: &Instruction) -> R<usize> {
        if insn.op0_kind() != OpKind::Register {
            return Err(ud());
        }
        xmm_index(insn.op0_register()).ok_or_else(ud)
    }

    /// Returns Ok(false) when the mnemonic is not handled here.
    pub(super) fn sse_fp(&mut self, insn: &Instruction) -> R<bool> {
        use Mnemonic::*;
        let m = insn.mnemonic();
        match m {
            Addss | Subss | Mulss | Divss | Minss | Maxss | Sqrtss | Rcpss | Rsqrtss => {
                let d = Self::xmm0_dst(insn)?;
                let b = f32_lane(self.scalar_src(insn, 1, W::S)?, 0);
                let x = self.c.state.fpu.xmm[d];
                let r = arith32(m, f32_lane(x, 0), b);
                self.c.state.fpu.xmm[d] = set_f32(x, 0, r);
            }
            Addsd | Subsd | Mulsd | Divsd | Minsd | Maxsd | Sqrtsd => {
                let d = Self::xmm0_dst(insn)?;
                let b = f64_lane(self.scalar_src(insn, 1, W::D)?, 0);
                let x = self.c.state.fpu.xmm[d];
                let r = arith(m, f64_lane(x, 0), b);
                self.c.state.fpu.xmm[d] = set_f64(x, 0, r);
            }
            Addps | Subps | Mulps | Divps | Minps | Maxps | Sqrtps | Rcpps | Rsqrtps => {
                let d = Self::xmm0_dst(insn)?;
                let b = self.packed_src(insn, 1)?;
                let mut x = self.c.state.fpu.xmm[d];
                for i in 0..4 {
                    let r = arith32(m, f32_lane(x, i), f32_lane(b, i));
                    x = set_f32(x, i, r);
                }
                self.c.state.fpu.xmm[d] = x;
            }
            Addpd | Subpd | Mulpd | Divpd | Minpd | Maxpd | Sqrtpd => {
                let d = Self::xmm0_dst(insn)?;
                let b = self.packed_src(insn, 1)?;
                let mut x = self.c.state.fpu.xmm[d];
                for i in 0..2 {
                    let r = arith(m, f64_lane(x, i), f64_lane(b, i));
                    x = set_f64(x, i, r);
                }
                self.c.state.fpu.xmm[d] = x;
            }
            Cmpss | Cmpsd | Cmpps | Cmppd => {
                let d = Self::xmm0_dst(insn)?;
                let pred = insn.immediate8();
                let x = self.c.state.fpu.xmm[d];
                let r = match m {
                    Cmpss => {
                        let b = self.scalar_src(insn, 1, W::S)?;
                        let c = compare(pred, f32_lane(x, 0) as f64, f32_lane(b, 0) as f64);
                        (x & !0xffff_ffff) | if c { 0xffff_ffff } else { 0 }
                    }
                    Cmpsd => {
                        let b = self.scalar_src(insn, 1, W::D)?;
                        let c = compare(pred, f64_lane(x, 0), f64_lane(b, 0));
                        (x & !(u64::MAX as u128)) | if c { u64::MAX as u128 } else { 0 }
                    }
                    Cmpps => {
                        let b = self.packed_src(insn, 1)?;
                        lanes(x, b, 4, |p, q| {
                            let c = compare(
                                pred,
                                f32::from_bits(p as u32) as f64,
                                f32::from_bits(q as u32) as f64,
                            );
                            if c {
                                u64::MAX
                            } else {
                                0
                            }
                        })
                    }
                    _ => {
                        let b = self.packed_src(insn, 1)?;
                        lanes(x, b, 8, |p, q| {
                            if compare(pred, f64::from_bits(p), f64::from_bits(q)) {
                                u64::MAX
                            } else {
                                0
                            }
                        })
                    }
                };
                self.c.state.fpu.xmm[d] = r;
            }
            Comiss | Ucomiss | Comisd | Ucomisd => {
                let d = Self::xmm0_dst(insn)?;
                let x = self.c.state.fpu.xmm[d];
                let (a, b) = if matches!(m, Comiss | Ucomiss) {
                    let b = self.scalar_src(insn, 1, W::S)?;
                    (f32_lane(x, 0) as f64, f32_lane(b, 0) as f64)
                } else {
                    let b = self.scalar_src(insn, 1, W::D)?;
                    (f64_lane(x, 0), f64_lane(b, 0))
                };
                let f = if a.is_nan() || b.is_nan() {
                    ZF | PF | CF
                } else if a < b {
                    CF
                } else if a == b {
                    ZF
                } else {
                    0
                };
                self.c.state.flags.set_arith(ARITH, f);
            }
            Cvtsi2ss | Cvtsi2sd => {
                let d = Self::xmm0_dst(insn)?;
                let size = Self::op_size(insn, 1);
                let v = self.read_op(insn, 1, size)?;
                let i = sx(v, size * 8);
                let x = self.c.state.fpu.xmm[d];
                self.c.state.fpu.xmm[d] = if m == Cvtsi2ss {
                    set_f32(x, 0, i as f32)
                } else {
                    set_f64(x, 0, i as f64)
                };
            }
            Cvtss2sd => {
                let d = Self::xmm0_dst(insn)?;
                let b = f32_lane(self.scalar_src(insn, 1, W::S)?, 0);
                let x = self.c.state.fpu.xmm[d];
                self.c.state.fpu.xmm[d] = set_f64(x, 0, b as f64);
            }
            Cvtsd2ss => {
                let d = Self::xmm0_dst(insn)?;
                let b = f64_lane(self.scalar_src(insn, 1, W::D)?, 0);
                let x = self.c.state.fpu.xmm[d];
                self.c.state.fpu.xmm[d] = set_f32(x, 0, b as f32);
            }
            Cvttss2si | Cvtss2si | Cvttsd2si | Cvtsd2si => {
                let r = insn.op0_register();
                let bits = r.size() as u32 * 8;
                let v = if matches!(m, Cvttss2si | Cvtss2si) {
                    f32_lane(self.scalar_src(insn, 1, W::S)?, 0) as f64
                } else {
                    f64_lane(self.scalar_src(insn, 1, W::D)?, 0)
                };
                let v = if matches!(m, Cvttss2si | Cvttsd2si) {
                    v.trunc()
                } else {
                    round_mxcsr(v, self.c.state.fpu.mxcsr)
                };
                self.set_gpr(r, to_int(v, bits));
            }
            Cvtdq2ps | Cvtps2dq | Cvttps2dq => {
                let d = Self::xmm0_dst(insn)?;
                let b = self.packed_src(insn, 1)?;
                let mxcsr = self.c.state.fpu.mxcsr;
                self.c.state.fpu.xmm[d] = lanes(b, 0, 4, |p, _| match m {
                    Cvtdq2ps => (sx(p, 32) as f32).to_bits() as u64,
                    Cvtps2dq => to_int(round_mxcsr(f32::from_bits(p as u32) as f64, mxcsr), 32),
                    _ => to_int((f32::from_bits(p as u32) as f64).trunc(), 32),
                });
            }
            Cvtdq2pd | Cvtps2pd => {
                let d = Self::xmm0_dst(insn)?;
                let b = if insn.op1_kind() == OpKind::Memory {
                    self.read_op(insn, 1, 8)? as u128
                } else {
                    self.packed_src(insn, 1)?
                };
                let mut r = 0u128;
                for i in 0..2 {
                    let lane = (b >> (32 * i)) as u32;
                    let v = if m == Cvtdq2pd {
                        lane as i32 as f64
                    } else {
                        f32::from_bits(lane) as f64
                    };
                    r = set_f64(r, i, v);
                }
                self.c.state.fpu.xmm[d] = r;
            }
            Cvtpd2ps | Cvtpd2dq | Cvttpd2dq => {
                let d = Self::xmm0_dst(insn)?;
                let b = self.packed_src(insn, 1)?;
                let mxcsr = self.c.state.fpu.mxcsr;
                let mut r = 0u128;
                for i in 0..2 {
                    let v = f64_lane(b, i);
                    let lane = match m {
                        Cvtpd2ps => (v as f32).to_bits() as u64,
                        Cvtpd2dq => to_int(round_mxcsr(v, mxcsr), 32),
                        _ => to_int(v.trunc(), 32),
                    };
                    r |= (lane as u128 & 0xffff_ffff) << (32 * i);
                }
                self.c.state.fpu.xmm[d] = r;
            }
            Shufps | Shufpd => {
                let d = Self::xmm0_dst(insn)?;
                let b = self.packed_src(insn, 1)?;
                let a = self.c.state.fpu.xmm[d];
                let imm = insn.immediate8() as u32;
                let r = if m == Shufps {
                    let pick = |v: u128, sel: u32| (v >> (32 * (sel & 3))) & 0xffff_ffff;
                    pick(a, imm)
                        | (pick(a, imm >> 2) << 32)
                        | (pick(b, imm >> 4) << 64)
                        | (pick(b, imm >> 6) << 96)
                } else {
                    let pick = |v: u128, sel: u32| (v >> (64 * (sel & 1))) & u64::MAX as u128;
                    pick(a, imm) | (pick(b, imm >> 1) << 64)
                };
                self.c.state.fpu.xmm[d] = r;
            }
            Unpcklps | Unpckhps | Unpcklpd | Unpckhpd => {
                let d = Self::xmm0_dst(insn)?;
                let b = self.packed_src(insn, 1)?;
                let a = self.c.state.fpu.xmm[d];
                let size = if matches!(m, Unpcklps | Unpckhps) {
                    4
                } else {
                    8
                };
                self.c.state.fpu.xmm[d] = unpack(a, b, size, matches!(m, Unpckhps | Unpckhpd));
            }
            Pmuludq | Pmullw | Pmulhw | Pmulhuw | Pmaddwd | Psadbw | Packsswb | Packuswb
            | Packssdw | Pmaxsw | Pminsw | Paddsb | Paddsw | Psubsb | Psubsw | Paddusw
            | Psubusw | Pavgw => {
                let d = Self::xmm0_dst(insn)?;
                let b = self.packed_src(insn, 1)?;
                let a = self.c.state.fpu.xmm[d];
                self.c.state.fpu.xmm[d] = sse2_int(m, a, b);
            }
            Pshuflw | Pshufhw => {
                let d = Self::xmm0_dst(insn)?;
                let b = self.packed_src(insn, 1)?;
                let imm = insn.immediate8() as u32;
                let base = if m == Pshuflw { 0 } else { 64 };
                let half = (b >> base) & u64::MAX as u128;
                let mut r = 0u128;
                for i in 0..4 {
                    let sel = (imm >> (2 * i)) & 3;
                    r |= ((half >> (16 * sel)) & 0xffff) << (16 * i);
                }
                let keep = if m == Pshuflw {
                    b & !(u64::MAX as u128)
                } else {
                    b & u64::MAX as u128
                };
                self.c.state.fpu.xmm[d] = keep | (r << base);
            }
            Pinsrw => {
                let d = Self::xmm0_dst(insn)?;
                let v = self.read_op(insn, 1, 2)? & 0xffff;
                let sel = (insn.immediate8() & 7) as u32;
                let x = &mut self.c.state.fpu.xmm[d];
                *x = (*x & !(0xffffu128 << (16 * sel))) | ((v as u128) << (16 * sel));
            }
            Pextrw => {
                let s = xmm_index(insn.op1_register()).ok_or_else(ud)?;
                let sel = (insn.immediate8() & 7) as u32;
                let v = (self.c.state.fpu.xmm[s] >> (16 * sel)) as u64 & 0xffff;
                if insn.op0_kind() == OpKind::Register {
                    self.set_gpr(insn.op0_register(), v);
                } else {
                    self.write_op(insn, 0, 2, v)?;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn sse2_int(m: Mnemonic, a: u128, b: u128) -> u128 {
    use Mnemonic::*;
    match m {
        Pmuludq => {
            let lo = (a as u32 as u128) * (b as u32 as u128);
            let hi = ((a >> 64) as u32 as u128) * ((b >> 64) as u32 as u128);
            lo | (hi << 64)
        }
        Pmullw => lanes(a, b, 2, |x, y| x.wrapping_mul(y)),
        Pmulhw => lanes(a, b, 2, |x, y| ((sx(x, 16) * sx(y, 16)) >> 16) as u64),
        Pmulhuw => lanes(a, b, 2, |x, y| (x * y) >> 16),
        Pmaddwd => {
            let mut r = 0u128;
            for i in 0..4 {
                let w = |v: u128, j: u32| sx((v >> (16 * j)) as u64 & 0xffff, 16);
                let s = w(a, 2 * i) * w(b, 2 * i) + w(a, 2 * i + 1) * w(b, 2 * i + 1);
                r |= ((s as u32) as u128) << (32 * i);
            }
            r
        }
        Psadbw => {
            let mut r = 0u128;
            for half in 0..2 {
                let mut s = 0u64;
                for j in 0..8 {
                    let sh = 64 * half + 8 * j;
                    let x = (a >> sh) as u8 as i64;
                    let y = (b >> sh) as u8 as i64;
                    s += (x - y).unsigned_abs();
                }
                r |= (s as u128) << (64 * half);
            }
            r
        }
        Packsswb | Packuswb => {
            let mut r = 0u128;
            for i in 0..16 {
                let src = if i < 8 { a } else { b };
                let w = sx((src >> (16 * (i % 8))) as u64 & 0xffff, 16);
                let v = if m == Packsswb { sat_i8(w) } else { sat_u8(w) };
                r |= (v as u128) << (8 * i);
            }
            r
        }
        Packssdw => {
            let mut r = 0u128;
            for i in 0..8 {
                let src = if i < 4 { a } else { b };
                let d = sx((src >> (32 * (i % 4))) as u64 & 0xffff_ffff, 32);
                r |= (sat_i16(d) as u128) << (16 * i);
            }
            r
        }
        Pmaxsw => lanes(a, b, 2, |x, y| if sx(x, 16) > sx(y, 16) { x } else { y }),
        Pminsw => lanes(a, b, 2, |x, y| if sx(x, 16) < sx(y, 16) { x } else { y }),
        Paddsb => lanes(a, b, 1, |x, y| sat_i8(sx(x, 8) + sx(y, 8))),
        Psubsb => lanes(a, b, 1, |x, y| sat_i8(sx(x, 8) - sx(y, 8))),
        Paddsw => lanes(a, b, 2, |x, y| sat_i16(sx(x, 16) + sx(y, 16))),
        Psubsw => lanes(a, b, 2, |x, y| sat_i16(sx(x, 16) - sx(y, 16))),
        Paddusw => lanes(a, b, 2, |x, y| (x + y).min(0xffff)),
        Psubusw => lanes(a, b, 2, |x, y| x.saturating_sub(y)),
        _ => lanes(a, b, 2, |x, y| (x + y + 1) >> 1),
    }
}

/// Whether [`Exec::sse_fp`] handles this mnemonic.
pub(super) fn is_sse_fp(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Addss
            | Subss
            | Mulss
            | Divss
            | Minss
            | Maxss
            | Sqrtss
            | Rcpss
            | Rsqrtss
            | Addsd
            | Subsd
            | Mulsd
            | Divsd
            | Minsd
            | Maxsd
            | Sqrtsd
            | Addps
            | Subps
            | Mulps
            | Divps
            | Minps
            | Maxps
            | Sqrtps
            | Rcpps
            | Rsqrtps
            | Addpd
            | Subpd
            | Mulpd
            | Divpd
            | Minpd
            | Maxpd
            | Sqrtpd
            | Cmpss
            | Cmpsd
            | Cmpps
            | Cmppd
            | Comiss
            | Ucomiss
            | Comisd
            | Ucomisd
            | Cvtsi2ss
            | Cvtsi2sd
            | Cvtss2sd
            | Cvtsd2ss
            | Cvttss2si
            | Cvtss2si
            | Cvttsd2si
            | Cvtsd2si
            | Cvtdq2ps
            | Cvtps2dq
            | Cvttps2dq
            | Cvtdq2pd
            | Cvtps2pd
            | Cvtpd2ps
            | Cvtpd2dq
            | Cvttpd2dq
            | Shufps
            | Shufpd
            | Unpcklps
            | Unpckhps
            | Unpcklpd
            | Unpckhpd
            | Pmuludq
            | Pmullw
            | Pmulhw
            | Pmulhuw
            | Pmaddwd
            | Psadbw
            | Packsswb
            | Packuswb
            | Packssdw
            | Pmaxsw
            | Pminsw
            | Paddsb
            | Paddsw
            | Psubsb
            | Psubsw
            | Paddusw
            | Psubusw
            | Pavgw
            | Pshuflw
            | Pshufhw
            | Pinsrw
            | Pextrw
    )
}
