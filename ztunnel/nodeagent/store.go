package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// DefaultStateDir is where the node agent binary keeps its NetnsStore.
const DefaultStateDir = "/var/run/ztunnel/pods"

// NetnsRecord is what the agent remembers of a pod the CNI plugin handed
// over, so that a restarted agent finds the pod's network namespace again.
type NetnsRecord struct {
	UID       string `json:"uid"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	// Netns is CNI_NETNS as the plugin reported it.
	Netns string `json:"netns"`
}

// NetnsStore persists uid → network namespace path, one JSON file per pod
// in a directory (written atomically, so a crash leaves either the old or
// the new record). It holds no open files and is safe for concurrent use
// on distinct uids; the Agent serialises its calls anyway.
type NetnsStore struct {
	dir string
}

// NewNetnsStore validates dir; the directory is created on first Save.
func NewNetnsStore(dir string) (*NetnsStore, error) {
	if dir == "" {
		return nil, errors.New("nodeagent: state directory is empty")
	}
	return &NetnsStore{dir: dir}, nil
}

// Dir returns the store's directory.
func (s *NetnsStore) Dir() string { return s.dir }

// validUID refuses uids that are not a plain file name: they come from
// CNI_ARGS.
func validUID(uid string) error {
	if uid == "" || len(uid) > 128 || strings.ContainsAny(uid, "/\\\x00") || strings.HasPrefix(uid, ".") {
		return fmt.Errorf("nodeagent: pod uid %q cannot name a state file", uid)
	}
	return nil
}

func (s *NetnsStore) path(uid string) string { return filepath.Join(s.dir, uid+".json") }

// Save records rec, replacing an earlier record for the same uid.
func (s *NetnsStore) Save(rec NetnsRecord) error {
	if err := validUID(rec.UID); err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("nodeagent: state directory: %w", err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("nodeagent: encode state: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("nodeagent: write state: %w", err)
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("nodeagent: write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path(rec.UID)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("nodeagent: write state: %w", err)
	}
	return nil
}

// Delete forgets uid; a missing record is not an error.
func (s *NetnsStore) Delete(uid string) error {
	if err := validUID(uid); err != nil {
		return err
	}
	if err := os.Remove(s.path(uid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("nodeagent: delete state: %w", err)
	}
	return nil
}

// Load returns every record by uid. A missing directory is an empty store;
// unreadable or malformed files are logged and skipped (and left for the
// caller's clean-up to Delete).
func (s *NetnsStore) Load(log *slog.Logger) (map[string]NetnsRecord, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]NetnsRecord{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nodeagent: read state directory: %w", err)
	}
	out := make(map[string]NetnsRecord, len(entries))
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		uid := strings.TrimSuffix(name, ".json")
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			log.Warn("pod state unreadable", "file", name, "err", err)
			continue
		}
		var rec NetnsRecord
		if err := json.Unmarshal(data, &rec); err != nil || rec.UID != uid || rec.Netns == "" {
			log.Warn("pod state malformed; ignored", "file", name, "err", err)
			out[uid] = NetnsRecord{UID: uid}
			continue
		}
		out[uid] = rec
	}
	return out, nil
}
