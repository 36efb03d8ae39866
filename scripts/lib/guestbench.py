"""What the benchmark scripts share: the Linux test guest, QEMU, and the
command lines that boot the same guest on ferrovisor and on QEMU TCG."""
import base64
import os
import re
import shutil
import subprocess
import sys

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(SCRIPTS)
FERROVISOR = os.path.join(ROOT, "target/release/ferrovisor")


def guest(vmlinux=False):
    """(kernel, initrd) of the test guest, built when missing; with
    `vmlinux`, the uncompressed kernel (booted through its PVH entry)."""
    out = subprocess.run([os.path.join(SCRIPTS, "build-test-guest")], check=True,
                         capture_output=True, text=True).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    kernel = values["FERROVISOR_GUEST_VMLINUX" if vmlinux else "FERROVISOR_GUEST_KERNEL"]
    return kernel.strip("'"), values["FERROVISOR_GUEST_INITRD_RAW"].strip("'")


def ensure_ferrovisor(path):
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "-p", "ferrovisor"], cwd=ROOT, check=True)


def ensure_qemu(prog):
    if shutil.which("qemu-system-x86_64"):
        return
    if os.geteuid() != 0:
        sys.exit(f"{prog}: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "qemu-system-x86"],
                   check=True, stdout=subprocess.DEVNULL)


def cmdline(script):
    """The guest command line that runs `script` (guest/init's protocol)."""
    cmd = base64.b64encode(script.encode()).decode()
    return f"console=ttyS0 quiet panic=-1 ferrovisor.cmd={cmd}"


def ferrovisor_cmd(path, kernel, initrd, append, cpus=1, extra=()):
    return [path, "run", "--accel", "emu", "--memory", "256M", "--cpus", str(cpus),
            "--kernel", kernel, "--initrd", initrd, "--cmdline", append, *extra]


def qemu_cmd(kernel, initrd, append, cpus=1, extra=()):
    # QEMU's TSC calibration against its PIT fails under load without the
    # tsc options (see docs/TEST-GUEST.md); ferrovisor's CPU model reports
    # its TSC rate.
    khz = os.environ.get("FERROVISOR_TSC_KHZ") or str(int(float(
        re.search(r"cpu MHz\s*:\s*([0-9.]+)", open("/proc/cpuinfo").read()).group(1)) * 1000))
    return ["qemu-system-x86_64", "-accel", "tcg", "-M", "microvm,acpi=on,rtc=on", "-smp", str(cpus),
            "-m", "256", "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd,
            "-append", f"{append} tsc=reliable tsc_early_khz={khz}", *extra]
