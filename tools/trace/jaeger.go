// Package trace reads one trace from Jaeger's query API and draws it as an
// indented waterfall for the terminal (`make trace`, cmd/trace). It speaks the
// JSON API Jaeger's own UI uses (/api/services, /api/traces,
// /api/traces/{id}), which the all-in-one built from tools/jaeger serves
// completely even though its web UI's assets are not in the Go module.
package trace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultURL is where make run TRACING=1 and compose's tracing profile
// publish Jaeger's query API.
const DefaultURL = "http://localhost:16686"

// ErrUnavailable means no Jaeger answered at the client's URL.
var ErrUnavailable = errors.New("jaeger is not reachable")

// ErrNoTrace means Jaeger answered but holds no trace that matches.
var ErrNoTrace = errors.New("no such trace")

// Trace is one trace as Jaeger's query API returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is one span; times are microseconds (Unix time for StartTime).
type Span struct {
	TraceID       string     `json:"traceID"`
	SpanID        string     `json:"spanID"`
	OperationName string     `json:"operationName"`
	References    []Ref      `json:"references"`
	StartTime     int64      `json:"startTime"`
	Duration      int64      `json:"duration"`
	Tags          []KeyValue `json:"tags"`
	Logs          []Log      `json:"logs"`
	ProcessID     string     `json:"processID"`
}

// Ref ties a span to another: CHILD_OF is its parent, FOLLOWS_FROM one of
// its OpenTelemetry links (Jaeger's translation of OTLP).
type Ref struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Reference types of Ref.
const (
	ChildOf     = "CHILD_OF"
	FollowsFrom = "FOLLOWS_FROM"
)

// KeyValue is a tag or a log field. Value keeps Jaeger's JSON (a string, a
// number or a bool); String renders it.
type KeyValue struct {
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

// String is the value as text: a JSON string unquoted, anything else as sent.
func (kv KeyValue) String() string {
	var s string
	if json.Unmarshal(kv.Value, &s) == nil {
		return s
	}
	return string(kv.Value)
}

// Log is a span event: OpenTelemetry's event name is the field "event".
type Log struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// Process is the emitting service of a span.
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// Tag returns the value of the span's tag key and whether it is there.
func (s Span) Tag(key string) (string, bool) {
	for _, kv := range s.Tags {
		if kv.Key == key {
			return kv.String(), true
		}
	}
	return "", false
}

// Service is the name of the service that emitted span s.
func (t Trace) Service(s Span) string {
	if p, ok := t.Processes[s.ProcessID]; ok && p.ServiceName != "" {
		return p.ServiceName
	}
	return "?"
}

// Services lists the trace's services, each once, in the order of their first span.
func (t Trace) Services() []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range sortedByStart(t.Spans) {
		if name := t.Service(s); !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

// envelope is every answer of the query API: data, or errors.
type envelope struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

// Client asks one Jaeger's query API.
type Client struct {
	URL  string       // base URL, e.g. DefaultURL
	HTTP *http.Client // default: a client with a 10 s timeout
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 10 * time.Second}
}

// get fetches path?q from the API into out; a 404 is ErrNoTrace.
func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	u := strings.TrimRight(c.URL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("jaeger query API %s: %w", c.URL, err)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL with its query adds nothing to the reason
		}
		return fmt.Errorf("%w at %s (start it with make run TRACING=1 or make up TRACING=1): %v", ErrUnavailable, c.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("jaeger %s: reading the answer: %w", path, err)
	}
	var env envelope
	jsonErr := json.Unmarshal(body, &env)
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: jaeger %s: %s", ErrNoTrace, path, errorText(env, resp.Status))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jaeger %s: %s", path, errorText(env, resp.Status))
	}
	if jsonErr != nil {
		return fmt.Errorf("jaeger %s: not the query API's JSON (is %s Jaeger's query port, 16686?): %w", path, c.URL, jsonErr)
	}
	if len(env.Errors) > 0 {
		return fmt.Errorf("jaeger %s: %s", path, errorText(env, ""))
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return nil
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("jaeger %s: decoding: %w", path, err)
	}
	return nil
}

func errorText(env envelope, status string) string {
	var msgs []string
	for _, e := range env.Errors {
		msgs = append(msgs, e.Msg)
	}
	if len(msgs) == 0 {
		return status
	}
	return strings.Join(msgs, "; ")
}

// Services lists the services Jaeger holds spans of.
func (c *Client) Services(ctx context.Context) ([]string, error) {
	var s []string
	err := c.get(ctx, "/api/services", nil, &s)
	return s, err
}

// Operations lists the span names Jaeger holds for service.
func (c *Client) Operations(ctx context.Context, service string) ([]string, error) {
	var s []string
	err := c.get(ctx, "/api/services/"+url.PathEscape(service)+"/operations", nil, &s)
	return s, err
}

// Trace fetches one trace by its id (32 or fewer hex digits).
func (c *Client) Trace(ctx context.Context, id string) (Trace, error) {
	if !validTraceID(id) {
		return Trace{}, fmt.Errorf("trace id %q: want up to 32 hex digits", id)
	}
	var ts []Trace
	if err := c.get(ctx, "/api/traces/"+id, nil, &ts); err != nil {
		if errors.Is(err, ErrNoTrace) {
			return Trace{}, fmt.Errorf("%w: Jaeger at %s has no trace %s (its store is in memory: a restart empties it)", ErrNoTrace, c.URL, id)
		}
		return Trace{}, err
	}
	if len(ts) == 0 || len(ts[0].Spans) == 0 {
		return Trace{}, fmt.Errorf("%w: Jaeger at %s has no trace %s", ErrNoTrace, c.URL, id)
	}
	return ts[0], nil
}

func validTraceID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	for _, r := range id {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// Query selects traces: Service is required; Tags match span attributes exactly.
type Query struct {
	Service   string
	Operation string
	Tags      map[string]string
	Limit     int           // default 20
	Lookback  time.Duration // default 1 h
}

// Find returns the traces that match q, as Jaeger orders them.
func (c *Client) Find(ctx context.Context, q Query) ([]Trace, error) {
	if q.Service == "" {
		return nil, errors.New("jaeger trace search: a service is required")
	}
	v := url.Values{"service": {q.Service}}
	if q.Operation != "" {
		v.Set("operation", q.Operation)
	}
	if len(q.Tags) > 0 {
		b, err := json.Marshal(q.Tags)
		if err != nil {
			return nil, err
		}
		v.Set("tags", string(b))
	}
	if q.Limit <= 0 {
		q.Limit = 20
	}
	if q.Lookback <= 0 {
		q.Lookback = time.Hour
	}
	v.Set("limit", fmt.Sprint(q.Limit))
	end := time.Now()
	v.Set("start", fmt.Sprint(end.Add(-q.Lookback).UnixMicro()))
	v.Set("end", fmt.Sprint(end.UnixMicro()))
	var ts []Trace
	err := c.get(ctx, "/api/traces", v, &ts)
	return ts, err
}
