// Command natsconf writes what is derived from pkg/platform/mesh:
// accounts.conf and keys.conf in -dir, and the mesh table between its
// markers in -doc (make nats-config; a test in mesh fails when the committed
// files differ).
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

func main() {
	dir := flag.String("dir", "deploy/nats", "directory to write accounts.conf and keys.conf into")
	doc := flag.String("doc", "docs/conventions.md", "Markdown file whose mesh table to replace")
	flag.Parse()
	if err := run(*dir, *doc); err != nil {
		fmt.Fprintln(os.Stderr, "natsconf:", err)
		os.Exit(1)
	}
}

func run(dir, doc string) error {
	for name, write := range map[string]func(io.Writer) error{
		"accounts.conf": mesh.WriteNATSConfig,
		"keys.conf":     mesh.WriteDevKeys,
	} {
		var b bytes.Buffer
		if err := write(&b); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	raw, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	before, rest, ok := strings.Cut(string(raw), mesh.TableBegin)
	_, after, ok2 := strings.Cut(rest, mesh.TableEnd)
	if !ok || !ok2 {
		return errors.New(doc + " has no mesh table markers")
	}
	var table bytes.Buffer
	if err := mesh.WriteConventionsTable(&table); err != nil {
		return err
	}
	return os.WriteFile(doc, []byte(before+mesh.TableBegin+"\n"+table.String()+mesh.TableEnd+after), 0o644)
}
