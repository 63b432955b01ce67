package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

func (r *report) markdown(imgs []chart, rel func(string) string) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Benchmarks\n\n")
	p("Written by `make bench` (`go run ./tools/bench`); do not edit by hand. Every figure sits next to its\n")
	p("baseline from the same run: on a shared machine absolute numbers drift, ratios hold.\n\n")
	p("| machine | |\n|---|---|\n")
	p("| CPU | %s |\n| cores | %d |\n| kernel | %s |\n| Go | %s |\n", r.Machine.CPU, r.Machine.Cores, r.Machine.Kernel, r.Machine.GoVersion)
	p("| date | %s (run took %s) |\n", r.Started.UTC().Format(time.RFC3339), r.Elapsed.Round(time.Second))
	if r.Machine.BusyStart >= 0 {
		p("| CPU busy just before the run | %.0f%% of the host's CPUs (2 s sample of `/proc/stat`) |\n", 100*r.Machine.BusyStart)
	}
	p("| load average (1, 5, 15 min) | at start %s; at end %s (the figures at start include the build `make bench` runs first) |\n\n", r.Machine.LoadStart, r.Machine.LoadEnd)
	if r.Machine.BusyStart > busyWarning {
		p("> The machine was busy with other work (%.0f%% of the host's CPUs in use before the run): absolute\n", 100*r.Machine.BusyStart)
		p("> figures are low and noisy; compare the ratios, which were measured in interleaved rounds.\n\n")
	}
	for _, n := range r.Notes {
		p("> **Note:** %s\n\n", strings.ReplaceAll(n, "\n", " "))
	}

	p("## Targets\n\n| issue | target | this run | status |\n|---|---|---|---|\n")
	for _, t := range r.targets() {
		p("| %s | %s | %s | **%s** |\n", t.Issue, t.What, orDash(t.Value, t.Measured), t.status())
	}
	p("\n")
	if x, ok := r.Go.ratio("Validate/authz-cold", "Validate/baseline-go-jwt-middleware", speed); ok {
		p("Cold validation from the two sequential sub-benchmarks instead (not paired; it moves with the load\n")
		p("between them): %.2f× the baseline's time. See the Go benchmarks below.\n\n", x)
	}

	if len(imgs) > 0 {
		p("## Charts\n\n")
		for _, c := range imgs {
			p("![%s](%s)\n\n", c.Title, rel(c.File))
		}
	}

	if w := r.Wrk; w != nil {
		p("## HTTP auth overhead under wrk\n\n")
		p("One trivial Echo handler (`GET /v1/me` → `ok`) served three ways by `tools/bench/cmd/echoserver`,\n")
		p("each on its own loopback port, with one RS256 token from a local JWKS; wrk in its own process,\n")
		p("`-t %d -c %d -d %s --latency`, the same `Authorization` header for all three, %d interleaved rounds\n", w.Threads, w.Conns, w.Duration, w.Rounds)
		p("(open, authz, go-jwt-middleware, open, …). Req/s: median over rounds; ratios: median of the ratios within\n")
		p("each round; latency: the median round's. Any non-2xx answer or socket error fails the run.\n")
		if w.Pinning != "" {
			p("CPUs: %s, so that the load generator never takes a core\n", w.Pinning)
			p("from the server: the figures are the server's capacity on one core, not a share of cores split with wrk.\n")
		}
		p("\n")
		p("| variant | req/s (median) | req/s per round | p50 | p90 | p99 | vs open | vs go-jwt-middleware |\n|---|---|---|---|---|---|---|---|\n")
		for _, v := range wrkVariants {
			l := w.Latency[v]
			p("| %s | %.0f | %s | %s | %s | %s | %.2f | %.2f× |\n", v, w.median(v), joinF(w.RPS[v]), ms(l["50%"]), ms(l["90%"]), ms(l["99%"]), w.ratio(v, "open"), w.ratio(v, "go-jwt-middleware"))
		}
		p("\nServer CPU time per request (user+system from `/proc/<pid>/stat` around each run, median over rounds): it does\n")
		p("not depend on how much CPU the machine's other load left to the server, so on a busy machine it is the\n")
		p("steadier measure of what each layer costs.\n\n| variant | CPU µs/request | vs open | go-jwt-middleware vs it |\n|---|---|---|---|\n")
		for _, v := range wrkVariants {
			p("| %s | %.1f | %.2f× | %.2f× |\n", v, float64(medianD(w.CPUPerReq[v]))/1e3, w.cpuRatio(v, "open"), w.cpuRatio("go-jwt-middleware", v))
		}
		p("\nIf every request cost only its CPU, authz would reach %.2f of open's throughput and %.2f× go-jwt-middleware's.\n\n",
			1/w.cpuRatio("authz", "open"), w.cpuRatio("go-jwt-middleware", "authz"))
		p("\n")
		if w.Profile != "" {
			p("<details><summary>CPU profile of the server under wrk, authz variant (3 s, <code>go tool pprof -top</code>)</summary>\n\n```\n%s```\n</details>\n\n", w.Profile)
		}
	}

	if g := r.Go; g != nil && len(g.Results) > 0 {
		p("## Go benchmarks\n\n`%s`. Figures: median of %d rounds; ratios: median of the ratios within each round.\n\n", g.Cmd, len(g.Rounds))
		tableHeader(p, "benchmark", "ns/op", "B/op", "allocs/op", "baseline", "ratio")
		rows := []struct{ name, base, kind string }{
			{"Validate/baseline-go-jwt-middleware", "", ""},
			{"Validate/authz-cold", "Validate/baseline-go-jwt-middleware", "time"},
			{"Validate/paired-cold-vs-baseline", "Validate/baseline-go-jwt-middleware", "paired"},
			{"Validate/authz-cached", "Validate/baseline-go-jwt-middleware", "speed"},
			{"EchoHTTP/open", "", ""},
			{"EchoHTTP/authz", "EchoHTTP/open", "tput"},
			{"EchoHTTP/go-jwt-middleware", "EchoHTTP/authz", "slow"},
			{"NATSRequest/raw-no-headers", "", ""},
			{"NATSRequest/raw", "NATSRequest/raw-no-headers", "tput"},
			{"NATSRequest/authz", "NATSRequest/raw", "tput"},
			{"NATSRequest/authz-exchanged", "NATSRequest/raw", "tput"},
		}
		for _, row := range rows {
			if _, ok := g.Results[row.name]; !ok {
				tableRow(p, row.name, g.stat(row.name), "", "not run")
				continue
			}
			ratio := ""
			if row.kind == "paired" {
				if x, ok := g.metric(row.name, "x-baseline-time"); ok {
					ratio = fmt.Sprintf("%.2f× the baseline's time, call by call", x)
				}
			} else if row.base != "" {
				// Same-round ratios, median over rounds.
				back, _ := g.ratio(row.base, row.name, speed) // base time / this time
				if back > 0 {
					switch row.kind {
					case "time":
						ratio = fmt.Sprintf("%.2f× the baseline's time", 1/back)
					case "speed":
						ratio = fmt.Sprintf("%.1f× faster", back)
					case "tput":
						ratio = fmt.Sprintf("%.0f%% of its throughput", 100*back)
					case "slow":
						ratio = fmt.Sprintf("authz is %.2f× faster", 1/back)
					}
				}
			}
			tableRow(p, row.name, g.stat(row.name), row.base, ratio)
		}
		p("\n`Validate/paired-cold-vs-baseline` calls go-jwt-middleware's validator and authz-cold alternately\n")
		p("in one loop (each first every other time) and reports authz-cold's total time over the baseline's: both\n")
		p("see the same machine, where the two sub-benchmarks above run a second apart and their ratio moves with\n")
		p("the load between them. Its ns/op is one call of each. The cold-validation target uses it.\n")
		p("\nThe EchoHTTP figures share two cores between Go's HTTP client and the server, so they understate\nthe server-side difference; the wrk section above is the one the targets of issue 8 use.\n")
		p("In EchoHTTP and NATSRequest every variant gets the same request, the caller's token included (as under\n")
		p("wrk): `open` and `raw` measure the handler without an auth layer, not a lighter request.\n")
		p("`NATSRequest/raw-no-headers` sends no headers at all; its gap to `raw` is what carrying the transaction\n")
		p("token costs inside NATS (the server's header path), a cost of propagating identity whatever reads it.\n")
		p("`NATSRequest/authz` sends from a NATS handler's context, forwarding the transaction token it received;\n")
		p("`NATSRequest/authz-exchanged` sends from an HTTP handler's context, so the caller's access token is first\n")
		p("exchanged through a `natsauth.TxnClient`, whose cache answers every request after the first.\n\n")
		r.Go.writePair(p, exchangePair)
		r.natsConnectSection(p)
		r.dpopSection(p)
	}

	if s := r.Stack; s != nil {
		p("## The stack under load (`tools/devstack`, embedded NATS, loopback)\n\n")
		p("Started with `devstack.Run` and a throwaway data directory; load from vegeta (as a library) with\n")
		p("%d workers as fast as they go, alice's access token from devtenant.\n\n", s.Clients)
		if len(s.Stages) > 0 {
			byName := map[string]stage{}
			for _, st := range s.Stages {
				byName[st.Name] = st
			}
			p("| stage | req/s | success | status codes | p50 | p95 | p99 | max | baseline | ratio |\n|---|---|---|---|---|---|---|---|---|---|\n")
			for _, st := range s.Stages {
				ratio := ""
				if bs, ok := byName[st.Baseline]; ok && bs.RPS > 0 {
					ratio = fmt.Sprintf("%.2f of its req/s", st.RPS/bs.RPS)
				}
				p("| %s: %s | %.0f | %.1f%% | %s | %s | %s | %s | %s | %s | %s |\n", st.Name, st.Desc, st.RPS, 100*st.Success, codes(st.Codes),
					ms(st.P50), ms(st.P95), ms(st.P99), ms(st.Max), st.Baseline, ratio)
			}
			p("\n")
			if share, create, read, ok := s.createShare(); ok {
				p("**orders-create reached %.2f of orders-read's req/s** (%.0f against %.0f): a create exchanges alice's\n", share, create, read)
				p("access token for a transaction token (a cache hit after the first), asks users for her profile over NATS,\n")
				p("writes the order to KV and publishes its event; a read checks her token and reads KV inside orders.\n\n")
			}
			for _, st := range s.Stages {
				if st.FirstFail > 0 {
					p("- **%s**: the first failure came %s into the stage; until then %.0f successful req/s.\n", st.Name, st.FirstFail.Round(time.Millisecond), st.RPSBeforeFail)
				}
			}
			p("\n")
		}
		if s.Drain > 0 {
			cs := s.Stages[len(s.Stages)-1]
			p("Billing consumes `order.created` with 8 workers (one order's events in order). It listed the invoice of the create stage's last order\n")
			p("%s after that stage began: **%.0f invoices/s** sustained, against %.0f orders/s created (%.2f).\n", s.Drain.Round(time.Millisecond), s.InvoiceRate, cs.RPS, s.InvoiceRate/cs.RPS)
			p("The latency stage below starts after that, on an idle pipeline.\n\n")
		} else if s.DrainTimedOut {
			p("Billing had not listed the invoice of the create stage's last order %s later: its backlog delays the\nlatency stage below.\n\n", drainTimeout)
		}
		if iv := s.Invoice; iv != nil {
			p("### Order → invoice\n\n")
			p("%d clients, each in a loop: `POST /v1/orders`, then wait until billing lists the invoice. Billing has\n", iv.Clients)
			p("no public push interface, and polling its API every few milliseconds would load it with many more\n")
			p("requests than the orders measured; so a KV watch on billing's bucket says when the invoice is stored,\n")
			p("and then `GET /v1/invoices?order_id=` must list it (retried every %s if not yet: %d retries in all).\n", iv.Poll, iv.ExtraPolls)
			p("The interval ends when that GET answers with the invoice. %d orders, %d without an\n", iv.Orders, iv.Missing)
			p("invoice within 5 s or failed; at most %d orders per client", iv.PerClient)
			if iv.PerClient == invoicePerClientLimited {
				p(", after waiting for a fresh window of devtenant's Management API\n")
				p("rate limit, which the create stage ran into (users answered 503 once the tenant answered 429)")
			}
			p(".\n\n")
			for _, k := range slices.Sorted(maps.Keys(iv.Failures)) {
				p("- %d × %s\n", iv.Failures[k], k)
			}
			if len(iv.Failures) > 0 {
				p("\n")
			}
			p("| interval | p50 | p95 | p99 | max |\n|---|---|---|---|---|\n")
			for _, row := range []struct {
				n string
				d []time.Duration
			}{{"201 from orders → invoice listed by billing (the target)", iv.Invoice}, {"POST /v1/orders (request → 201)", iv.Create}, {"end to end (request → invoice listed)", iv.E2E}} {
				if len(row.d) == 0 {
					continue
				}
				p("| %s | %s | %s | %s | %s |\n", row.n, ms(pct(row.d, 50)), ms(pct(row.d, 95)), ms(pct(row.d, 99)), ms(row.d[len(row.d)-1]))
			}
			p("\n")
		}
		p("### Resources\n\n| service | RSS idle | RSS peak under load | ratio | cold start to ready | binary (devstack build) |\n|---|---|---|---|---|---|\n")
		for _, name := range serviceNames() {
			idle, load := s.RSSIdle[name], s.RSSLoad[name]
			ratio := ""
			if idle > 0 && load > 0 {
				ratio = fmt.Sprintf("%.1f×", float64(load)/float64(idle))
			}
			cs := "—"
			if d, ok := s.ColdStart[name]; ok {
				cs = ms(d)
			}
			p("| %s | %s | %s | %s | %s | %s |\n", name, mib(idle*1024), mib(load*1024), ratio, cs, mib(s.Binaries[name]))
		}
		p("\nCold start: from the process's start (`/proc/<pid>/stat`, 10 ms ticks) to its first `200` from `/readyz`\n")
		p("(polled every 20 ms), with NATS and devtenant already up. The whole stack was ready %s after\n", s.StackReady.Round(time.Millisecond))
		p("`devstack.Run` was called, which includes `go build` of the %d services (%s).\n\n", len(serviceNames()), strings.Join(serviceNames(), ", "))
	}
	if tr := r.Tracing; tr != nil {
		tr.markdown(p)
	}
	if r.Go != nil {
		r.Go.writePair(p, exportPair)
		r.Go.writePair(p, decisionSpanPair)
	}

	if len(r.Sizes.Static) > 0 || len(r.Sizes.Images) > 0 {
		p("### Static binaries and images\n\n| artifact | size |\n|---|---|\n")
		for _, k := range slices.Sorted(maps.Keys(r.Sizes.Static)) {
			p("| `bin/%s` (static, `-trimpath -ldflags='-s -w'`) | %s |\n", k, mib(r.Sizes.Static[k]))
		}
		for _, k := range slices.Sorted(maps.Keys(r.Sizes.Images)) {
			p("| image `%s` | %s |\n", k, mib(r.Sizes.Images[k]))
		}
		p("\n")
	}
	if len(r.Sizes.Images) == 0 {
		p("No images of the services were found: make bench builds them when a Docker engine runs (`make k8s-images`).\n\n")
	}
	return b.String()
}

