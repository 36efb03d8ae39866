//! x87 floating point. Values live in the architectural 80-bit registers
//! but are computed in f64 (53-bit precision, host rounding): precise
//! enough for what kernels and common user space do, not bit-exact for
//! extended-precision code. No #MF / unmasked exceptions; stack faults are
//! not reported.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::Exec;
use crate::exception::{ud, R};
use crate::state::rflags::*;

const C0: u16 = 1 << 8;
const C1: u16 = 1 << 9;
const C2: u16 = 1 << 10;
const C3: u16 = 1 << 14;

fn ldexp(mut x: f64, mut e: i32) -> f64 {
    while e > 1000 {
        x *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= 2f64.powi(-1000);
        e += 1000;
    }
    x * 2f64.powi(e)
}

/// 80-bit extended → f64.
pub fn f80_to_f64(b: &[u8; 10]) -> f64 {
    let mant = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let se = u16::from_le_bytes([b[8], b[9]]);
    let sign = if se & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (se & 0x7fff) as i32;
    if exp == 0x7fff {
        if mant << 1 == 0 {
            return sign * f64::INFINITY;
        }
        // NaN: keep the sign and the top payload bits.
        let bits = ((se as u64 & 0x8000) << 48) | 0x7ff8_0000_0000_0000 | ((mant << 1) >> 12);
        return f64::from_bits(bits);
    }
    if mant == 0 {
        return sign * 0.0;
    }
    sign * ldexp(mant as f64, exp - 16383 - 63)
}

/// f64 → 80-bit extended (exact).
pub fn f64_to_f80(v: f64) -> [u8; 10] {
    let bits = v.to_bits();
    let sign = ((bits >> 63) as u16) << 15;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (e, m): (u16, u64) = if exp == 0x7ff {
        (0x7fff, (1 << 63) | (frac << 11))
    } else if exp == 0 {
        if frac == 0 {
            (0, 0)
        } else {
            // Subnormal double: normalise.
            let shift = frac.leading_zeros() - 11;
            let m = frac << (11 + shift);
            ((1 - 1023 + 16383 - shift as i32) as u16, m)
        }
    } else {
        ((exp - 1023 + 16383) as u16, (1 << 63) | (frac << 11))
    };
    let mut out = [0u8; 10];
    out[..8].copy_from_slice(&m.to_le_bytes());
    out[8..].copy_from_slice(&(sign | e).to_le_bytes());
    out
}

fn round_rc(v: f64, fcw: u16) -> f64 {
    match (fcw >> 10) & 3 {
        0 => v.round_ties_even(),
        1 => v.floor(),
        2 => v.ceil(),
        _ => v.trunc(),
    }
}

fn to_int(v: f64, bits: u32) -> u64 {
    let lim = 2f64.powi(bits as i32 - 1);
    if v.is_nan() || v >= lim || v < -lim {
        return 1u64 << (bits - 1);
    }
    (v as i64 as u64) & crate::flags::size_mask(bits / 8)
}

