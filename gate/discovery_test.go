package gate_test

import (
	"encoding/json"
	"sort"
	"testing"

	"github.com/latchgate/latchgate/gate/gatetest"
)

func TestDiscovery(t *testing.T) {
	s := gatetest.NewServer(t)
	c := s.Client()
	r := gatetest.Do(t, c, "GET", "/v1/actions", nil, nil)
	wantStatus(t, r, 200, "")
	var list struct {
		Actions []struct {
			ID string `json:"action_id"`
		}
	}
	if err := json.Unmarshal(r.Body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Actions) < 26 {
		t.Fatalf("GET /v1/actions lists %d actions, want the catalogue (≥ 26)", len(list.Actions))
	}
	ids := make([]string, len(list.Actions))
	for i, a := range list.Actions {
		ids[i] = a.ID
	}
	if !sort.StringsAreSorted(ids) {
		t.Errorf("actions not sorted by id: %v", ids)
	}

	tests := []struct {
		id     string
		egress any
	}{
		{"echo", "none"},
		{"github_pr_merge", map[string]any{"proxy_allowlist": map[string]any{"allowed_domains": []any{"api.github.com"}}}},
	}
	for _, tt := range tests {
		r := gatetest.Do(t, c, "GET", "/v1/actions/"+tt.id, nil, nil)
		wantStatus(t, r, 200, "")
		m := r.JSON()
		for _, k := range []string{"action_id", "version", "description", "risk_level", "required_scopes", "side_effects", "cost_usd_cents", "digest", "input_schema", "egress"} {
			if _, ok := m[k]; !ok {
				t.Errorf("GET /v1/actions/%s lacks %q", tt.id, k)
			}
		}
		got, _ := json.Marshal(m["egress"])
		want, _ := json.Marshal(tt.egress)
		if string(got) != string(want) {
			t.Errorf("%s egress = %s, want %s", tt.id, got, want)
		}
		sr := gatetest.Do(t, c, "GET", "/v1/actions/"+tt.id+"/schema/request", nil, nil)
		wantStatus(t, sr, 200, "")
		if sr.JSON()["type"] != "object" {
			t.Errorf("%s schema = %s", tt.id, sr.Body)
		}
	}
	if m := gatetest.Do(t, c, "GET", "/v1/actions/github_pr_merge", nil, nil).JSON(); m["risk_level"] != "critical" {
		t.Errorf("github_pr_merge risk = %v, want critical", m["risk_level"])
	}
	wantStatus(t, gatetest.Do(t, c, "GET", "/v1/actions/nope", nil, nil), 404, "action_not_found")
	wantStatus(t, gatetest.Do(t, c, "GET", "/v1/actions/Bad-Id", nil, nil), 404, "action_not_found")
	// JWKS: lease keys.
	j := gatetest.Do(t, c, "GET", "/.well-known/jwks.json", nil, nil)
	wantStatus(t, j, 200, "")
	if keys, _ := j.JSON()["keys"].([]any); len(keys) == 0 {
		t.Errorf("jwks has no keys: %s", j.Body)
	}
	wantStatus(t, gatetest.Do(t, c, "GET", "/healthz", nil, nil), 200, "")
	rz := gatetest.Do(t, c, "GET", "/readyz", nil, nil)
	wantStatus(t, rz, 200, "")
	for _, k := range []string{"status", "store", "policy", "ledger", "egress_proxy", "actions_registered", "version"} {
		if _, ok := rz.JSON()[k]; !ok {
			t.Errorf("readyz lacks %q: %s", k, rz.Body)
		}
	}
}
