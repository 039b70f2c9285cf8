package installer

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-run/trellis/agent"
)

// TestConfigureTakesBackSavedConfig: when an upgrade's removal of the old version deleted
// agent.yaml, configure starts from the copy the MSI saved (agent.yaml.upgrade), applies the
// flags given over it, and removes the copy; a copy beside a file that still exists is only
// removed.
func TestConfigureTakesBackSavedConfig(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "trellis", "agent.yaml")
	if err := Configure(ctx, path, full(), ValidateAgentConfig); err != nil {
		t.Fatal(err)
	}
	saved := path + UpgradeConfigSuffix
	if err := os.Rename(path, saved); err != nil { // what the save and the old purge leave
		t.Fatal(err)
	}
	if err := Configure(ctx, path, Settings{Zone: "z9"}, ValidateAgentConfig); err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CellID != "cell-1" || cfg.BBS.URL != "https://bbs.example:8889" || cfg.Zone != "z9" {
		t.Errorf("restored config = cell %q, bbs %q, zone %q; want cell-1, the old BBS, z9", cfg.CellID, cfg.BBS.URL, cfg.Zone)
	}
	if _, err := os.Stat(saved); !os.IsNotExist(err) {
		t.Errorf("the saved copy is still there: %v", err)
	}

	// A stale copy beside a live file never wins over it.
	if err := os.WriteFile(saved, []byte("cell_id: stale\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Configure(ctx, path, Settings{Zone: "z8"}, ValidateAgentConfig); err != nil {
		t.Fatal(err)
	}
	if cfg, err := agent.LoadConfig(path); err != nil || cfg.CellID != "cell-1" || cfg.Zone != "z8" {
		t.Errorf("config = %+v, %v; want cell-1 in z8", cfg, err)
	}
	if _, err := os.Stat(saved); !os.IsNotExist(err) {
		t.Errorf("the stale copy is still there: %v", err)
	}
}
