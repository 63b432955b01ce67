package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/authmesh/authmesh/tools/devstack"
)

// coldStartWatcher records, per service, the time from its process start
// (from /proc/<pid>/stat, in clock ticks since boot) to its first 200 from
// /readyz, both on the /proc/uptime clock.
type coldStartWatcher struct {
	bin string
	mu  sync.Mutex
	got map[string]time.Duration
}

func newColdStartWatcher(bin string) *coldStartWatcher {
	return &coldStartWatcher{bin: bin, got: map[string]time.Duration{}}
}

func (w *coldStartWatcher) watch(ctx context.Context) {
	c := &http.Client{Timeout: time.Second}
	for ctx.Err() == nil {
		pids := findPIDs(w.bin)
		w.mu.Lock()
		n := len(w.got)
		w.mu.Unlock()
		if n == len(devstack.Services) {
			return
		}
		for _, s := range devstack.Services {
			pid, ok := pids[s.Name]
			w.mu.Lock()
			_, done := w.got[s.Name]
			w.mu.Unlock()
			if !ok || done {
				continue
			}
			resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.Port))
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				continue
			}
			up, err1 := uptime()
			st, err2 := procStart(pid)
			if err1 == nil && err2 == nil {
				w.mu.Lock()
				w.got[s.Name] = up - st
				w.mu.Unlock()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *coldStartWatcher) result() map[string]time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]time.Duration{}
	for k, v := range w.got {
		out[k] = v
	}
	return out
}

// findPIDs maps service name → pid for processes whose executable is
// bin/<name> (the binaries devstack built into our data directory), so no
// other process on the machine is ever confused with ours.
func findPIDs(bin string) map[string]int {
	want := map[string]string{}
	for _, s := range devstack.Services {
		want[filepath.Join(bin, s.Name)] = s.Name
	}
	out := map[string]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		if name, ok := want[exe]; ok {
			out[name] = pid
		}
	}
	return out
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

const clockTicks = 100 // USER_HZ on Linux

// procStat returns the fields of /proc/<pid>/stat after the command name,
// which is in parentheses and may hold spaces: field 3 overall is f[0].
// It fails unless there are at least n.
func procStat(pid, n int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, errors.New("unparsable /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < n {
		return nil, errors.New("short /proc stat")
	}
	return f, nil
}

// procStart is when the process started, on the /proc/uptime clock.
func procStart(pid int) (time.Duration, error) {
	f, err := procStat(pid, 20)
	if err != nil {
		return 0, err
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64) // field 22 overall: starttime
	if err != nil {
		return 0, err
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// procCPU is the user+system CPU time a process has used (10 ms ticks).
func procCPU(pid int) (time.Duration, error) {
	f, err := procStat(pid, 13)
	if err != nil {
		return 0, err
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14 overall: utime
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15: stime
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

func uptime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("empty /proc/uptime")
	}
	s, err := strconv.ParseFloat(f[0], 64)
	return time.Duration(s * float64(time.Second)), err
}

type rssSampler struct {
	stopc chan struct{}
	done  chan map[string]int64
}

// startRSSSampler records each process's peak VmRSS every 100 ms.
func startRSSSampler(ctx context.Context, pids map[string]int) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan map[string]int64, 1)}
	go func() {
		peak := map[string]int64{}
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for name, pid := range pids {
				peak[name] = max(peak[name], rssKiB(pid))
			}
			select {
			case <-s.stopc:
				s.done <- peak
				return
			case <-ctx.Done():
				s.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() map[string]int64 {
	close(s.stopc)
	return <-s.done
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
