//! A QEMU command line as the one VM description ([`VmSpec`]) plus what
//! only the process needs (accelerator, -S, -qmp).

use std::path::PathBuf;

use api::schema::{BootSource, MachineConfiguration, SerialDevice};
use api::spec::{Console, Extensions};
use api::VmSpec;
use vmm::Accel;

use super::devices::{Devices, Sink};
use super::machine::{self, MachineOpts};
use super::options::Opt;
use super::props::Props;
use super::QemuError;

/// QEMU's default guest RAM.
const DEFAULT_MEM_MIB: u64 = 128;

/// What the command line asks for.
#[derive(Debug)]
pub struct Config {
    pub spec: VmSpec,
    pub accel: Accel,
    /// -S: the vCPUs wait for QMP's `cont`.
    pub paused: bool,
    /// -no-shutdown: a guest power-off pauses the VM (QMP can quit it).
    pub no_shutdown: bool,
    /// -qmp unix:PATH,server=on,wait=off.
    pub qmp: Option<PathBuf>,
    pub name: Option<String>,
    /// -pidfile: written at start, removed at exit.
    pub pidfile: Option<PathBuf>,
    /// -s, -gdb tcp:[HOST]:PORT: where the gdb stub listens (HOST:PORT).
    pub gdb: Option<String>,
}

/// `-gdb DEV`'s address: `tcp:[HOST]:PORT` (an empty host is 127.0.0.1:
/// QEMU listens on every interface, Ferrovisor on the loopback only);
/// `none` for no stub.
fn gdb_address(value: &str) -> Result<Option<String>, QemuError> {
    if value == "none" {
        return Ok(None);
    }
    let bad = || {
        QemuError::new(format!(
            "-gdb {value}: not supported by Ferrovisor (tcp:[HOST]:PORT is)"
        ))
    };
    let rest = value.strip_prefix("tcp:").ok_or_else(bad)?;
    // Options after a comma (server, nowait...) change nothing here.
    let rest = rest.split(',').next().unwrap_or("");
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok(Some(format!("{host}:{port}")))
}

fn props(o: &Opt, implied: Option<&str>) -> Result<Props, QemuError> {
    Props::parse(
        &format!("-{}", o.name),
        o.value.as_deref().unwrap_or(""),
        implied,
    )
}

/// `-qmp unix:PATH,server=on,wait=off` (server and nowait in QEMU's old
/// spelling too).
fn qmp_path(value: &str) -> Result<PathBuf, QemuError> {
    let Some(rest) = value.strip_prefix("unix:") else {
        return Err(QemuError::new(format!(
            "-qmp {value}: not supported by Ferrovisor (unix:PATH,server=on,wait=off is)"
        )));
    };
    let mut p = Props::parse("-qmp", rest, Some("path"))?;
    let path = p.require("path", "-qmp unix:")?;
    let server = p.take("server").map(|v| v != "off").unwrap_or(false);
    let nowait = p.take("nowait").is_some() || p.take("wait").is_some_and(|v| v == "off");
    p.finish("-qmp")?;
    if !server || !nowait {
        return Err(QemuError::new(format!(
            "-qmp {value}: Ferrovisor serves QMP as a listening socket that does not wait \
             (add server=on,wait=off)"
        )));
    }
    Ok(PathBuf::from(path))
}

/// The output of the console: the virtconsole's and COM1's must agree,
/// as Ferrovisor's console devices share one output.
fn console_sink(d: &Devices) -> Result<Sink, QemuError> {
    let serial = match &d.serial {
        Some(s) => s.clone(),
        // -nographic sends COM1 to stdio; without it QEMU shows it on a
        // display Ferrovisor does not have: stdio too.
        None => Some(Sink::Stdio),
    };
    match (&d.virtconsole, serial) {
        (Some(v), Some(s)) if *v != s && d.serial.is_some() => Err(QemuError::new(format!(
            "-serial and the virtconsole write to different places ({s:?}, {v:?}): Ferrovisor's \
             console devices share one output"
        ))),
        (Some(v), _) => Ok(v.clone()),
        (None, Some(s)) => Ok(s),
        (None, None) => Ok(Sink::Null),
    }
}

/// Is `path` a Multiboot kernel (QEMU then puts the file name first on
/// its command line)? Unreadable files are not: loading reports them.
fn is_multiboot(path: &str) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    if std::io::Read::read_to_end(
        &mut std::io::Read::take(file, arch::boot::multiboot::MULTIBOOT_SEARCH_LEN as u64),
        &mut head,
    )
    .is_err()
    {
        return false;
    }
    !arch::bzimage::is_bzimage(&head)
        && matches!(arch::boot::multiboot::find_header(&head), Ok(Some(_)))
}

