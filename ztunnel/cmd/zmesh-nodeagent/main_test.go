package main

import (
	"errors"
	"flag"
	"reflect"
	"testing"
)

func TestParseFlags(t *testing.T) {
	env := map[string]string{"NODE_NAME": "from-env"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		node    string
		local   bool
		binDir  string
		netDir  string
		state   string
		dirs    []string // Finder.NetnsDirs; nil: no finder
	}{
		{name: "kubernetes defaults", node: "from-env", binDir: "/host/opt/cni/bin", netDir: "/host/etc/cni/net.d",
			state: "/var/run/ztunnel/pods", dirs: []string{"/var/run/netns"}},
		{name: "kubernetes flags", args: []string{"--node-name=n1", "--kubeconfig=/k", "--state-dir=", "--cni-bin-dir=", "--cni-net-dir=/etc/cni/net.d",
			"--netns-dirs=/a, /b,", "--cni-uninstall-on-exit"}, node: "n1", netDir: "/etc/cni/net.d", dirs: []string{"/a", "/b"}},
		{name: "local mode installs nothing by default", args: []string{"--config-dir=/cfg", "--netns-search=false"}, node: "from-env", local: true,
			state: "/var/run/ztunnel/pods"},
		{name: "local mode installs when asked", args: []string{"--config-dir=/cfg", "--cni-net-dir=/n", "--cni-bin-dir=/b"}, node: "from-env", local: true,
			binDir: "/b", netDir: "/n", state: "/var/run/ztunnel/pods", dirs: []string{"/var/run/netns"}},
		{name: "no node name", args: []string{"--node-name="}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, o, err := parseFlags(tt.args, getenv)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				if errors.Is(err, flag.ErrHelp) {
					t.Fatal("help")
				}
				return
			}
			if cfg.NodeName != tt.node || (cfg.ConfigDir != "") != tt.local || o.cniBinDir != tt.binDir || o.cniNetDir != tt.netDir || cfg.StateDir != tt.state {
				t.Errorf("cfg %+v options %+v", cfg, o)
			}
			var dirs []string
			if cfg.Finder != nil {
				dirs = cfg.Finder.NetnsDirs
				if cfg.Finder.ProcDir != "/proc" {
					t.Errorf("proc dir %q", cfg.Finder.ProcDir)
				}
			}
			if !reflect.DeepEqual(dirs, tt.dirs) {
				t.Errorf("netns dirs %v, want %v", dirs, tt.dirs)
			}
		})
	}
}
