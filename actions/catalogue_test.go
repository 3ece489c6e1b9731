package actions

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

// catalogueSecrets holds a value for every secret the catalogue uses.
var catalogueSecrets = map[string]string{
	"GITHUB_TOKEN":          "ghp_testtoken0123456789",
	"SLACK_BOT_TOKEN":       "xoxb-test-0123456789",
	"DISCORD_BOT_TOKEN":     "discord.test.0123456789",
	"MS_GRAPH_TOKEN":        "eyJ0graph.test.0123456789",
	"TELEGRAM_BOT_TOKEN":    "123456:ABC-telegram_test",
	"GITLAB_TOKEN":          "glpat-test0123456789",
	"JIRA_OAUTH_TOKEN":      "jira-oauth-test-0123456789",
	"LINEAR_API_KEY":        "lin_api_test0123456789",
	"NOTION_TOKEN":          "secret_notiontest0123456789",
	"SENDGRID_API_KEY":      "SG.test.0123456789",
	"PAGERDUTY_ROUTING_KEY": "R0123456789abcdef0123456789abcdef",
	"STRIPE_API_KEY":        "rk_test_0123456789",
}

func canonJSON(t *testing.T, b []byte) string {
	t.Helper()
	c, err := jcs.Transform(b)
	if err != nil {
		t.Fatalf("jcs(%s) = %v", b, err)
	}
	return string(c)
}