// pairSection is a Go benchmark of two variants reported as a section of
// its own: the table of prefix+slow and prefix+fast, how many times faster
// fast is, and what the variants do.
type pairSection struct {
	heading, column, prefix, slow, fast string
	faster                              string // a format of one number, the speed-up
	about                               string // one paragraph
}

var (
	exportPair = pairSection{heading: "OTLP export of one batch (`pkg/platform/telemetry`, `BenchmarkExport`)",
		column: "exporter", prefix: "Export/", slow: "sdk", fast: "protowire", faster: "The services' exporter is **%.1f× faster** than the SDK's",
		about: "One batch of 512 spans of six attributes each (the batch processor's default size), encoded as OTLP protobuf and sent over HTTP to a local receiver that discards it. `sdk` is `otlptracehttp.New`: a new tree of protobuf messages per batch, marshalled by reflection. `protowire` is what `telemetry.Start` installs: the same client, sending the spans' encoding appended straight into a buffer kept from batch to batch (`TestExporterSendsWhatTheSDKSends` decodes both and requires the same messages)."}
	decisionSpanPair = pairSection{heading: "A receiver's span (`pkg/authz`, `BenchmarkDecisionSpan`)",
		column: "attributes", prefix: "DecisionSpan/", slow: "direct", fast: "gathered", faster: "A gathered span is **%.2f× faster**",
		about: "One span with a receiver's 13 attributes in six calls (messaging, endpoint, key lookup, an id, the decision, the result), ended into a processor that drops it. `direct`: each call goes to the SDK, which grows the span's attribute slice whenever it is full. `gathered`: `authz.GatherAttributes`, as the services' HTTP server, NATS server, consumer and producer spans are: the SDK gets them in one call at End."}
	exchangePair = pairSection{heading: "Transaction token exchange (`services/tts`, `BenchmarkExchange`)",
		column: "variant", prefix: "Exchange/", slow: "uncached", fast: "cached", faster: "A cache hit is **%.0f× faster** than an exchange",
		about: "`uncached` is one full exchange: the client asks the real Transaction Token Service over NATS (orders' account importing the TTS's `authmesh.tts.exchange`), which verifies the caller's access token and orders' own client-credentials token (from its validator's cache, as under load), signs an ES256 transaction token and answers; the client then forgets it. `cached` is what a steady load pays instead: `natsauth.TxnClient`'s hit for the same (access token, scopes) until shortly before the transaction token expires."}
)

