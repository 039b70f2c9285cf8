//go:build tools

// This file pins modules that packages under construction import, so that `go mod tidy` keeps
// them while the packages land. It builds into nothing.
package main

import (
	_ "github.com/containerd/cgroups/v3"
	_ "github.com/containernetworking/cni/libcni"
	_ "github.com/opencontainers/runtime-spec/specs-go"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "golang.org/x/sys/unix"
	_ "sigs.k8s.io/yaml"
)
