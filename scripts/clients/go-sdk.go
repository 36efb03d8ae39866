// A Firecracker Go SDK user's program, run against ferrovisor by
// scripts/try-go-sdk: it drives the Linux test guest through the SDK's
// Machine as a Firecracker user would (start, version, instance info,
// MMDS, pause/resume, drive swap, a refused snapshot, wait) and exits 1 on
// the first thing that does not behave as it does on Firecracker.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	firecracker "github.com/firecracker-microvm/firecracker-go-sdk"
	models "github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	log "github.com/sirupsen/logrus"
)

func must(what string, err error) {
	if err != nil {
		fmt.Printf("FAIL %s: %v\n", what, err)
		os.Exit(1)
	}
	fmt.Printf("ok   %s\n", what)
}

func main() {
	bin, kernel, initrd, args, dir := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	disk := filepath.Join(dir, "data.img")
	disk2 := filepath.Join(dir, "data2.img")
	must("write "+disk, os.WriteFile(disk, make([]byte, 1<<20), 0o644))
	must("write "+disk2, os.WriteFile(disk2, make([]byte, 2<<20), 0o644))
	sock := filepath.Join(dir, "fc.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cfg := firecracker.Config{
		SocketPath:      sock,
		KernelImagePath: kernel,
		InitrdPath:      initrd,
		KernelArgs:      args,
		Drives:          []models.Drive{{DriveID: firecracker.String("data"), PathOnHost: firecracker.String(disk), IsRootDevice: firecracker.Bool(false), IsReadOnly: firecracker.Bool(false)}},
		MachineCfg:      models.MachineConfiguration{VcpuCount: firecracker.Int64(1), MemSizeMib: firecracker.Int64(256), Smt: firecracker.Bool(false)},
		LogPath:         filepath.Join(dir, "fc.log"),
		LogLevel:        "Info",
		MetricsPath:     filepath.Join(dir, "fc.metrics"),
	}
	for _, p := range []string{cfg.LogPath, cfg.MetricsPath} {
		f, err := os.Create(p)
		must("create "+p, err)
		f.Close()
	}
	serial, err := os.Create(filepath.Join(dir, "serial.out"))
	must("create serial.out", err)
	cmd := firecracker.VMCommandBuilder{}.WithBin(bin).WithSocketPath(sock).
		WithArgs([]string{"--accel", "emu"}).WithStdout(serial).WithStderr(os.Stderr).Build(ctx)
	logger := log.New()
	logger.SetLevel(log.WarnLevel)
	m, err := firecracker.NewMachine(ctx, cfg, firecracker.WithProcessRunner(cmd), firecracker.WithLogger(log.NewEntry(logger)))
	must("NewMachine", err)
	must("Start", m.Start(ctx))
	v, err := m.GetFirecrackerVersion(ctx)
	must("GetFirecrackerVersion "+v, err)
	info, err := m.DescribeInstanceInfo(ctx)
	must(fmt.Sprintf("DescribeInstanceInfo state=%s", *info.State), err)
	must("SetMetadata", m.SetMetadata(ctx, map[string]interface{}{"latest": map[string]string{"id": "go-sdk"}}))
	must("UpdateMetadata", m.UpdateMetadata(ctx, map[string]interface{}{"extra": "1"}))
	var md map[string]interface{}
	must("GetMetadata", m.GetMetadata(ctx, &md))
	fmt.Printf("     metadata: %v\n", md)
	serialOut := filepath.Join(dir, "serial.out")
	waitFor(serialOut, "tick=2 size=2048")
	must("PauseVM", m.PauseVM(ctx))
	info, err = m.DescribeInstanceInfo(ctx)
	must(fmt.Sprintf("DescribeInstanceInfo state=%s", *info.State), err)
	must("ResumeVM", m.ResumeVM(ctx))
	must("UpdateGuestDrive", m.UpdateGuestDrive(ctx, "data", disk2))
	waitFor(serialOut, "size=4096")
	fmt.Println("ok   the guest sees the new drive's size")
	err = m.CreateSnapshot(ctx, filepath.Join(dir, "mem"), filepath.Join(dir, "snap"))
	if err == nil || !strings.Contains(err.Error(), "not supported") {
		fmt.Printf("FAIL CreateSnapshot should be refused until snapshots exist: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("ok   CreateSnapshot refused with a fault message")
	must("Wait", m.Wait(ctx))
	waitFor(serialOut, "FERROVISOR-CMD-EXIT=0")
	fmt.Println("ok   the guest's command ended with status 0")
}

// waitFor waits up to two minutes for `text` in the file at `path`.
func waitFor(path, text string) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _ := os.ReadFile(path)
		if strings.Contains(string(out), text) {
			return
		}
		if time.Now().After(deadline) {
			fmt.Printf("FAIL no %q in the serial output:\n%s\n", text, tail(string(out), 2000))
			os.Exit(1)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
