package index

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestGolden builds every testdata/<case>.yaml and compares the rendered
// Output with testdata/<case>.golden.yaml. Run with -update to regenerate.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := manifesttest.Scheme()
	n := 0
	for _, path := range inputs {
		if strings.HasSuffix(path, ".golden.yaml") {
			continue
		}
		n++
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, in, err := decodeInputs(s, data)
			if err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			got, err := renderOutput(Build(cfg, in))
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(path, ".yaml") + ".golden.yaml"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, manifesttest.LineDiff(string(want), string(got)))
			}
		})
	}
	if n == 0 {
		t.Fatal("no test cases found")
	}
}
