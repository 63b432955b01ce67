package devstack

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions loads the single-node server configuration of deploy/nats (the
// same accounts and auth callout as the compose cluster) and points it at a
// local store. host, when not empty, overrides the configured listen host
// (127.0.0.1) of clients, monitoring and WebSocket alike; port, httpPort and
// wsPort override the configured 4222, 8222 and 8405 (-1 picks a free port,
// which tests use).
//
// The server authenticates nobody itself: every connection but the
// Transaction Token Service's own is handed to the auth callout, which the
// TTS answers, so until the TTS is up only the TTS can connect.
func NATSOptions(root, storeDir, host string, port, httpPort, wsPort int) (*server.Options, error) {
	conf := filepath.Join(root, "deploy", "nats", "nats.conf")
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		return nil, fmt.Errorf("devstack: nats config %s: %w", conf, err)
	}
	if opts.AuthCallout == nil || len(opts.AuthCallout.AuthUsers) == 0 {
		return nil, fmt.Errorf("devstack: nats config %s has no auth callout: refusing to run an open server", conf)
	}
	if len(opts.Users) > 0 {
		return nil, fmt.Errorf("devstack: nats config %s defines password users: connections authenticate through the auth callout", conf)
	}
	opts.JetStream = true
	opts.StoreDir = storeDir
	if host != "" {
		opts.Host = host
		opts.HTTPHost = host
		opts.Websocket.Host = host
	}
	opts.Port = port
	opts.HTTPPort = httpPort
	opts.Websocket.Port = wsPort
	opts.NoSigs = true // the stack owns signal handling
	return opts, nil
}

// StartNATS starts an embedded server and waits until it accepts clients.
func StartNATS(opts *server.Options, log io.Writer) (*server.Server, error) {
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("devstack: nats: %w", err)
	}
	s.SetLogger(natsLogger{slog.New(slog.NewTextHandler(log, nil))}, false, false)
	s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("devstack: nats: not ready for connections within 15s")
	}
	return s, nil
}

// natsLogger adapts the server's printf-style logger to slog.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(f string, v ...any) { n.l.Info(fmt.Sprintf(f, v...)) }
func (n natsLogger) Warnf(f string, v ...any)   { n.l.Warn(fmt.Sprintf(f, v...)) }
func (n natsLogger) Fatalf(f string, v ...any)  { n.l.Error(fmt.Sprintf(f, v...)) }
func (n natsLogger) Errorf(f string, v ...any)  { n.l.Error(fmt.Sprintf(f, v...)) }
func (n natsLogger) Debugf(f string, v ...any)  { n.l.Debug(fmt.Sprintf(f, v...)) }
func (n natsLogger) Tracef(f string, v ...any)  { n.l.Debug(fmt.Sprintf(f, v...)) }
