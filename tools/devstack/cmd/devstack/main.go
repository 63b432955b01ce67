// Command devstack runs the whole authmesh system on this machine: embedded
// NATS with JetStream, devtenant and the three services (`make run`).
//
//	devstack [-root DIR] [-data DIR] [-tracing]
//
// AUTHMESH_ROOT and AUTHMESH_DATA set the same as the flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/authmesh/authmesh/tools/devstack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("root", os.Getenv("AUTHMESH_ROOT"), "repository root (default: found from the working directory)")
	data := flag.String("data", os.Getenv("AUTHMESH_DATA"), "state directory kept between runs (default: <root>/.data)")
	tracing := flag.Bool("tracing", false, "run Jaeger (built from tools/jaeger, cached) and have the services export their spans to it")
	flag.Parse()
	if *root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if *root, err = devstack.FindRoot(wd); err != nil {
			return err
		}
	}
	bind, err := devstack.BindHost(os.Getenv)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return devstack.Run(ctx, devstack.Config{Root: *root, DataDir: *data, BindHost: bind, Tracing: *tracing})
}
