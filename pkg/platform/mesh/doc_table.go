package mesh

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// Conventions table markers: docs/conventions.md holds WriteConventionsTable's
// output between them, and a test keeps it current.
const (
	TableBegin = "<!-- mesh table: generated from pkg/platform/mesh by `make nats-config` -->"
	TableEnd   = "<!-- end of mesh table -->"
)

// WriteConventionsTable writes the NATS wiring as the Markdown table of
// docs/conventions.md.
func WriteConventionsTable(out io.Writer) error {
	var b bytes.Buffer
	b.WriteString("| workload | account, user | owns | serves | calls | reads |\n|---|---|---|---|---|---|\n")
	code := func(ss []string) string {
		if len(ss) == 0 {
			return "—"
		}
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = "`" + s + "`"
		}
		return strings.Join(q, ", ")
	}
	for _, w := range Workloads {
		var owns []string
		for _, s := range w.Streams {
			owns = append(owns, fmt.Sprintf("stream `%s` (`%s`)", s.Name, strings.Join(s.Subjects, "`, `")))
		}
		for _, bk := range w.Buckets {
			owns = append(owns, fmt.Sprintf("KV `%s`", bk.Name))
		}
		for _, d := range w.Provisions() {
			owns = append(owns, fmt.Sprintf("durable `%s` on `%s` for %s", d.Name, d.Stream, d.Reader))
		}
		var reads []string
		for _, d := range w.Reads() {
			reads = append(reads, fmt.Sprintf("durable `%s` on `%s` (bind only)", d.Name, d.Stream))
		}
		for _, rb := range w.readBuckets() {
			reads = append(reads, fmt.Sprintf("KV `%s` (feed, info, direct get)", rb.bucket))
		}
		ownsCol, readsCol := strings.Join(owns, "; "), strings.Join(reads, "; ")
		if ownsCol == "" {
			ownsCol = "—"
		}
		if readsCol == "" {
			readsCol = "—"
		}
		fmt.Fprintf(&b, "| %s | `%s`, `%s` | %s | %s | %s | %s |\n", w.Name, w.Account, w.Name, ownsCol, code(w.Serves), code(w.Calls), readsCol)
	}
	_, err := out.Write(b.Bytes())
	return err
}
