package zds

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// FuzzDispatch feeds arbitrary payloads, with no descriptor, a real network
// namespace, a non-namespace file or two descriptors, through the client's
// decoding and dispatch path. It must never panic, must always produce an
// Ack, and must close every descriptor.
func FuzzDispatch(f *testing.F) {
	seed := func(m proto.Message) []byte {
		b, _ := proto.Marshal(m)
		return b
	}
	f.Add([]byte{}, uint8(0))
	f.Add([]byte{0xff}, uint8(1))
	f.Add(seed(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: "u", WorkloadInfo: &zdsapi.WorkloadInfo{Name: "n"}}}}), uint8(1))
	f.Add(seed(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: "u"}}}), uint8(2))
	f.Add(seed(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: "u"}}}), uint8(3))
	f.Add(seed(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: "u"}}}), uint8(0))
	f.Add(seed(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}), uint8(0))

	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, payload []byte, fdMode uint8) {
		d := &datagram{payload: payload}
		open := func(path string) {
			file, err := os.Open(path)
			if err != nil {
				t.Skip(err)
			}
			d.files = append(d.files, file)
		}
		switch fdMode % 4 {
		case 1:
			open("/proc/self/ns/net")
		case 2:
			open(os.DevNull)
		case 3:
			open("/proc/self/ns/net")
			open(os.DevNull)
		}
		files := append([]*os.File(nil), d.files...)
		h := &recorder{}
		st := newDispatcher(h, log)
		ackText := st.handle(context.Background(), d)
		var req zdsapi.WorkloadRequest
		if proto.Unmarshal(payload, &req) != nil && ackText == "" {
			t.Fatal("undecodable payload acknowledged as success")
		}
		for _, file := range files {
			if _, err := file.Stat(); !errors.Is(err, fs.ErrClosed) {
				t.Fatalf("descriptor left open (stat: %v)", err)
			}
		}
	})
}