func TestCatalogue(t *testing.T) {
	reg := catalogue(t)
	s := newStub(t)
	r := s.runner(t, catalogueSecrets)
	tests := []struct {
		action  string
		args    string
		host    string
		method  string
		uri     string
		headers map[string]string
		body    string // JSON; "" = no body
	}{
		{"http_fetch", `{"url":"https://api.github.com/zen?x=1"}`, "api.github.com", "GET", "/zen?x=1",
			map[string]string{"Accept": "application/json, text/plain;q=0.9, */*;q=0.5", "User-Agent": "latchgate"}, ""},
		{"http_post", `{"url":"https://httpbin.org/post","body":{"a":[1,2.5,true,null]}}`, "httpbin.org", "POST", "/post",
			map[string]string{"Content-Type": "application/json"}, `{"a":[1,2.5,true,null]}`},
		{"http_put", `{"url":"https://httpbin.org/put","body":"text"}`, "httpbin.org", "PUT", "/put",
			map[string]string{"Content-Type": "application/json"}, `"text"`},
		{"http_patch", `{"url":"https://postman-echo.com/patch","body":{"k":"v"}}`, "postman-echo.com", "PATCH", "/patch",
			map[string]string{"Content-Type": "application/json"}, `{"k":"v"}`},
		{"http_delete", `{"url":"https://httpbin.org/delete"}`, "httpbin.org", "DELETE", "/delete", nil, ""},
		{"webhook_notify", `{"url":"https://hooks.zapier.com/hooks/catch/1/abc/","event":"deploy","message":"done"}`, "hooks.zapier.com", "POST", "/hooks/catch/1/abc/",
			nil, `{"event":"deploy","message":"done","source":"latchgate"}`},
		{"slack_post", `{"channel":"C123","text":"hello <world> & co"}`, "slack.com", "POST", "/api/chat.postMessage",
			map[string]string{"Authorization": "Bearer xoxb-test-0123456789", "Content-Type": "application/json; charset=utf-8"}, `{"channel":"C123","text":"hello <world> & co"}`},
		{"discord_post", `{"channel_id":"123456789","content":"hi"}`, "discord.com", "POST", "/api/v10/channels/123456789/messages",
			map[string]string{"Authorization": "Bot discord.test.0123456789"}, `{"allowed_mentions":{"parse":[]},"content":"hi"}`},
		{"teams_post", `{"team_id":"0c2d3b8e-4a1f-4c5e-9d7b-1a2b3c4d5e6f","channel_id":"19:abc@thread.tacv2","content":"hi"}`, "graph.microsoft.com", "POST",
			"/v1.0/teams/0c2d3b8e-4a1f-4c5e-9d7b-1a2b3c4d5e6f/channels/19:abc@thread.tacv2/messages",
			map[string]string{"Authorization": "Bearer eyJ0graph.test.0123456789"}, `{"body":{"content":"hi","contentType":"text"}}`},
		{"telegram_send", `{"chat_id":42,"text":"hi"}`, "api.telegram.org", "POST", "/bot123456:ABC-telegram_test/sendMessage",
			nil, `{"chat_id":42,"text":"hi"}`},
		{"github_read", `{"owner":"octo","repo":"hello.world"}`, "api.github.com", "GET", "/repos/octo/hello.world",
			map[string]string{"Authorization": "Bearer ghp_testtoken0123456789", "Accept": "application/vnd.github+json", "X-Github-Api-Version": "2022-11-28"}, ""},
		{"github_create_issue", `{"owner":"octo","repo":"r","title":"Bug","labels":["a","b"]}`, "api.github.com", "POST", "/repos/octo/r/issues",
			map[string]string{"Authorization": "Bearer ghp_testtoken0123456789"}, `{"labels":["a","b"],"title":"Bug"}`},
		{"github_comment_issue", `{"owner":"octo","repo":"r","issue_number":7,"body":"thanks"}`, "api.github.com", "POST", "/repos/octo/r/issues/7/comments",
			map[string]string{"Authorization": "Bearer ghp_testtoken0123456789"}, `{"body":"thanks"}`},
		{"github_pr_create", `{"owner":"octo","repo":"r","title":"T","head":"feat","base":"main","draft":true}`, "api.github.com", "POST", "/repos/octo/r/pulls",
			map[string]string{"Authorization": "Bearer ghp_testtoken0123456789"}, `{"base":"main","draft":true,"head":"feat","title":"T"}`},
		{"github_pr_merge", `{"owner":"octo","repo":"r","pull_number":12,"merge_method":"squash"}`, "api.github.com", "PUT", "/repos/octo/r/pulls/12/merge",
			map[string]string{"Authorization": "Bearer ghp_testtoken0123456789"}, `{"merge_method":"squash"}`},
		{"gitlab_create_issue", `{"project_id":"group/proj","title":"T","labels":"bug"}`, "gitlab.com", "POST", "/api/v4/projects/group%2Fproj/issues",
			map[string]string{"Private-Token": "glpat-test0123456789"}, `{"labels":"bug","title":"T"}`},
		{"jira_create_issue", `{"cloud_id":"11111111-2222-3333-4444-555555555555","project_key":"OPS","summary":"S","issue_type":"Task"}`, "api.atlassian.com", "POST",
			"/ex/jira/11111111-2222-3333-4444-555555555555/rest/api/3/issue",
			map[string]string{"Authorization": "Bearer jira-oauth-test-0123456789"}, `{"fields":{"issuetype":{"name":"Task"},"project":{"key":"OPS"},"summary":"S"}}`},
		{"linear_create_issue", `{"team_id":"team1","title":"T"}`, "api.linear.app", "POST", "/graphql",
			map[string]string{"Authorization": "lin_api_test0123456789"},
			`{"query":"mutation IssueCreate($input: IssueCreateInput!) { issueCreate(input: $input) { success issue { id identifier url } } }","variables":{"input":{"teamId":"team1","title":"T"}}}`},
		{"notion_create_page", `{"parent_page_id":"0123456789abcdef0123456789abcdef","title":"T","content":"C"}`, "api.notion.com", "POST", "/v1/pages",
			map[string]string{"Authorization": "Bearer secret_notiontest0123456789", "Notion-Version": "2022-06-28"},
			`{"children":[{"object":"block","paragraph":{"rich_text":[{"text":{"content":"C"},"type":"text"}]},"type":"paragraph"}],"parent":{"page_id":"0123456789abcdef0123456789abcdef"},"properties":{"title":{"title":[{"text":{"content":"T"}}]}}}`},
		{"sendgrid_send", `{"to":"a@example.com","from":"b@example.com","subject":"S","text":"T"}`, "api.sendgrid.com", "POST", "/v3/mail/send",
			map[string]string{"Authorization": "Bearer SG.test.0123456789"},
			`{"content":[{"type":"text/plain","value":"T"}],"from":{"email":"b@example.com"},"personalizations":[{"to":[{"email":"a@example.com"}]}],"subject":"S"}`},
		{"pagerduty_event", `{"event_action":"trigger","summary":"S","source":"src","severity":"error"}`, "events.pagerduty.com", "POST", "/v2/enqueue",
			nil, `{"event_action":"trigger","payload":{"severity":"error","source":"src","summary":"S"},"routing_key":"R0123456789abcdef0123456789abcdef"}`},
		{"stripe_read", `{"resource":"customers","id":"cus_123"}`, "api.stripe.com", "GET", "/v1/customers/cus_123",
			map[string]string{"Authorization": "Bearer rk_test_0123456789"}, ""},
		{"wikipedia_read", `{"lang":"de","title":"Rock & Roll/Musik"}`, "de.wikipedia.org", "GET", "/api/rest_v1/page/summary/Rock%20&%20Roll%2FMusik", nil, ""},
		{"hn_top", ``, "hacker-news.firebaseio.com", "GET", "/v0/topstories.json", nil, ""},
		{"exchange_rate", `{"base":"EUR","symbols":"USD,GBP"}`, "api.frankfurter.app", "GET", "/latest?from=EUR&to=USD%2CGBP", nil, ""},
	}
	seen := map[string]bool{"echo": true}
	for _, tc := range tests {
		seen[tc.action] = true
		t.Run(tc.action, func(t *testing.T) {
			a, ok := reg.Get(tc.action)
			if !ok {
				t.Fatalf("Get(%s) missing", tc.action)
			}
			p, err := a.Prepare(json.RawMessage(tc.args), nil)
			if err != nil {
				t.Fatalf("Prepare(%s) = %v", tc.args, err)
			}
			if len(p.Unresolved) != 0 || len(p.Forbidden) != 0 {
				t.Fatalf("Prepare(%s): unresolved %v forbidden %v, want none", tc.args, p.Unresolved, p.Forbidden)
			}
			before := len(s.requests())
			res := r.Execute(context.Background(), p, GrantInfo{ID: "g-" + tc.action})
			if res.Kind != KindSuccess || res.StatusCode != 200 {
				t.Fatalf("Execute = %s %d %q, want success 200", res.Kind, res.StatusCode, res.Summary)
			}
			reqs := s.requests()
			if len(reqs) != before+1 {
				t.Fatalf("stub saw %d requests, want 1", len(reqs)-before)
			}
			got := reqs[len(reqs)-1]
			if got.Method != tc.method || got.RequestURI != tc.uri || got.Host != tc.host {
				t.Errorf("request = %s %s (Host %s), want %s %s (Host %s)", got.Method, got.RequestURI, got.Host, tc.method, tc.uri, tc.host)
			}
			for k, v := range tc.headers {
				if g := got.Header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			if tc.body == "" {
				if len(got.Body) != 0 {
					t.Errorf("body = %s, want none", got.Body)
				}
			} else if g, w := canonJSON(t, got.Body), canonJSON(t, []byte(tc.body)); g != w {
				t.Errorf("body = %s, want %s", g, w)
			}
			if len(res.Hosts) != 1 || res.Hosts[0] != tc.host {
				t.Errorf("Hosts = %v, want [%s]", res.Hosts, tc.host)
			}
			if strings.Contains(string(res.Output), "0123456789") {
				t.Errorf("Output %s holds a secret", res.Output)
			}
		})
	}
	for _, a := range reg.List() {
		if !seen[a.ID] {
			t.Errorf("manifest %s has no catalogue test", a.ID)
		}
	}
	if reg.Len() < 26 {
		t.Errorf("catalogue has %d actions, want ≥ 26", reg.Len())
	}
}