impl Config {
    pub fn from_opts(opts: &[Opt]) -> Result<Config, QemuError> {
        let mut m = MachineOpts::default();
        let mut accels: Vec<String> = Vec::new();
        let mut cpu = None;
        let mut mem = DEFAULT_MEM_MIB;
        let mut cpus = 1;
        let (mut kernel, mut initrd, mut append) = (None, None, None);
        let (mut paused, mut no_shutdown) = (false, false);
        let mut qmp = None;
        let mut name = None;
        let mut pidfile = None;
        let mut gdb = None;
        let mut globals = Vec::new();
        // Machine-wide options first: the devices need the transport.
        for o in opts {
            let v = o.value.as_deref().unwrap_or("");
            match o.name.as_str() {
                "machine" => machine::machine(&mut m, props(o, Some("type"))?)?,
                "accel" => accels.push(machine::accel_option(props(o, Some("accel"))?)?),
                "enable-kvm" => accels.push("kvm".to_string()),
                "cpu" => cpu = Some(machine::cpu(v)?),
                "m" => mem = machine::memory(props(o, Some("size"))?)?,
                "smp" => cpus = machine::smp(props(o, Some("cpus"))?)?,
                "kernel" => kernel = Some(v.to_string()),
                "initrd" => initrd = Some(v.to_string()),
                "append" => append = Some(v.to_string()),
                "S" => paused = true,
                "s" => gdb = gdb_address("tcp::1234")?,
                "gdb" => gdb = gdb_address(v)?,
                "no-shutdown" => no_shutdown = true,
                "qmp" => {
                    if qmp.is_some() {
                        return Err(QemuError::new(
                            "-qmp: a second QMP socket is not supported by Ferrovisor".into(),
                        ));
                    }
                    qmp = Some(qmp_path(v)?);
                }
                "name" => {
                    let mut p = props(o, Some("guest"))?;
                    name = p.take("guest");
                    // Ferrovisor names its threads anyway.
                    p.take_bool("debug-threads")?;
                    p.finish("-name")?;
                }
                "display" | "vnc" if v != "none" => {
                    return Err(QemuError::new(format!(
                        "-{} {v}: Ferrovisor has no display (only none)",
                        o.name
                    )));
                }
                "monitor" if v != "none" => {
                    return Err(QemuError::new(format!(
                        "-monitor {v}: Ferrovisor has no human monitor (use -qmp)"
                    )));
                }
                "global" => globals.push(v.to_string()),
                "pidfile" => pidfile = Some(PathBuf::from(v)),
                // Ferrovisor makes no default devices and reads no
                // configuration files, has no HPET; reset always ends the VM.
                // -display/-vnc/-monitor none: nothing to show or serve.
                "nodefaults" | "no-user-config" | "no-reboot" | "nographic" | "display" | "vnc"
                | "monitor" | "no-hpet" => {}
                _ => {}
            }
        }
        let accel = machine::accelerator(&m.accel, &accels)?;
        let mut pit_discards_lost_ticks = false;
        for g in &globals {
            pit_discards_lost_ticks = machine::global(g)?;
        }
        let mut d = Devices::default();
        let mut virtio_drives = 0;
        // Backends before the devices that name them.
        for o in opts {
            match o.name.as_str() {
                "chardev" => d.chardev(props(o, Some("backend"))?)?,
                "object" => d.object(props(o, Some("qom-type"))?)?,
                "netdev" => d.netdev(props(o, Some("type"))?)?,
                "drive" => d.drive(props(o, None)?, &mut virtio_drives)?,
                _ => {}
            }
        }
        for o in opts {
            match o.name.as_str() {
                "mon" => {
                    let path = d.monitor(props(o, Some("chardev"))?)?;
                    if qmp.is_some() {
                        return Err(QemuError::new(
                            "-mon: a second QMP socket is not supported by Ferrovisor".into(),
                        ));
                    }
                    qmp = Some(PathBuf::from(path));
                }
                "device" => d.device(props(o, Some("driver"))?, m.transport, m.kind)?,
                "serial" => d.serial(o.value.as_deref().unwrap_or(""))?,
                _ => {}
            }
        }
        d.finish()?;
        if paused && qmp.is_none() && gdb.is_none() {
            return Err(QemuError::new(
                "-S: without -qmp or -gdb nothing could start the VM (Ferrovisor has no human \
                 monitor)"
                    .into(),
            ));
        }
        if no_shutdown && qmp.is_none() {
            return Err(QemuError::new(
                "-no-shutdown: without -qmp nothing could end the VM after a power-off".into(),
            ));
        }
        let kernel = kernel.ok_or_else(|| {
            QemuError::new(
                "no -kernel: Ferrovisor boots a kernel directly (it has no firmware to boot a \
                 disk)"
                    .into(),
            )
        })?;
        let mut cmdline = append.unwrap_or_default();
        if is_multiboot(&kernel) {
            // QEMU's Multiboot loader: the kernel's file name, then -append.
            cmdline = if cmdline.is_empty() {
                kernel.clone()
            } else {
                format!("{kernel} {cmdline}")
            };
        }
        let console = console_sink(&d)?;
        let serial = match console {
            Sink::Stdio => None,
            Sink::File(path) => Some(SerialDevice {
                serial_out_path: Some(path),
                rate_limiter: None,
            }),
            Sink::Null => Some(SerialDevice {
                serial_out_path: Some("/dev/null".into()),
                rate_limiter: None,
            }),
        };
        let spec = VmSpec {
            boot_source: Some(BootSource {
                kernel_image_path: kernel,
                initrd_path: initrd,
                boot_args: Some(cmdline),
            }),
            machine_config: MachineConfiguration {
                vcpu_count: cpus,
                mem_size_mib: mem,
                ..Default::default()
            },
            drives: d.drives.clone(),
            network_interfaces: d.nets.clone(),
            vsock: d.vsock.clone(),
            entropy: d.entropy.clone(),
            serial,
            ferrovisor: Extensions {
                transport: m.transport,
                console: if d.virtconsole.is_some() {
                    Console::Virtio
                } else {
                    Console::Serial
                },
                cpu: cpu.filter(|c| c != "max"),
                pc_testdev: d.pc_testdev,
                no_pit: !m.pit,
                pit_discards_lost_ticks,
                drive_images: d.drive_images.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        spec.validate()
            .map_err(|e| QemuError::new(crate::error_line(&e)))?;
        Ok(Config {
            spec,
            accel,
            paused,
            no_shutdown,
            qmp,
            name,
            pidfile,
            gdb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::options::split;
    use super::*;

    #[test]
    fn gdb_options() {
        assert_eq!(
            config(&["-kernel", "/k", "-s"]).unwrap().gdb.as_deref(),
            Some("127.0.0.1:1234")
        );
        let c = config(&["-kernel", "/k", "-gdb", "tcp:0.0.0.0:4321", "-S"]).unwrap();
        assert_eq!(c.gdb.as_deref(), Some("0.0.0.0:4321"));
        assert!(c.paused);
        assert_eq!(
            config(&["-kernel", "/k", "-gdb", "none"]).unwrap().gdb,
            None
        );
        for bad in ["unix:/tmp/g", "tcp::x", "stdio", "tcp:99999"] {
            let e = config(&["-kernel", "/k", "-gdb", bad]).unwrap_err();
            assert!(e.to_string().contains("-gdb"), "{bad}: {e}");
        }
    }

    fn config(args: &[&str]) -> Result<Config, QemuError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Config::from_opts(&split(&args)?)
    }

    #[test]
    fn kvm_unit_tests_command_line() {
        let c = config(&[
            "-nodefaults",
            "--no-reboot",
            "-global",
            "kvm-pit.lost_tick_policy=discard",
            "-device",
            "pc-testdev",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x4",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-machine",
            "accel=tcg",
            "-kernel",
            "/x86/apic.flat",
            "-smp",
            "2",
            "-append",
            "-a -b",
            "-cpu",
            "qemu64,+x2apic",
            "-machine",
            "pit=off",
            "-initrd",
            "/tmp/env",
        ])
        .unwrap();
        assert_eq!(c.accel, Accel::Emu);
        let s = &c.spec;
        assert_eq!(
            (s.machine_config.vcpu_count, s.machine_config.mem_size_mib),
            (2, 128)
        );
        let b = s.boot_source.as_ref().unwrap();
        // Not a readable Multiboot file here: no file name prepended.
        assert_eq!(b.boot_args.as_deref(), Some("-a -b"));
        assert_eq!(b.initrd_path.as_deref(), Some("/tmp/env"));
        assert!(s.ferrovisor.pc_testdev && s.ferrovisor.no_pit);
        assert!(s.ferrovisor.pit_discards_lost_ticks);
        assert_eq!(s.ferrovisor.cpu.as_deref(), Some("qemu64,+x2apic"));
        assert_eq!(s.serial, None);
        // -enable-kvm beside -machine accel=tcg is QEMU's error too.
        let e = config(&["-machine", "accel=tcg", "-enable-kvm", "-kernel", "/k"]).unwrap_err();
        assert!(e.to_string().contains("incompatible"), "{e}");
    }

    #[test]
    fn microvm_documented_line_becomes_the_spec() {
        let c = config(&[
            "-M",
            "microvm",
            "-accel",
            "tcg",
            "-cpu",
            "host",
            "-m",
            "512m",
            "-smp",
            "2",
            "-kernel",
            "/vmlinux",
            "-append",
            "earlyprintk=ttyS0 console=ttyS0 root=/dev/vda",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-serial",
            "stdio",
            "-drive",
            "id=test,file=/test.img,format=raw,if=none",
            "-device",
            "virtio-blk-device,drive=test",
            "-netdev",
            "tap,id=tap0,ifname=fv0,script=no,downscript=no",
            "-device",
            "virtio-net-device,netdev=tap0",
        ])
        .unwrap();
        let s = &c.spec;
        assert_eq!(s.ferrovisor.transport, api::spec::Transport::Mmio);
        assert_eq!(s.drives[0].drive_id, "test");
        assert_eq!(s.network_interfaces[0].host_dev_name, "fv0");
        assert_eq!(s.machine_config.mem_size_mib, 512);
        let mc = vmm::machine_config(s, c.accel).unwrap();
        assert_eq!(mc.cmdline, "earlyprintk=ttyS0 console=ttyS0 root=/dev/vda");
        assert_eq!(mc.transport, vmm::VirtioTransport::Mmio);
        assert_eq!(mc.disks.len(), 1);
        assert_eq!(mc.disks[0].image, Default::default());
    }

    #[test]
    fn drive_formats_and_cache_modes_reach_the_disk() {
        use virtio::blk_image::{CacheMode, ImageFormat};
        let c = config(&[
            "-kernel",
            "/k",
            "-drive",
            "file=/a.qcow2,if=virtio,format=qcow2,cache=none",
            "-drive",
            "id=b,file=/b.img,format=raw,if=none,cache=directsync",
            "-device",
            "virtio-blk-pci,drive=b,serial=bee",
            "-drive",
            "file=/c.img,if=virtio,format=raw",
        ])
        .unwrap();
        let mc = vmm::machine_config(&c.spec, c.accel).unwrap();
        let images: Vec<_> = mc
            .disks
            .iter()
            .map(|d| (d.id.as_deref(), d.image.format, d.image.cache))
            .collect();
        assert_eq!(
            images,
            [
                (Some("virtio0"), ImageFormat::Qcow2, CacheMode::None),
                (Some("virtio1"), ImageFormat::Raw, CacheMode::Writeback),
                (Some("bee"), ImageFormat::Raw, CacheMode::Directsync),
            ]
        );
        for bad in ["format=vmdk", "cache=fast"] {
            let Err(e) = config(&[
                "-kernel",
                "/k",
                "-drive",
                &format!("file=/a,if=virtio,{bad}"),
            ]) else {
                panic!("{bad} accepted");
            };
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn virtconsole_and_files() {
        let c = config(&[
            "-M",
            "q35",
            "-kernel",
            "/k",
            "-chardev",
            "stdio,id=con",
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtconsole,chardev=con",
            "-device",
            "virtio-rng-pci",
            "-drive",
            "file=/d.img,if=virtio,format=raw",
        ])
        .unwrap();
        assert_eq!(c.spec.ferrovisor.console, Console::Virtio);
        assert_eq!(c.spec.ferrovisor.transport, api::spec::Transport::Pci);
        assert!(c.spec.entropy.is_some());
        let c = config(&["-kernel", "/k", "-serial", "file:/tmp/out"]).unwrap();
        assert_eq!(
            c.spec.serial.unwrap().serial_out_path.as_deref(),
            Some("/tmp/out")
        );
        assert!(config(&["-kernel", "/k", "-S"]).is_err());
        assert!(config(&["-kernel", "/k", "-display", "gtk"]).is_err());
        assert!(config(&["-m", "64"]).is_err());
        assert!(config(&["-kernel", "/k", "-qmp", "tcp:1234"]).is_err());
        let c = config(&["-kernel", "/k", "-qmp", "unix:/tmp/q,server,nowait", "-S"]).unwrap();
        assert!(c.paused);
        assert_eq!(c.qmp, Some(PathBuf::from("/tmp/q")));
        let c = config(&[
            "-kernel",
            "/k",
            "-chardev",
            "socket,id=mon,path=/tmp/m.sock,server=on,wait=off",
            "-mon",
            "chardev=mon,mode=control",
            "-S",
            "-no-hpet",
            "-pidfile",
            "/tmp/p",
        ])
        .unwrap();
        assert_eq!(c.qmp, Some(PathBuf::from("/tmp/m.sock")));
        assert_eq!(c.pidfile, Some(PathBuf::from("/tmp/p")));
        assert!(config(&[
            "-kernel",
            "/k",
            "-qmp",
            "unix:/tmp/q,server,nowait",
            "-chardev",
            "socket,id=mon,path=/tmp/m.sock,server=on,wait=off",
            "-mon",
            "chardev=mon,mode=control",
        ])
        .is_err());
    }
}