// writePair writes s: its heading, the ns/op, B/op and allocs/op table,
// the speed-up (the median of the ratios within each round) and its
// paragraph. It writes nothing when neither variant ran.
func (g *goBench) writePair(p func(string, ...any), s pairSection) {
	if !g.ranAny(s.prefix, []string{s.slow, s.fast}) {
		return
	}
	p("### %s\n\n", s.heading)
	tableHeader(p, s.column, "ns/op", "B/op", "allocs/op")
	for _, v := range []string{s.slow, s.fast} {
		tableRow(p, v, g.stat(s.prefix+v))
	}
	if x, ok := g.ratio(s.prefix+s.slow, s.prefix+s.fast, speed); ok {
		p("\n"+s.faster+" (median of the ratios within each round).\n", x)
	}
	p("\n%s\n\n", s.about)
}

// natsConnectVariants are BenchmarkNATSConnect's sub-benchmarks (pkg/platform/callout)
// in report order, each with its baseline (a password connect over the same
// transport) and what it measures.
var natsConnectVariants = []struct{ name, base, desc string }{
	{"password", "", "password user, plain configuration (TCP)"},
	{"password-websocket", "", "the same over WebSocket"},
	{"callout-workload-cold", "password", "orders' client-credentials token, a new one each time: signature and claims checked, JWKS cached"},
	{"callout-workload-warm", "password", "the same token again: the validator's cache of verified tokens answers"},
	{"callout-jwks-cold", "password", "first connection after the callout starts: a new validator fetches the JWKS, then checks the token"},
	{"callout-person-websocket-warm", "password-websocket", "a person's access token over WebSocket (account LIVE), the same token again"},
}