impl Exec<'_> {
    fn top(&self) -> usize {
        ((self.c.state.fpu.fsw >> 11) & 7) as usize
    }

    fn set_top(&mut self, t: usize) {
        let f = &mut self.c.state.fpu;
        f.fsw = (f.fsw & !(7 << 11)) | (((t & 7) as u16) << 11);
    }

    fn st(&self, i: usize) -> f64 {
        let p = (self.top() + i) & 7;
        f80_to_f64(&self.c.state.fpu.st[p])
    }

    fn set_st(&mut self, i: usize, v: f64) {
        let p = (self.top() + i) & 7;
        self.c.state.fpu.st[p] = f64_to_f80(v);
        self.c.state.fpu.ftw |= 1 << p;
    }

    fn fpush(&mut self, v: f64) {
        let t = (self.top() + 7) & 7;
        self.set_top(t);
        self.set_st(0, v);
    }

    fn fpop(&mut self) {
        let t = self.top();
        self.c.state.fpu.ftw &= !(1 << t);
        self.set_top(t + 1);
    }

    fn set_cc(&mut self, cc: u16) {
        let f = &mut self.c.state.fpu;
        f.fsw = (f.fsw & !(C0 | C1 | C2 | C3)) | cc;
    }

    /// A memory operand as f64 (float or integer by its memory size).
    fn fmem(&mut self, insn: &Instruction) -> R<f64> {
        use iced_x86::MemorySize as M;
        let seg = Self::mem_seg(insn);
        let off = self.ea(insn);
        Ok(match insn.memory_size() {
            M::Float32 => f32::from_bits(self.read(seg, off, 4)? as u32) as f64,
            M::Float64 => f64::from_bits(self.read(seg, off, 8)?),
            M::Float80 => {
                let lo = self.read(seg, off, 8)?;
                let hi = self.read(seg, off.wrapping_add(8), 2)?;
                let mut b = [0u8; 10];
                b[..8].copy_from_slice(&lo.to_le_bytes());
                b[8..].copy_from_slice(&(hi as u16).to_le_bytes());
                f80_to_f64(&b)
            }
            M::Int16 => self.read(seg, off, 2)? as i16 as f64,
            M::Int32 => self.read(seg, off, 4)? as i32 as f64,
            M::Int64 => self.read(seg, off, 8)? as i64 as f64,
            _ => return Err(ud()),
        })
    }

    fn fstore(&mut self, insn: &Instruction, v: f64, truncate: bool) -> R<()> {
        use iced_x86::MemorySize as M;
        let seg = Self::mem_seg(insn);
        let off = self.ea(insn);
        let fcw = self.c.state.fpu.fcw;
        let int = |v: f64| {
            if truncate {
                v.trunc()
            } else {
                round_rc(v, fcw)
            }
        };
        match insn.memory_size() {
            M::Float32 => self.write(seg, off, 4, (v as f32).to_bits() as u64),
            M::Float64 => self.write(seg, off, 8, v.to_bits()),
            M::Float80 => {
                let b = f64_to_f80(v);
                self.seg_lin(seg, off, 10, true)?;
                self.write(
                    seg,
                    off,
                    8,
                    u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
                )?;
                self.write(
                    seg,
                    off.wrapping_add(8),
                    2,
                    u16::from_le_bytes([b[8], b[9]]) as u64,
                )
            }
            M::Int16 => self.write(seg, off, 2, to_int(int(v), 16)),
            M::Int32 => self.write(seg, off, 4, to_int(int(v), 32)),
            M::Int64 => self.write(seg, off, 8, to_int(int(v), 64)),
            _ => Err(ud()),
        }
    }

    fn sti(r: Register) -> usize {
        (r as usize).wrapping_sub(Register::ST0 as usize) & 7
    }

    fn compare_cc(a: f64, b: f64) -> u16 {
        if a.is_nan() || b.is_nan() {
            C3 | C2 | C0
        } else if a < b {
            C0
        } else if a == b {
            C3
        } else {
            0
        }
    }

    /// Full 16-bit tag word from the abridged one.
    fn full_tag_word(&self) -> u16 {
        let f = &self.c.state.fpu;
        let mut tw = 0u16;
        for p in 0..8 {
            let tag = if f.ftw & (1 << p) == 0 {
                3
            } else {
                let v = f80_to_f64(&f.st[p]);
                let exp = u16::from_le_bytes([f.st[p][8], f.st[p][9]]) & 0x7fff;
                if v == 0.0 {
                    1
                } else if exp == 0x7fff || exp == 0 {
                    2
                } else {
                    0
                }
            };
            tw |= tag << (2 * p);
        }
        tw
    }

    pub(super) fn x87(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        let m = insn.mnemonic();
        let nops = insn.op_count();
        let mem = (0..nops).any(|i| insn.op_kind(i) == OpKind::Memory);
        let reg = |n: u32| Self::sti(insn.op_register(n));
        match m {
            Fld | Fild => {
                let v = if mem {
                    self.fmem(insn)?
                } else {
                    self.st(reg(0))
                };
                self.fpush(v);
            }
            Fld1 | Fldz | Fldpi | Fldl2e | Fldl2t | Fldlg2 | Fldln2 => {
                let v = match m {
                    Fld1 => 1.0,
                    Fldz => 0.0,
                    Fldpi => std::f64::consts::PI,
                    Fldl2e => std::f64::consts::LOG2_E,
                    Fldl2t => std::f64::consts::LOG2_10,
                    Fldlg2 => std::f64::consts::LOG10_2,
                    _ => std::f64::consts::LN_2,
                };
                self.fpush(v);
            }
            Fst | Fstp | Fist | Fistp | Fisttp => {
                let v = self.st(0);
                if mem {
                    self.fstore(insn, v, m == Fisttp)?;
                } else {
                    self.set_st(reg(0), v);
                }
                if matches!(m, Fstp | Fistp | Fisttp) {
                    self.fpop();
                }
            }
            Fxch => {
                let i = if nops == 0 { 1 } else { reg(nops - 1) };
                let (a, b) = (self.st(0), self.st(i));
                self.set_st(0, b);
                self.set_st(i, a);
            }
            Fadd | Faddp | Fiadd | Fsub | Fsubp | Fisub | Fsubr | Fsubrp | Fisubr | Fmul
            | Fmulp | Fimul | Fdiv | Fdivp | Fidiv | Fdivr | Fdivrp | Fidivr => {
                let (di, src) = if mem {
                    (0, self.fmem(insn)?)
                } else if nops == 2 {
                    (reg(0), self.st(reg(1)))
                } else {
                    (1, self.st(0))
                };
                let d = self.st(di);
                let r = match m {
                    Fadd | Faddp | Fiadd => d + src,
                    Fsub | Fsubp | Fisub => d - src,
                    Fsubr | Fsubrp | Fisubr => src - d,
                    Fmul | Fmulp | Fimul => d * src,
                    Fdiv | Fdivp | Fidiv => d / src,
                    _ => src / d,
                };
                self.set_st(di, r);
                if matches!(m, Faddp | Fsubp | Fsubrp | Fmulp | Fdivp | Fdivrp) {
                    self.fpop();
                }
            }
            Fchs | Fabs | Fsqrt | Frndint | Fsin | Fcos | F2xm1 => {
                let v = self.st(0);
                let fcw = self.c.state.fpu.fcw;
                let r = match m {
                    Fchs => -v,
                    Fabs => v.abs(),
                    Fsqrt => v.sqrt(),
                    Frndint => round_rc(v, fcw),
                    Fsin => v.sin(),
                    Fcos => v.cos(),
                    _ => v.exp2() - 1.0,
                };
                self.set_st(0, r);
                if matches!(m, Fsin | Fcos) {
                    self.set_cc(0);
                }
            }
            Fsincos | Fptan => {
                let v = self.st(0);
                if m == Fsincos {
                    self.set_st(0, v.sin());
                    self.fpush(v.cos());
                } else {
                    self.set_st(0, v.tan());
                    self.fpush(1.0);
                }
                self.set_cc(0);
            }
            Fpatan | Fyl2x | Fyl2xp1 => {
                let (x, y) = (self.st(0), self.st(1));
                let r = match m {
                    Fpatan => y.atan2(x),
                    Fyl2x => y * x.log2(),
                    _ => y * x.ln_1p() / std::f64::consts::LN_2,
                };
                self.set_st(1, r);
                self.fpop();
            }
            Fscale => {
                let (x, y) = (self.st(0), self.st(1));
                let e = y.trunc().clamp(-100_000.0, 100_000.0) as i32;
                self.set_st(0, ldexp(x, e));
            }
            Fprem | Fprem1 => {
                let (x, y) = (self.st(0), self.st(1));
                let r = if m == Fprem {
                    x % y
                } else {
                    x - (x / y).round_ties_even() * y
                };
                let q = if y != 0.0 {
                    (x / y).trunc().abs() as u64
                } else {
                    0
                };
                self.set_st(0, r);
                let mut cc = 0;
                if q & 1 != 0 {
                    cc |= C1;
                }
                if q & 2 != 0 {
                    cc |= C3;
                }
                if q & 4 != 0 {
                    cc |= C0;
                }
                self.set_cc(cc);
            }
            Fxtract => {
                let v = self.st(0);
                if v == 0.0 || !v.is_finite() {
                    self.set_st(0, if v == 0.0 { f64::NEG_INFINITY } else { v });
                    self.fpush(v);
                } else {
                    let e = v.abs().log2().floor();
                    let sig = v / 2f64.powf(e);
                    self.set_st(0, e);
                    self.fpush(sig);
                }
            }
            Fcom | Fcomp | Fcompp | Fucom | Fucomp | Fucompp | Ficom | Ficomp | Ftst => {
                let b = if m == Ftst {
                    0.0
                } else if mem {
                    self.fmem(insn)?
                } else if nops == 0 {
                    self.st(1)
                } else {
                    self.st(reg(nops - 1))
                };
                let cc = Self::compare_cc(self.st(0), b);
                self.set_cc(cc);
                match m {
                    Fcomp | Fucomp | Ficomp => self.fpop(),
                    Fcompp | Fucompp => {
                        self.fpop();
                        self.fpop();
                    }
                    _ => {}
                }
            }
            Fcomi | Fcomip | Fucomi | Fucomip => {
                let b = self.st(reg(nops - 1));
                let a = self.st(0);
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
                if matches!(m, Fcomip | Fucomip) {
                    self.fpop();
                }
            }
            Fxam => {
                let t = self.top();
                let b = self.c.state.fpu.st[t];
                let sign = if b[9] & 0x80 != 0 { C1 } else { 0 };
                let exp = u16::from_le_bytes([b[8], b[9]]) & 0x7fff;
                let mant = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
                let class = if self.c.state.fpu.ftw & (1 << t) == 0 {
                    C3 | C0
                } else if exp == 0x7fff {
                    if mant << 1 == 0 {
                        C2 | C0
                    } else {
                        C0
                    }
                } else if exp == 0 && mant == 0 {
                    C3
                } else if exp == 0 {
                    C3 | C2
                } else {
                    C2
                };
                self.set_cc(class | sign);
            }
            Fcmovb | Fcmove | Fcmovbe | Fcmovu | Fcmovnb | Fcmovne | Fcmovnbe | Fcmovnu => {
                let f = &self.c.state.flags;
                let cond = match m {
                    Fcmovb => f.cf(),
                    Fcmove => f.zf(),
                    Fcmovbe => f.cf() || f.zf(),
                    Fcmovu => f.pf(),
                    Fcmovnb => !f.cf(),
                    Fcmovne => !f.zf(),
                    Fcmovnbe => !(f.cf() || f.zf()),
                    _ => !f.pf(),
                };
                if cond {
                    let v = self.st(reg(1));
                    self.set_st(0, v);
                }
            }
            Ffree | Ffreep => {
                let p = (self.top() + reg(0)) & 7;
                self.c.state.fpu.ftw &= !(1 << p);
                if m == Ffreep {
                    self.fpop();
                }
            }
            Fincstp => {
                let t = self.top();
                self.set_top(t + 1);
            }
            Fdecstp => {
                let t = self.top();
                self.set_top(t + 7);
            }
            Fnstenv | Fnsave => {
                let seg = Self::mem_seg(insn);
                let off = self.ea(insn);
                let env = [
                    self.c.state.fpu.fcw as u64 | 0xffff_0000,
                    self.c.state.fpu.fsw as u64 | 0xffff_0000,
                    self.full_tag_word() as u64 | 0xffff_0000,
                    self.c.state.fpu.fip & 0xffff_ffff,
                    (self.c.state.fpu.fop as u64) << 16,
                    self.c.state.fpu.fdp & 0xffff_ffff,
                    0xffff_0000,
                ];
                self.seg_lin(seg, off, if m == Fnsave { 108 } else { 28 }, true)?;
                for (i, v) in env.iter().enumerate() {
                    self.write(seg, off.wrapping_add(i as u64 * 4), 4, *v)?;
                }
                if m == Fnsave {
                    for i in 0..8 {
                        let p = (self.top() + i) & 7;
                        let b = self.c.state.fpu.st[p];
                        for (j, byte) in b.iter().enumerate() {
                            let o = off.wrapping_add(28 + i as u64 * 10 + j as u64);
                            self.write(seg, o, 1, *byte as u64)?;
                        }
                    }
                    let f = &mut self.c.state.fpu;
                    f.fcw = 0x37f;
                    f.fsw = 0;
                    f.ftw = 0;
                } else {
                    // FNSTENV masks all exceptions.
                    self.c.state.fpu.fcw |= 0x3f;
                }
            }
            Fldenv | Frstor => {
                let seg = Self::mem_seg(insn);
                let off = self.ea(insn);
                let fcw = self.read(seg, off, 2)? as u16;
                let fsw = self.read(seg, off.wrapping_add(4), 2)? as u16;
                let tw = self.read(seg, off.wrapping_add(8), 2)? as u16;
                let mut regs = [[0u8; 10]; 8];
                if m == Frstor {
                    for (i, r) in regs.iter_mut().enumerate() {
                        for (j, byte) in r.iter_mut().enumerate() {
                            let o = off.wrapping_add(28 + i as u64 * 10 + j as u64);
                            *byte = self.read(seg, o, 1)? as u8;
                        }
                    }
                }
                let f = &mut self.c.state.fpu;
                f.fcw = fcw;
                f.fsw = fsw;
                f.ftw = (0..8).fold(0u8, |a, p| {
                    if (tw >> (2 * p)) & 3 != 3 {
                        a | (1 << p)
                    } else {
                        a
                    }
                });
                if m == Frstor {
                    let top = ((fsw >> 11) & 7) as usize;
                    for (i, r) in regs.iter().enumerate() {
                        f.st[(top + i) & 7] = *r;
                    }
                }
            }
            Fnop | Fdisi | Feni | Fsetpm => {}
            _ => return self.unimplemented(insn),
        }
        Ok(())
    }
}

