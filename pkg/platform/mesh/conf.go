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
	for _, f := range w.liveFeeds() {
		p.Publish = append(p.Publish, f.wildcard())
	}
	p.Publish = append(p.Publish, w.Calls...)
	p.Subscribe = append(p.Subscribe, w.InboxPrefix()+".>")
	if w.AnswersCallout {
		p.Subscribe = append(p.Subscribe, CalloutSubject)
		p.Responses = true
	}
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
	for _, f := range w.liveFeeds() {
		es = append(es, Export{Stream: true, Subject: f.wildcard(), Accounts: []string{LiveAccount}})
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

// AuthTimeoutSeconds is how long nats-server waits for a connection to
// authenticate, the auth callout's answer included: its 2 s default leaves
// no room for the Transaction Token Service to refetch the tenant's keys,
// or for a loaded replica.
const AuthTimeoutSeconds = 5

// WriteNATSConfig writes the accounts and authorization section of the
// server configuration (deploy/nats/accounts.conf). Only the Transaction
// Token Service has a NATS user of its own (an nkey: it answers the auth
// callout and kicks revoked connections); every other connection presents an
// Auth0 access token, which the callout turns into a user of the right
// account with the allow lists this table derives. Public keys are
// variables: keys.conf defines the development ones; Kubernetes mounts
// keys-env.conf instead, so they resolve to the environment.
func WriteNATSConfig(out io.Writer) error {
	var b bytes.Buffer
	p := func(indent int, f string, a ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(&b, f, a...)
		b.WriteByte('\n')
	}
	list := func(indent int, key string, ss []string) {
		p(indent, "%s: { allow: [", key)
		for _, s := range ss {
			p(indent+1, "%q", s)
		}
		p(indent, "] }")
	}
	callout := CalloutWorkload()
	p(0, "# Generated from pkg/platform/mesh by `make nats-config`; do not edit.")
	p(0, "#")
	p(0, "# One account per workload, and %s for people's live updates. No workload has a password:", LiveAccount)
	p(0, "# users, orders and billing connect with their Auth0 client-credentials token, people with their")
	p(0, "# access token, and the auth callout (the Transaction Token Service) answers with a user of the")
	p(0, "# right account, the allow lists below, that expires with the token. Across accounts only what")
	p(0, "# an owner exports to a named reader crosses.")
	p(0, "#")
	p(0, "# The keys are variables: keys.conf defines the development ones; in Kubernetes it is empty and")
	p(0, "# they resolve to the environment.")
	p(0, "include keys.conf")
	p(0, "")
	p(0, "system_account: %s", SystemAccount)
	p(0, "")
	p(0, "authorization {")
	p(1, "# Seconds a connection may take to authenticate, the callout's answer included (default 2):")
	p(1, "# the TTS verifies an Auth0 token, which may mean fetching the tenant's keys after a rotation.")
	p(1, "timeout: %d", AuthTimeoutSeconds)
	p(1, "auth_callout {")
	p(2, "issuer: $%s", IssuerVar)
	p(2, "xkey: $%s", XKeyVar)
	p(2, "account: %s", callout.Account)
	p(2, "auth_users: [ $%s, $%s ]", ServiceNKeyVar, SystemNKeyVar)
	p(1, "}")
	p(0, "}")
	p(0, "")
	p(0, "accounts {")
	p(1, "%s: {", SystemAccount)
	p(2, "users: [")
	p(3, "{")
	p(4, "nkey: $%s", SystemNKeyVar)
	p(4, "permissions: {")
	sys := SystemPermissions()
	list(5, "publish", sys.Publish)
	list(5, "subscribe", sys.Subscribe)
	p(4, "}")
	p(3, "}")
	p(2, "]")
	p(1, "}")
	for _, w := range Workloads {
		p(0, "")
		p(1, "%s: {", w.Account)
		if w.JetStream {
			p(2, "jetstream: enabled")
		}
		if w.AnswersCallout {
			perm := w.Permissions()
			p(2, "users: [")
			p(3, "{")
			p(4, "nkey: $%s", ServiceNKeyVar)
			p(4, "permissions: {")
			list(5, "publish", perm.Publish)
			list(5, "subscribe", perm.Subscribe)
			if perm.Responses {
				p(5, "allow_responses: true")
			}
			p(4, "}")
			p(3, "}")
			p(2, "]")
		}
		writeEntries(p, 2, "exports", w.Exports())
		writeEntries(p, 2, "imports", w.Imports())
		p(1, "}")
	}
	p(0, "")
	p(1, "%s: {", LiveAccount)
	writeEntries(p, 2, "imports", LiveImports())
	p(1, "}")
	p(0, "}")
	_, err := out.Write(b.Bytes())
	return err
}

// LiveImports are the live feeds the people's account imports from their
// publishers.
func LiveImports() []Import {
	var is []Import
	for _, f := range LiveFeeds {
		w, _ := Lookup(f.Publisher)
		is = append(is, Import{Stream: true, Account: w.Account, Subject: f.wildcard()})
	}
	return is
}

// WriteDevKeys writes deploy/nats/keys.conf: the public keys of the
// development callout keys (DevKeys) as the variables accounts.conf uses.
// accounts.conf includes it (a variable is visible only in the file defining
// it and the files including it); Kubernetes mounts keys-env.conf instead,
// so the variables resolve to the environment.
func WriteDevKeys(out io.Writer) error {
	pub, err := DevKeys.Public()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("# Generated from pkg/platform/mesh by `make nats-config`; do not edit.\n")
	b.WriteString("# The public halves of the development callout keys (pkg/platform/mesh DevKeys), as the variables\n")
	b.WriteString("# accounts.conf uses. Kubernetes mounts keys-env.conf under this name instead.\n")
	for _, kv := range pub.Vars() {
		fmt.Fprintf(&b, "%s: %q\n", kv[0], kv[1])
	}
	_, err = out.Write(b.Bytes())
	return err
}

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

// exportKind is how accounts.conf names an export or import: a stream or a
// service.
func exportKind(stream bool) string {
	if stream {
		return "stream"
	}
	return "service"
}
