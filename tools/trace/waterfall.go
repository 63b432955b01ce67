package trace

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultAttrs are the span attributes the waterfall shows after the bar:
// the authorization decision pkg/authz records on the span that made it.
var DefaultAttrs = []string{"authz.decision", "authz.error_code", "authz.policy"}

// Options shape Render's output; the zero value is the default.
type Options struct {
	Width   int      // columns of the duration bar; default 40
	NameMax int      // widest span column (tree and name); default 60
	Attrs   []string // attributes shown after the bar; default DefaultAttrs
	// Linked names spans of other traces this one links to, by span id
	// (Client.LinkedSpans); without a name a link shows its ids.
	Linked map[string]string
}

func (o *Options) defaults() {
	if o.Width <= 0 {
		o.Width = 40
	}
	if o.NameMax <= 0 {
		o.NameMax = 60
	}
	if o.Attrs == nil {
		o.Attrs = DefaultAttrs
	}
}

// node is a span placed in the tree: its parent, or for a consumer span
// with no parent in the trace, the span it links to (FOLLOWS_FROM).
type node struct {
	span     Span
	children []*node
	prefix   string // the tree's drawing in front of the name
}

// Render writes t as an indented waterfall: one line per span with its
// service, its name under its parent, its start as an offset from the
// trace's first span, its duration with a bar on the trace's time line, and
// the attributes of o.Attrs; links follow their span on lines of their own.
// Malformed traces (missing parents, cycles, duplicate ids) still render:
// every span appears once.
func Render(w io.Writer, t Trace, o Options) error {
	o.defaults()
	if len(t.Spans) == 0 {
		return fmt.Errorf("%w: trace %s has no spans", ErrNoTrace, t.TraceID)
	}
	roots, byID := tree(t)
	t0, t1 := bounds(t.Spans)
	total := max(t1-t0, 1)

	var lines []*node
	var walk func(n *node, indent string, last, top bool)
	walk = func(n *node, indent string, last, top bool) {
		childIndent := indent
		switch {
		case top:
		case last:
			n.prefix, childIndent = indent+"└─ ", indent+"   "
		default:
			n.prefix, childIndent = indent+"├─ ", indent+"│  "
		}
		lines = append(lines, n)
		for i, c := range n.children {
			walk(c, childIndent, i == len(n.children)-1, false)
		}
	}
	for _, r := range roots {
		walk(r, "", true, true)
	}

	svcW, nameW := len("SERVICE"), len("SPAN")
	for _, n := range lines {
		svcW = max(svcW, utf8.RuneCountInString(t.Service(n.span)))
		nameW = max(nameW, utf8.RuneCountInString(n.prefix+n.span.OperationName))
	}
	nameW = min(nameW, o.NameMax)

	var b strings.Builder
	fmt.Fprintf(&b, "trace %s  %s  %d spans  %s  %s\n", t.TraceID,
		time.UnixMicro(t0).UTC().Format("2006-01-02 15:04:05.000 UTC"), len(t.Spans), fmtDur(t1-t0), strings.Join(t.Services(), ", "))
	fmt.Fprintf(&b, "%s  %s  %9s  %9s  %s\n", pad("SERVICE", svcW), pad("SPAN", nameW), "START", "DURATION", "TIMELINE")
	for _, n := range lines {
		s := n.span
		fmt.Fprintf(&b, "%s  %s  %9s  %9s  %s", pad(t.Service(s), svcW), pad(clip(n.prefix+s.OperationName, nameW), nameW),
			"+"+fmtDur(s.StartTime-t0), fmtDur(s.Duration), bar(s.StartTime-t0, s.Duration, total, o.Width))
		if a := attrs(s, o.Attrs); a != "" {
			b.WriteString("  " + a)
		}
		b.WriteString("\n")
		for _, l := range links(t, s, byID, t0, o.Linked) {
			fmt.Fprintf(&b, "%s  %s%s\n", pad("", svcW), strings.Map(keepTree, n.prefix)+"   ", l)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// tree places every span once: under its CHILD_OF parent, else under the
// span it FOLLOWS_FROM in this trace, else as a root. A reference that would
// close a cycle is ignored.
func tree(t Trace) (roots []*node, byID map[string]*node) {
	byID = map[string]*node{}
	var order []*node
	for _, s := range sortedByStart(t.Spans) {
		if _, dup := byID[s.SpanID]; dup {
			s.SpanID += "#dup" + fmt.Sprint(len(order))
		}
		n := &node{span: s}
		byID[s.SpanID] = n
		order = append(order, n)
	}
	parent := map[*node]*node{}
	for _, n := range order {
		for _, kind := range []string{ChildOf, FollowsFrom} {
			if parent[n] != nil {
				break
			}
			for _, r := range n.span.References {
				p := byID[r.SpanID]
				if r.RefType != kind || p == nil || p == n || (r.TraceID != "" && r.TraceID != t.TraceID) || ancestor(parent, p, n) {
					continue
				}
				parent[n] = p
				break
			}
		}
	}
	for _, n := range order { // in start order, so every child list is sorted
		if p := parent[n]; p != nil {
			p.children = append(p.children, n)
		} else {
			roots = append(roots, n)
		}
	}
	return roots, byID
}

// ancestor reports whether a is n or above n in the tree built so far.
func ancestor(parent map[*node]*node, n, a *node) bool {
	for seen := 0; n != nil && seen <= len(parent); seen++ {
		if n == a {
			return true
		}
		n = parent[n]
	}
	return false
}

func sortedByStart(spans []Span) []Span {
	s := slices.Clone(spans)
	slices.SortStableFunc(s, func(a, b Span) int {
		return cmp.Or(cmp.Compare(a.StartTime, b.StartTime), cmp.Compare(a.OperationName, b.OperationName))
	})
	return s
}

func bounds(spans []Span) (t0, t1 int64) {
	t0, t1 = spans[0].StartTime, spans[0].StartTime+max(spans[0].Duration, 0)
	for _, s := range spans[1:] {
		t0 = min(t0, s.StartTime)
		t1 = max(t1, s.StartTime+max(s.Duration, 0))
	}
	return t0, t1
}

// bar draws [off, off+dur) of a time line total long in width columns; a
// span too short to fill a column still gets one.
func bar(off, dur, total int64, width int) string {
	from := int(min(max(off, 0)*int64(width)/total, int64(width-1)))
	to := int(min((max(off, 0)+max(dur, 0))*int64(width)/total, int64(width)))
	to = max(to, from+1)
	return "|" + strings.Repeat(" ", from) + strings.Repeat("█", to-from) + strings.Repeat(" ", width-to) + "|"
}

// attrs renders the wanted attributes the span has, an error status, and
// its authz events.
func attrs(s Span, keys []string) string {
	var out []string
	for _, k := range keys {
		if v, ok := s.Tag(k); ok {
			out = append(out, k+"="+v)
		}
	}
	if v, _ := s.Tag("otel.status_code"); v == "ERROR" {
		msg, _ := s.Tag("otel.status_description")
		out = append(out, "ERROR "+msg)
	}
	for _, l := range s.Logs {
		for _, f := range l.Fields {
			if f.Key == "event" && strings.HasPrefix(f.String(), "authz.") {
				out = append(out, "event="+f.String())
			}
		}
	}
	return strings.TrimSpace(strings.Join(out, " "))
}

// links describes the span's FOLLOWS_FROM references (its OpenTelemetry links).
func links(t Trace, s Span, byID map[string]*node, t0 int64, linked map[string]string) []string {
	var out []string
	for _, r := range s.References {
		if r.RefType != FollowsFrom {
			continue
		}
		if p, ok := byID[r.SpanID]; ok && (r.TraceID == "" || r.TraceID == t.TraceID) {
			out = append(out, fmt.Sprintf("↳ link: %s %q at +%s", t.Service(p.span), p.span.OperationName, fmtDur(p.span.StartTime-t0)))
		} else if name, ok := linked[r.SpanID]; ok {
			out = append(out, fmt.Sprintf("↳ link: %s in trace %s", name, r.TraceID))
		} else {
			out = append(out, fmt.Sprintf("↳ link: trace %s span %s (not in this trace)", r.TraceID, r.SpanID))
		}
	}
	return out
}

// keepTree keeps the vertical lines of a tree prefix, so a link line
// continues its branch.
func keepTree(r rune) rune {
	if r == '│' || r == '├' {
		return '│'
	}
	return ' '
}

// fmtDur renders microseconds as µs, ms or s with three significant digits.
func fmtDur(us int64) string {
	switch d := float64(us); {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%.2fms", d/1e3)
	default:
		return fmt.Sprintf("%.2fs", d/1e6)
	}
}

func pad(s string, w int) string {
	return s + strings.Repeat(" ", max(w-utf8.RuneCountInString(s), 0))
}

func clip(s string, w int) string {
	if utf8.RuneCountInString(s) <= w {
		return s
	}
	r := []rune(s)
	return string(r[:w-1]) + "…"
}