/// Whether a mnemonic is an x87 instruction handled by [`Exec::x87`].
pub(super) fn is_x87(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Fld | Fild
            | Fld1
            | Fldz
            | Fldpi
            | Fldl2e
            | Fldl2t
            | Fldlg2
            | Fldln2
            | Fst
            | Fstp
            | Fist
            | Fistp
            | Fisttp
            | Fxch
            | Fadd
            | Faddp
            | Fiadd
            | Fsub
            | Fsubp
            | Fisub
            | Fsubr
            | Fsubrp
            | Fisubr
            | Fmul
            | Fmulp
            | Fimul
            | Fdiv
            | Fdivp
            | Fidiv
            | Fdivr
            | Fdivrp
            | Fidivr
            | Fchs
            | Fabs
            | Fsqrt
            | Frndint
            | Fsin
            | Fcos
            | F2xm1
            | Fsincos
            | Fptan
            | Fpatan
            | Fyl2x
            | Fyl2xp1
            | Fscale
            | Fprem
            | Fprem1
            | Fxtract
            | Fcom
            | Fcomp
            | Fcompp
            | Fucom
            | Fucomp
            | Fucompp
            | Ficom
            | Ficomp
            | Ftst
            | Fcomi
            | Fcomip
            | Fucomi
            | Fucomip
            | Fxam
            | Fcmovb
            | Fcmove
            | Fcmovbe
            | Fcmovu
            | Fcmovnb
            | Fcmovne
            | Fcmovnbe
            | Fcmovnu
            | Ffree
            | Ffreep
            | Fincstp
            | Fdecstp
            | Fnstenv
            | Fnsave
            | Fldenv
            | Frstor
            | Fnop
            | Fdisi
            | Feni
            | Fsetpm
    )
}