// natsConnect is a BenchmarkNATSConnect variant's connect time over its
// baseline's, the median of the ratios within each round.
func (g *goBench) natsConnect(name string) (x float64, ok bool) {
	for _, v := range natsConnectVariants {
		if v.name == name && v.base != "" {
			return g.ratio("NATSConnect/"+name, "NATSConnect/"+v.base, speed)
		}
	}
	return 0, false
}

// natsConnectSection reports BenchmarkNATSConnect (pkg/platform/callout): a
// NATS connection's cost through the auth callout next to a password
// connect (issue 14).
func (r *report) natsConnectSection(p func(string, ...any)) {
	g := r.Go
	var variants []string
	for _, v := range natsConnectVariants {
		variants = append(variants, v.name)
	}
	if !g.ranAny("NATSConnect/", variants) {
		return
	}
	p("### NATS connect: password against the auth callout (`pkg/platform/callout`, `BenchmarkNATSConnect`)\n\n")
	tableHeader(p, "variant", "what", "connect", "callout decision (mean)", "B/op", "allocs/op", "baseline", "× the baseline's time")
	for _, v := range natsConnectVariants {
		s, ok := g.Results["NATSConnect/"+v.name]
		if !ok {
			tableRow(p, v.name, v.desc, "—", "—", "—", "—", v.base, "not run")
			continue
		}
		decision, ratio := "", ""
		if d, ok := g.metric("NATSConnect/"+v.name, "x-callout-decision-us"); ok {
			decision = us(d * 1e3)
		}
		if x, ok := g.natsConnect(v.name); ok {
			ratio = fmt.Sprintf("%.2f×", x)
		}
		tableRow(p, v.name, v.desc, us(s.NsOp), decision, fmt.Sprintf("%.0f", s.BOp), fmt.Sprintf("%.0f", s.AllocsOp), v.base, ratio)
	}
	p("\nA connection here is `nats.Connect` and its first `Flush` (CONNECT, the server's verdict, one PING/PONG),\n")
	p("client, server and callout in one process on loopback. The password server has a plain configuration (one account\n")
	p("with JetStream, one user with a plain-text password, as the NATS users before the auth callout had); the callout server\n")
	p("has the mesh's (`meshtest.StartWith`: accounts, `auth_callout`, xkey) and is answered by `callout.New` as the\n")
	p("TTS answers it, with an `authz.Validator` (revocations included) trusting a test tenant. Through the callout\n")
	p("the server seals a request for the callout (xkey), which opens it, validates the token, signs a user JWT and\n")
	p("seals its answer; the server opens and verifies that. The JWKS is cached in every variant but\n")
	p("`callout-jwks-cold`, whose fetch is from a loopback HTTP server: against Auth0 it adds a TLS round trip over the\n")
	p("internet, once per TTS start and key rotation. Connections are opened in batches and closed between batches,\n")
	p("outside the timer, as are minting tokens and creating validators. The callout decision is the mean of the\n")
	p("callout's own `nats_callout_seconds` histogram over the timed connections. B/op and allocs/op count the\n")
	p("client's, the server's and the callout's allocations together.\n\n")
}

