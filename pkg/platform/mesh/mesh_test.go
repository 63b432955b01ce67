package mesh

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedFilesAreCurrent fails when the committed NATS configuration
// or docs/conventions.md's table differs from what the table generates: run
// `make nats-config`.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..", "..")
	for file, write := range map[string]func(io.Writer) error{
		"deploy/nats/accounts.conf": WriteNATSConfig,
		"deploy/nats/keys.conf":     WriteDevKeys,
	} {
		var want bytes.Buffer
		if err := write(&want); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s differs from what pkg/platform/mesh generates: run make nats-config", file)
		}
	}
	var table bytes.Buffer
	if err := WriteConventionsTable(&table); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "conventions.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), TableBegin+"\n"+table.String()+TableEnd) {
		t.Error("docs/conventions.md's mesh table differs from what pkg/platform/mesh generates: run make nats-config")
	}
}

// TestTableIsConsistent: every name the table refers to exists once.
func TestTableIsConsistent(t *testing.T) {
	t.Parallel()
	accounts, streams := map[string]bool{SystemAccount: true}, map[string]bool{}
	for _, w := range Workloads {
		if accounts[w.Account] {
			t.Errorf("account %s twice", w.Account)
		}
		accounts[w.Account] = true
		for _, s := range w.Streams {
			if streams[s.Name] {
				t.Errorf("stream %s twice", s.Name)
			}
			streams[s.Name] = true
		}
		if w.JetStream != (len(w.Streams)+len(w.Buckets) > 0) {
			t.Errorf("%s: JetStream %v but owns %d streams and %d buckets", w.Name, w.JetStream, len(w.Streams), len(w.Buckets))
		}
		for _, c := range w.Calls {
			if server(c).Name == "" {
				t.Errorf("%s calls %s, which nobody serves", w.Name, c)
			}
		}
	}
	for _, d := range Durables {
		o, ok := StreamOwner(d.Stream)
		if !ok {
			t.Errorf("durable %s: no owner of %s", d.Name, d.Stream)
		}
		s, _ := o.Stream(d.Stream)
		if !s.Events {
			t.Errorf("durable %s on %s, which is not an event stream", d.Name, d.Stream)
		}
		if _, ok := Lookup(d.Reader); !ok || d.Reader == o.Name {
			t.Errorf("durable %s: reader %q is not another workload", d.Name, d.Reader)
		}
	}
	for _, w := range Workloads {
		for _, p := range append(w.Permissions().Publish, w.Permissions().Subscribe...) {
			if p == ">" || strings.HasPrefix(p, "$JS.API.>") || p == "$JS.>" || strings.Contains(p, "DELETE.") && !strings.Contains(p, "CONSUMER.DELETE.KV_") {
				t.Errorf("%s may use %s", w.Name, p)
			}
		}
	}
}
