package mesh

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Permissions are one workload's allow lists inside its own account.
type Permissions struct {
	Publish   []string
	Subscribe []string
	// Responses allows replies to requests it received (micro endpoints).
	Responses bool
}

// Export is one subject an account exports to named accounts.
type Export struct {
	Stream       bool   // a stream export (messages flow out); else a service
	Subject      string // in the exporting account
	ResponseType string // "" (singleton) or "stream"
	Accounts     []string
}

// Import is one subject an account imports from another.
type Import struct {
	Stream  bool
	Account string // the exporter
	Subject string // as exported
	To      string // local subject, when it differs
}

// Permissions returns w's allow lists: its own subjects and the exact
// JetStream API subjects of its own streams, buckets and provisioned
// durables, plus the imported subjects it uses. Nothing else, in particular
// no $JS.API.> and no STREAM/CONSUMER DELETE, PURGE or MSG.DELETE.
func (w Workload) Permissions() Permissions {
	var p Permissions
	api := func(f string, a ...any) { p.Publish = append(p.Publish, "$JS.API."+fmt.Sprintf(f, a...)) }
	if w.JetStream {
		// Account info (limits and usage of its own account): nats.go asks
		// before creating a bucket.
		api("INFO")
	}
	for _, s := range w.Streams {
		p.Publish = append(p.Publish, s.Subjects...)
		for _, op := range []string{"CREATE", "UPDATE", "INFO", "MSG.GET"} {
			api("STREAM.%s.%s", op, s.Name)
		}
	}
	for _, d := range w.Provisions() {
		// CREATE and update share the subject; the name is in the subject,
		// with the filter appended when there is exactly one.
		api("CONSUMER.CREATE.%s.%s", d.Stream, d.Name)
		api("CONSUMER.CREATE.%s.%s.>", d.Stream, d.Name)
		api("CONSUMER.INFO.%s.%s", d.Stream, d.Name)
	}
	for _, b := range w.Buckets {
		s := "KV_" + b.Name
		p.Publish = append(p.Publish, "$KV."+b.Name+".>")
		for _, op := range []string{"CREATE", "UPDATE", "INFO", "MSG.GET"} {
			api("STREAM.%s.%s", op, s)
		}
		api("DIRECT.GET.%s", s)
		api("DIRECT.GET.%s.>", s)
		// Watches and key listings are ordered push consumers on the
		// bucket, deleted when they stop; flow control replies go to $JS.FC.
		api("CONSUMER.CREATE.%s", s)
		api("CONSUMER.CREATE.%s.>", s)
		api("CONSUMER.DELETE.%s.*", s)
		p.Publish = append(p.Publish, "$JS.FC."+s+".>", "$JS.FC.*.*."+s+".>")
		if len(b.Readers) > 0 {
			p.Subscribe = append(p.Subscribe, "$KV."+b.Name+".>") // its own validators' live feed
		}
	}
	for _, d := range w.Reads() {
		owner, _ := StreamOwner(d.Stream)
		pre := APIPrefix(owner.Account)
		p.Publish = append(p.Publish,
			pre+".CONSUMER.INFO."+d.Stream+"."+d.Name,
			pre+".CONSUMER.MSG.NEXT."+d.Stream+"."+d.Name,
			"$JS.ACK."+d.Stream+"."+d.Name+".>")
	}
	for _, rb := range w.readBuckets() {
		pre := APIPrefix(rb.owner.Account)
		p.Publish = append(p.Publish,
			pre+".STREAM.INFO.KV_"+rb.bucket,
			pre+".DIRECT.GET.KV_"+rb.bucket+".>")
		p.Subscribe = append(p.Subscribe, "$KV."+rb.bucket+".>")
	}
	p.Publish = append(p.Publish, w.Calls...)
	p.Subscribe = append(p.Subscribe, w.InboxPrefix()+".>")
	if len(w.Serves) > 0 {
		p.Subscribe = append(p.Subscribe, w.Serves...)
		p.Subscribe = append(p.Subscribe, "$SRV.>") // micro discovery, inside the account
		p.Responses = true
	}
	return p
}

type readBucket struct {
	owner  Workload
	bucket string
}