// us formats nanoseconds as microseconds.
func us(ns float64) string { return fmt.Sprintf("%.0f µs", ns/1e3) }

func codes(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func medianD(d []time.Duration) time.Duration {
	f := make([]float64, len(d))
	for i, x := range d {
		f[i] = float64(x)
	}
	return time.Duration(median(f))
}

func orDash(v string, ok bool) string {
	if !ok || v == "" {
		return "—"
	}
	return v
}

func joinF(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = fmt.Sprintf("%.0f", f)
	}
	return strings.Join(s, ", ")
}

// busyWarning is the share of the machine's CPU in use by others before the
// run above which the report warns that absolute figures are unreliable.
const busyWarning = 0.25

// dpopSection reports BenchmarkDPoP (pkg/authz): a DPoP request's
// verification next to a Bearer request's (issue 15).
func (r *report) dpopSection(p func(string, ...any)) {
	g := r.Go
	rows := []struct{ name, desc string }{
		{"bearer-cached", "Bearer: a cached access token (the baseline)"},
		{"es256-verify", "one ES256 verify of a proof, alone: SHA-256 of its signing input and the P-256 check (crypto/ecdsa)"},
		{"dpop-cold-proof", "DPoP: the same cached token plus a new proof each request (signature, claims, ath, thumbprint, jti claimed)"},
		{"paired", "the three above and the floor (the same cached token, only the proof's key lookup and signature check) in turn, call by call (B/op and allocs/op: the four together)"},
	}
	if _, ok := g.Results["DPoP/dpop-cold-proof"]; !ok {
		return
	}
	p("### DPoP against Bearer (`pkg/authz`, `BenchmarkDPoP`)\n\n")
	tableHeader(p, "variant", "what", "ns/op", "B/op", "allocs/op")
	for _, row := range rows {
		tableRow(p, row.name, row.desc, g.stat("DPoP/"+row.name))
	}
	if x, ok := g.metric("DPoP/paired", "x-of-target"); ok {
		p("\nDPoP's cost is %.3f× the target (1.5× Bearer's cached cost plus one ES256 verify), measured by `paired`,\n", x)
		p("where the calls alternate one by one and see the same machine load. ")
		if fl, ok := g.metric("DPoP/paired", "x-floor-of-target"); ok {
			p("The floor, what any verifier pays before it reads a claim (the cached token, the proof's key\n")
			p("lookup and its signature check), is %.3f× the target by itself", fl)
			if flm, ok := g.metric("DPoP/paired", "x-floor-of-target-median"); ok {
				if xm, ok := g.metric("DPoP/paired", "x-of-target-median"); ok {
					p(" (by each call's median: floor %.3f×, DPoP %.3f×)", flm, xm)
				}
			}
			p(": the target leaves the claims, `htu`, `iat`, `ath`, the binding and the replay claim no time at all.\n")
		}
	}
	p("Proofs are signed outside the timer (the client's work); the `jti` is claimed in an in-memory replay cache here,\n")
	p("where a service claims it in its NATS KV bucket (one JetStream round trip more, shared by every replica).\n\n")
}

