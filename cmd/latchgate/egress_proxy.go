package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/latchgate/latchgate/egress"
	"github.com/spf13/cobra"
)

// newEgressProxyCmd is `latchgate egress-proxy`: the allowlist forward proxy
// on its own, for agents in sandboxes that must reach a few APIs.
func newEgressProxyCmd() *cobra.Command {
	var (
		listen    string
		allow     []string
		allowCIDR []string
		logLevel  string
	)
	cmd := &cobra.Command{
		Use:   "egress-proxy --listen ADDR --allow HOST[:PORT] ...",
		Short: "Run the allowlist egress proxy standalone (HTTP CONNECT and absolute-form HTTP)",
		Long: `Run LatchGate's egress proxy on its own, for agents in a sandbox that must
reach a few hosts (for example an LLM API) and nothing else.

The proxy accepts HTTP CONNECT (for https) and absolute-form http:// requests.
Every connection is checked the same way the gate checks its own egress: the
host is normalised (lowercase, one trailing dot removed, IDN to punycode),
numeric hosts must be canonical, the host and port must match an --allow
entry, the name is resolved once, and if any resolved address is a private or
special-purpose address the connection is refused. Refusals answer 403 with
the reason in the X-Latchgate-Egress-Denied header. HTTP_PROXY and
HTTPS_PROXY are ignored.

--allow takes HOST[:PORT]; the port defaults to 443. HOST is an exact name
(api.example.com), a wildcard for names below a domain (*.example.com, which
does not match example.com itself), or an IP literal ([2001:db8::1]:8443).
Entries must be written normalised: lowercase, punycode for IDNs.

--egress-allow-cidr is for tests only: it lets the proxy reach a denied range
(such as a loopback test server) and is logged loudly at start.`,
		Example: `  # Let a sandboxed agent reach only the OpenAI API over https:
  latchgate egress-proxy --listen 127.0.0.1:3128 --allow api.openai.com
  HTTPS_PROXY=http://127.0.0.1:3128 my-agent

  # Several hosts, one on a non-default port:
  latchgate egress-proxy --listen 127.0.0.1:3128 \
    --allow api.anthropic.com --allow '*.example.com' --allow api.internal-llm.example:8443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(logLevel).With().Str("component", "egress-proxy").Logger()
			if len(allow) == 0 {
				return &exitError{code: 2, err: fmt.Errorf("egress-proxy: at least one --allow HOST[:PORT] is required")}
			}
			var rules []egress.Rule
			for _, a := range allow {
				r, err := egress.ParseRule(a)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--allow %q: %w", a, err)}
				}
				rules = append(rules, r)
			}
			var cidrs []netip.Prefix
			for _, c := range allowCIDR {
				p, err := netip.ParsePrefix(c)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--egress-allow-cidr %q: want a CIDR such as 127.0.0.1/32", c)}
				}
				cidrs = append(cidrs, p)
			}
			for _, p := range cidrs { // error level: never hidden by --log-level
				log.Error().Str("cidr", p.String()).Msg("EGRESS TEST ESCAPE HATCH: connections to this denied range are allowed (--egress-allow-cidr); never use this in production")
			}
			dialer, err := egress.NewDialer(egress.Config{AllowCIDRs: cidrs}, egress.Deps{Logger: log})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			al := (*egress.Allowlist)(nil).With(rules...)
			proxy, err := egress.NewProxy(egress.ProxyConfig{Allow: al}, dialer, egress.Deps{Logger: log})
			if err != nil {
				return err
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
			if err != nil {
				return fmt.Errorf("egress-proxy: listen %s: %w", listen, err)
			}
			entries := make([]string, 0, len(rules))
			for _, r := range rules {
				entries = append(entries, r.String())
			}
			log.Info().Str("listen", ln.Addr().String()).Strs("allow", entries).Msg("egress proxy listening")
			err = proxy.Run(ctx, ln)
			log.Info().Msg("egress proxy stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:3128", "TCP address to listen on")
	f.StringArrayVar(&allow, "allow", nil, "allowed HOST[:PORT] (repeatable; port defaults to 443; *.example.com for subdomains)")
	f.StringArrayVar(&allowCIDR, "egress-allow-cidr", nil, "TEST ONLY: let the proxy reach this denied range (repeatable, logged loudly)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