// readBuckets are the buckets of other workloads w reads.
func (w Workload) readBuckets() []readBucket {
	var rbs []readBucket
	for _, o := range Workloads {
		for _, b := range o.Buckets {
			if o.Name != w.Name && slices.Contains(b.Readers, w.Name) {
				rbs = append(rbs, readBucket{owner: o, bucket: b.Name})
			}
		}
	}
	return rbs
}

// server answers subject; the zero Workload if nobody does.
func server(subject string) Workload {
	for _, w := range Workloads {
		if slices.Contains(w.Serves, subject) {
			return w
		}
	}
	return Workload{}
}

// Exports returns what w's account exports, each to the accounts that need it.
func (w Workload) Exports() []Export {
	var es []Export
	for _, s := range w.Serves {
		var accs []string
		for _, c := range Workloads {
			if c.Name != w.Name && slices.Contains(c.Calls, s) {
				accs = append(accs, c.Account)
			}
		}
		if len(accs) > 0 {
			es = append(es, Export{Subject: s, Accounts: accs})
		}
	}
	for _, d := range w.Provisions() {
		r, _ := Lookup(d.Reader)
		acc := []string{r.Account}
		es = append(es,
			Export{Subject: "$JS.API.CONSUMER.INFO." + d.Stream + "." + d.Name, Accounts: acc},
			// Pull batches answer one request with many messages.
			Export{Subject: "$JS.API.CONSUMER.MSG.NEXT." + d.Stream + "." + d.Name, ResponseType: "stream", Accounts: acc},
			Export{Subject: "$JS.ACK." + d.Stream + "." + d.Name + ".>", Accounts: acc})
	}
	for _, b := range w.Buckets {
		if len(b.Readers) == 0 {
			continue
		}
		var accs []string
		for _, r := range b.Readers {
			rw, _ := Lookup(r)
			accs = append(accs, rw.Account)
		}
		es = append(es,
			Export{Stream: true, Subject: "$KV." + b.Name + ".>", Accounts: accs},
			Export{Subject: "$JS.API.STREAM.INFO.KV_" + b.Name, Accounts: accs},
			Export{Subject: "$JS.API.DIRECT.GET.KV_" + b.Name + ".>", Accounts: accs})
	}
	return es
}

// Imports returns what w's account imports.
func (w Workload) Imports() []Import {
	var is []Import
	for _, c := range w.Calls {
		if o := server(c); o.Name != "" && o.Name != w.Name {
			is = append(is, Import{Account: o.Account, Subject: c})
		}
	}
	for _, d := range w.Reads() {
		o, _ := StreamOwner(d.Stream)
		pre := APIPrefix(o.Account)
		is = append(is,
			Import{Account: o.Account, Subject: "$JS.API.CONSUMER.INFO." + d.Stream + "." + d.Name, To: pre + ".CONSUMER.INFO." + d.Stream + "." + d.Name},
			Import{Account: o.Account, Subject: "$JS.API.CONSUMER.MSG.NEXT." + d.Stream + "." + d.Name, To: pre + ".CONSUMER.MSG.NEXT." + d.Stream + "." + d.Name},
			// Acks in the v1 form, the only one nats-server 2.15 sends
			// (feature flag js_ack_fc_v2 off). The v2 form
			// $JS.ACK.*.*.<stream>.<durable>.> cannot be imported both ways:
			// orders and billing acking each other's streams would be a
			// cycle to the server (the wildcards collide).
			Import{Account: o.Account, Subject: "$JS.ACK." + d.Stream + "." + d.Name + ".>"})
	}
	for _, rb := range w.readBuckets() {
		pre := APIPrefix(rb.owner.Account)
		s := "KV_" + rb.bucket
		is = append(is,
			Import{Stream: true, Account: rb.owner.Account, Subject: "$KV." + rb.bucket + ".>"},
			Import{Account: rb.owner.Account, Subject: "$JS.API.STREAM.INFO." + s, To: pre + ".STREAM.INFO." + s},
			Import{Account: rb.owner.Account, Subject: "$JS.API.DIRECT.GET." + s + ".>", To: pre + ".DIRECT.GET." + s + ".>"})
	}
	return is
}