// tableHeader writes a Markdown table's header row and the row under it.
func tableHeader(p func(string, ...any), columns ...string) {
	tableRow(p, columns)
	p("|%s\n", strings.Repeat("---|", len(columns)))
}

// tableRow writes one Markdown table row; each value is a string or a []string
// of consecutive cells.
func tableRow(p func(string, ...any), values ...any) {
	var row []string
	for _, v := range values {
		switch v := v.(type) {
		case []string:
			row = append(row, v...)
		default:
			row = append(row, fmt.Sprint(v))
		}
	}
	p("| %s |\n", strings.Join(row, " | "))
}

// stat is the ns/op, B/op and allocs/op cells of the benchmark name, or a
// dash in each when it did not run.
func (g *goBench) stat(name string) []string {
	s, ok := g.Results[name]
	if !ok {
		return []string{"—", "—", "—"}
	}
	return []string{fmt.Sprintf("%.0f", s.NsOp), fmt.Sprintf("%.0f", s.BOp), fmt.Sprintf("%.0f", s.AllocsOp)}
}

// ranAny reports whether any of the sub-benchmarks prefix+name ran.
func (g *goBench) ranAny(prefix string, names []string) bool {
	return slices.ContainsFunc(names, func(n string) bool {
		_, ok := g.Results[prefix+n]
		return ok
	})
}