// WriteNATSConfig writes the accounts section of the server configuration
// (deploy/nats/accounts.conf). Passwords are variables, e.g.
// $USERS_NATS_PASSWORD: defined by an included file in development, taken
// from the environment otherwise.
func WriteNATSConfig(out io.Writer) error {
	var b bytes.Buffer
	p := func(indent int, f string, a ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(&b, f, a...)
		b.WriteByte('\n')
	}
	p(0, "# Generated from pkg/platform/mesh by `make nats-config`; do not edit.")
	p(0, "#")
	p(0, "# One account per workload. Inside its account each workload's user has an exact allow list;")
	p(0, "# across accounts only what an owner exports to a named reader crosses: micro services to their")
	p(0, "# callers, one durable consumer's INFO, MSG.NEXT and acks to its reader, and the revocation")
	p(0, "# bucket's live feed, stream info and direct gets to the validators.")
	p(0, "#")
	p(0, "# Passwords are variables: passwords.conf defines the development ones; in Kubernetes it is")
	p(0, "# empty and they resolve to the environment, filled from each workload's Secret.")
	p(0, "include passwords.conf")
	p(0, "")
	p(0, "system_account: %s", SystemAccount)
	p(0, "")
	p(0, "accounts {")
	p(1, "%s: {}", SystemAccount)
	for _, w := range Workloads {
		p(0, "")
		p(1, "%s: {", w.Account)
		if w.JetStream {
			p(2, "jetstream: enabled")
		}
		perm := w.Permissions()
		p(2, "users: [")
		p(3, "{")
		p(4, "user: %s", w.Name)
		p(4, "password: $%s", w.PasswordVar())
		p(4, "permissions: {")
		p(5, "publish: { allow: [")
		for _, s := range perm.Publish {
			p(6, "%q", s)
		}
		p(5, "] }")
		p(5, "subscribe: { allow: [")
		for _, s := range perm.Subscribe {
			p(6, "%q", s)
		}
		p(5, "] }")
		if perm.Responses {
			p(5, "allow_responses: true")
		}
		p(4, "}")
		p(3, "}")
		p(2, "]")
		writeEntries(p, 2, "exports", w.Exports())
		writeEntries(p, 2, "imports", w.Imports())
		p(1, "}")
	}
	p(0, "}")
	_, err := out.Write(b.Bytes())
	return err
}

// WriteDevPasswords writes deploy/nats/passwords.conf: the development
// passwords as the variables accounts.conf uses. accounts.conf includes it (a
// variable is visible only in the file defining it and the files including
// it); Kubernetes mounts an empty passwords.conf instead, so the variables
// resolve to the environment.
func WriteDevPasswords(out io.Writer) error {
	var b bytes.Buffer
	b.WriteString("# Generated from pkg/platform/mesh by `make nats-config`; do not edit.\n")
	b.WriteString("# The development NATS passwords (docs/conventions.md), as the variables accounts.conf uses.\n")
	b.WriteString("# Kubernetes mounts passwords-env.conf under this name instead (deploy/nats/kustomization.yaml).\n")
	for _, w := range Workloads {
		fmt.Fprintf(&b, "%s: %q\n", w.PasswordVar(), w.DevPassword())
	}
	_, err := out.Write(b.Bytes())
	return err
}

// exportKind is how accounts.conf names an export or import: a stream or a
// service.
// writeEntries writes the list name of xs' configuration entries, one a line
// at indent+1, through p; an empty list is left out.
func writeEntries[T interface{ confEntry() string }](p func(indent int, f string, a ...any), indent int, name string, xs []T) {
	if len(xs) == 0 {
		return
	}
	p(indent, "%s: [", name)
	for _, x := range xs {
		p(indent+1, "%s", x.confEntry())
	}
	p(indent, "]")
}

func (e Export) confEntry() string {
	rt := ""
	if e.ResponseType != "" {
		rt = ", response_type: " + e.ResponseType
	}
	return fmt.Sprintf("{ %s: %q%s, accounts: [%s] }", exportKind(e.Stream), e.Subject, rt, strings.Join(e.Accounts, ", "))
}

func (i Import) confEntry() string {
	to := ""
	if i.To != "" {
		to = fmt.Sprintf(", to: %q", i.To)
	}
	return fmt.Sprintf("{ %s: { account: %s, subject: %q }%s }", exportKind(i.Stream), i.Account, i.Subject, to)
}

func exportKind(stream bool) string {
	if stream {
		return "stream"
	}
	return "service"
}
