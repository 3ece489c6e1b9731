package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/latchgate/latchgate/actions"
	"github.com/latchgate/latchgate/atomicfile"
	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/definitions"
	"github.com/latchgate/latchgate/egress"
	"github.com/latchgate/latchgate/events"
	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
	"github.com/latchgate/latchgate/webhooks"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gate daemon on its Unix sockets",
		Long: `Run the LatchGate daemon.

Agents talk to the client socket; operators use the admin socket. Every flag
has an environment twin (LATCHGATE_<FLAG>, e.g. LATCHGATE_REDIS_URL) and a
field in the YAML config file; flags win over the environment, which wins
over the file. --dev changes defaults only (embedded store, every action
allowed for "*", trust agent_id, the gate's uid is an operator, no rate
limits); explicit flags and config still win.

Signals: SIGTERM/SIGINT drain in-flight requests, flush the ledger, remove
the sockets and exit 0; SIGHUP reloads policy and manifests atomically (a
broken set is rejected and the old one keeps serving).`,
		Example: `  # A local development gate with sockets under $XDG_RUNTIME_DIR or /run:
  latchgate serve --dev --state-dir ./.dev/state

  # Production with a shared Redis and a config file:
  latchgate serve --config /etc/latchgate/latchgate.yaml --redis-url redis://10.0.0.5:6379/0`,
		Args: cobra.NoArgs,
		RunE: runServe,
	}
	addServeFlags(cmd.Flags())
	f := cmd.Flags()
	f.String("cpu-profile", "", "write a CPU profile (go tool pprof) of the whole run to this file")
	f.String("heap-profile", "", "write a heap profile to this file at exit (after a GC)")
	_ = f.MarkHidden("cpu-profile")
	_ = f.MarkHidden("heap-profile")
	return cmd
}

// addServeFlags declares the configuration flags (serve and doctor).
func addServeFlags(f *pflag.FlagSet) {
	f.String("config", "", "YAML config file (LATCHGATE_CONFIG)")
	f.String("socket", "", "client socket path (default /run/latchgate/gate.sock, else $XDG_RUNTIME_DIR/latchgate/gate.sock, else /tmp/latchgate-<uid>/gate.sock)")
	f.String("admin-socket", "", "admin socket path (default like --socket with latchgate-admin/gate-admin.sock)")
	f.String("state-dir", "", "state directory (default $XDG_STATE_HOME/latchgate or /var/lib/latchgate)")
	f.String("keys-dir", "", "signing keys directory (default <state-dir>/keys; shared by gates on one Redis)")
	f.String("redis-url", "", "Redis URL for shared state (default: embedded store)")
	f.String("policy-dir", "", "directory whose *.rego and data.json replace the embedded policy")
	f.String("manifests-dir", "", "directory of *.yaml manifests overriding embedded ones by action_id")
	f.String("secrets-file", "", "YAML map of secrets (mode 0600); LATCHGATE_SECRET_<NAME> wins")
	f.Bool("dev", false, "local development defaults (see above)")
	f.String("http", "", "also serve client routes on this TCP address (requires --unsafe-expose-http)")
	f.Bool("unsafe-expose-http", false, "confirm --http: TCP peers have no credentials (principal tcp:anonymous)")
	f.String("log-level", "", "debug, info, warn or error (default info)")
	f.String("gate-id", "", "this gate's id in receipts (default: persisted in <state-dir>/gate-id)")
	f.StringArray("egress-allow-cidr", nil, "TEST ONLY: let egress reach this denied range (repeatable, logged loudly)")
	f.String("policy-timeout", "", "bound on one policy evaluation; a slower one is refused with 503 policy_unavailable (default 250ms)")
}

// runtime is a wired gate and what must be closed after it.
type runtime struct {
	cfg       *fileConfig
	log       zerolog.Logger
	gate      *gate.Gate
	hooks     *webhooks.Service
	events    *events.Journal
	st        store.Store
	led       *receipts.Ledger
	client    string
	admin     string
	closeOnce sync.Once
}

func env(k string) (string, bool) { return os.LookupEnv(k) }

func runServe(cmd *cobra.Command, _ []string) error {
	cfgPath, _ := cmd.Flags().GetString("config")
	if cfgPath == "" {
		cfgPath = os.Getenv("LATCHGATE_CONFIG")
	}
	cfg, err := loadFileConfig(cfgPath)
	if err != nil {
		return err
	}
	if err := cfg.overlay(cmd.Flags(), env); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	rt, err := wire(cfg, log)
	if err != nil {
		return err
	}
	defer rt.close()
	cpuProfile, _ := cmd.Flags().GetString("cpu-profile")
	heapProfile, _ := cmd.Flags().GetString("heap-profile")
	stopProfiles, err := startProfiles(cpuProfile, heapProfile)
	if err != nil {
		return err
	}
	defer stopProfiles()
	return rt.serve(ctx)
}

// startProfiles starts a CPU profile into cpuPath (if set); the returned
// function stops it and writes a heap profile into heapPath (if set).
func startProfiles(cpuPath, heapPath string) (func(), error) {
	var cpuFile *os.File
	if cpuPath != "" {
		f, err := os.OpenFile(cpuPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		cpuFile = f
	}
	return func() {
		if cpuFile != nil {
			pprof.StopCPUProfile()
			_ = cpuFile.Close()
		}
		if heapPath != "" {
			if f, err := os.OpenFile(heapPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
				goruntime.GC()
				_ = pprof.WriteHeapProfile(f)
				_ = f.Close()
			}
		}
	}, nil
}

func newLogger(level string) zerolog.Logger {
	lvl := zerolog.InfoLevel
	if level != "" {
		if l, err := zerolog.ParseLevel(level); err == nil {
			lvl = l
		}
	}
	var l zerolog.Logger
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339})
	} else {
		l = zerolog.New(os.Stderr)
	}
	return l.Level(lvl).With().Timestamp().Logger()
}

// gateID returns the configured id or one persisted in the state dir.
func gateID(cfg *fileConfig) (string, error) {
	if cfg.GateID != "" {
		return cfg.GateID, nil
	}
	p := filepath.Join(cfg.StateDir, "gate-id")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	host, _ := os.Hostname()
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	id := strings.ToLower(host) + "-" + hex.EncodeToString(rb[:])
	if err := atomicfile.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("gate id: %w", err)
	}
	return id, nil
}

// wire builds every part from the configuration.
func wire(cfg *fileConfig, log zerolog.Logger) (*runtime, error) {
	cfg.fillPathDefaults()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	clk := clock.Real{}
	id, err := gateID(cfg)
	if err != nil {
		return nil, err
	}
	log = log.With().Str("gate_id", id).Logger()
	// Logged at error level: a log level that hides warnings must not hide
	// this (README: "logged loudly").
	for _, c := range cfg.Egress.AllowCIDRs {
		log.Error().Str("cidr", c).Msg("EGRESS TEST ESCAPE HATCH: connections to this denied range are allowed (--egress-allow-cidr); never use this in production")
	}

	keys, err := lease.LoadKeys(cfg.KeysDir, clk)
	if err != nil {
		return nil, err
	}
	auth, err := lease.New(leaseConfig(cfg), keys, lease.Deps{Clock: clk, Logger: log})
	if err != nil {
		return nil, err
	}

	var st store.Store
	mode := "embedded"
	// fsync time is where a slow disk shows first (BENCHMARKS.md, "Memory
	// over time"): operators can tell a disk stall from a slow gate.
	fsyncBuckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}
	commitHist := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "latchgate_ledger_commit_seconds",
		Help:    "Ledger group commits: write and fsync of the ledger, with the store journal's fsync beside it.",
		Buckets: fsyncBuckets,
	})
	storeFsyncHist := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "latchgate_store_fsync_seconds",
		Help:    "fsyncs of the embedded store's journal.",
		Buckets: fsyncBuckets,
	})
	observe := func(h prometheus.Histogram) func(time.Duration) {
		return func(d time.Duration) { h.Observe(d.Seconds()) }
	}
	// Only the embedded store fsyncs; its histogram is registered below in
	// embedded mode only.
	sdeps := store.Deps{Clock: clk, Logger: log, ObserveFsync: observe(storeFsyncHist)}
	if cfg.RedisURL != "" {
		mode = "redis"
		// go-redis logs pool errors through a process-wide logger; route it
		// into ours (cmd is the only place allowed to set globals).
		redis.SetLogger(redisLogger{log.With().Str("component", "redis").Logger()})
		mac, err := lease.LoadSecret(cfg.KeysDir, "store-mac.key", 32)
		if err != nil {
			return nil, err
		}
		rs, err := store.NewRedis(store.RedisConfig{URL: cfg.RedisURL, Prefix: cfg.Store.Prefix, Timeout: cfg.Store.Timeout, ReceiptTTL: cfg.Store.ReceiptTTL, MACKey: mac}, sdeps)
		if err != nil {
			return nil, err
		}
		// A Redis that may evict keys could drop replay entries,
		// revocations and budgets: refuse to start on one. A Redis that
		// is down is checked again by every readiness probe.
		switch err := rs.CheckEviction(context.Background()); {
		case errors.Is(err, store.ErrEvicting):
			_ = rs.Close()
			return nil, err
		case err != nil:
			log.Warn().Err(err).Msg("redis eviction policy not checked yet (the readiness probe checks it)")
		}
		st = rs
	} else {
		st, err = store.OpenEmbedded(store.EmbeddedConfig{Dir: filepath.Join(cfg.StateDir, "store")}, sdeps)
		if err != nil {
			return nil, err
		}
	}
	ldeps := receipts.Deps{Clock: clk, Logger: log, Syncer: st, ObserveCommit: observe(commitHist)}
	if rs, ok := st.(*store.Redis); ok {
		ldeps.OnReceipt = rs.CopyReceipt // other gates sharing Redis serve our receipts
	}
	lcfg := receipts.Config{Dir: filepath.Join(cfg.StateDir, "ledger"), GateID: id,
		BusyCommitWindow: cfg.Ledger.BusyCommitWindow, BusyCommitOps: cfg.Ledger.BusyCommitOps}
	if lcfg.BusyCommitWindow < 0 {
		lcfg.BusyCommitWindow = -1 // never wait
	}
	led, err := receipts.Open(lcfg, ldeps)
	if err != nil {
		_ = st.Close()
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), commitHist)
	if cfg.RedisURL == "" {
		reg.MustRegister(storeFsyncHist)
	}
	if rs, ok := st.(*store.Redis); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "latchgate_receipt_copies_dropped_total",
			Help: "Receipt copies to Redis not made (queue full or Redis down); the ledger keeps every receipt.",
		}, func() float64 { return float64(rs.ReceiptCopiesDropped()) }))
	}
	egMetrics, err := egress.NewPromMetrics(reg)
	if err != nil {
		return nil, err
	}
	cidrs := make([]netip.Prefix, 0, len(cfg.Egress.AllowCIDRs))
	for _, c := range cfg.Egress.AllowCIDRs {
		p, _ := netip.ParsePrefix(c)
		cidrs = append(cidrs, p)
	}
	dialer, err := egress.NewDialer(egress.Config{AllowCIDRs: cidrs}, egress.Deps{Logger: log.With().Str("component", "egress").Logger(), Metrics: egMetrics, Clock: clk})
	if err != nil {
		return nil, err
	}
	secrets, err := actions.NewSecretSource(secretEnv(), cfg.SecretsFile)
	if err != nil {
		return nil, err
	}
	runner, err := actions.NewRunner(actions.RunnerConfig{}, actions.RunnerDeps{Dialer: dialer, Secrets: secrets, Clock: clk, Logger: log})
	if err != nil {
		return nil, err
	}

	maxBody := maxBodyBytes(cfg)
	load := func() (*gate.Snapshot, error) {
		reg, err := actions.Load(actions.LoadConfig{FS: definitions.Manifests, Dir: cfg.ManifestsDir, Dev: cfg.Dev, MaxRequestCap: maxBody}, log)
		if err != nil {
			return nil, err
		}
		pol, err := policy.New(policy.Config{FS: definitions.Policies, Dir: cfg.PolicyDir, Timeout: cfg.Policy.Timeout, AllowAllActions: cfg.Dev && cfg.PolicyDir == "", DecisionCacheSize: cfg.Policy.DecisionCacheSize}, policy.Deps{Logger: log})
		if err != nil {
			return nil, err
		}
		if on, paths, why := pol.DecisionCache(); on {
			log.Info().Str("policy_version", pol.Version()).Strs("key_paths", paths).Msg("policy decision cache on")
		} else {
			log.Info().Str("policy_version", pol.Version()).Str("reason", why).Msg("policy decision cache off")
		}
		return &gate.Snapshot{Actions: reg, Policy: pol}, nil
	}
	snap, err := load()
	if err != nil {
		_ = led.Close()
		_ = st.Close()
		return nil, err
	}
	gcfg, err := gateConfig(cfg, id, mode, maxBody)
	if err != nil {
		return nil, err
	}
	evj, err := events.Open(events.Config{Path: filepath.Join(cfg.StateDir, "events", "events.log")}, clk, log)
	if err != nil {
		_ = led.Close()
		_ = st.Close()
		return nil, err
	}
	hooks, err := webhooks.New(cfg.webhookConfig(), webhooks.Deps{Source: evj, Dialer: dialer, Clock: clk, Logger: log})
	if err != nil {
		_ = evj.Close()
		_ = led.Close()
		_ = st.Close()
		return nil, err
	}
	g, err := gate.New(gcfg, gate.Deps{
		Store: st, Leases: auth, LeaseKey: keys, Ledger: led, Runner: runner, Initial: snap, Reload: load,
		Events: evj, Webhooks: hooks, Clock: clk, Logger: log, Metrics: reg, Gatherer: reg,
	})
	if err != nil {
		return nil, err
	}
	return &runtime{cfg: cfg, log: log, gate: g, hooks: hooks, events: evj, st: st, led: led, client: cfg.Socket, admin: cfg.AdminSocket}, nil
}

// redisLogger adapts zerolog to go-redis's logger.
type redisLogger struct{ l zerolog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.l.Warn().Msg(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// secretEnv collects the LATCHGATE_SECRET_<NAME> variables, keyed by
// their full names as actions.NewSecretSource expects.
func secretEnv() map[string]string {
	out := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, actions.SecretEnvPrefix) {
			out[k] = v
		}
	}
	return out
}

// leaseConfig maps the file config to lease.Config.
func leaseConfig(cfg *fileConfig) lease.Config {
	return lease.Config{
		DefaultTTL: cfg.Lease.DefaultTTL, MaxTTL: cfg.Lease.MaxTTL, SessionLifetime: cfg.Lease.SessionLifetime,
		ProofMaxAge: cfg.Proof.MaxAge, ProofFutureSkew: cfg.Proof.FutureSkew, RequireBodyHash: cfg.Proof.RequireBodyHash,
	}
}

// maxBodyBytes is limits.max_body_bytes, 1 MiB when unset.
func maxBodyBytes(cfg *fileConfig) int64 {
	if cfg.Limits.MaxBodyBytes == 0 {
		return 1 << 20
	}
	return cfg.Limits.MaxBodyBytes
}

// gateConfig maps the file config (with dev defaults) to gate.Config.
func gateConfig(cfg *fileConfig, id, mode string, maxBody int64) (gate.Config, error) {
	ops, err := resolveOperators(cfg.Admin.Operators)
	if err != nil {
		return gate.Config{}, err
	}
	if cfg.Dev {
		uid := uint32(os.Geteuid())
		if _, ok := ops[uid]; !ok {
			ops[uid] = "uid:" + strconv.Itoa(int(uid))
		}
	}
	idents := map[uint32]string{}
	for k, v := range cfg.Identity.Principals {
		n, err := strconv.ParseUint(k, 10, 32)
		if err != nil {
			return gate.Config{}, fmt.Errorf("identity.principals: key %q must be a numeric uid", k)
		}
		idents[uint32(n)] = v
	}
	trust := cfg.Dev
	if cfg.Identity.TrustAgentID != nil {
		trust = *cfg.Identity.TrustAgentID
	}
	leaseRate, execRate := 20.0, 0.0
	if cfg.Dev {
		leaseRate = 0
	}
	if cfg.Limits.LeaseRate != nil {
		leaseRate = *cfg.Limits.LeaseRate
	}
	if cfg.Limits.ExecRate != nil {
		execRate = *cfg.Limits.ExecRate
	}
	maxConns := cfg.Limits.MaxConns
	if cfg.Dev && maxConns == 0 {
		maxConns = 1024
	}
	principals := cfg.Principals
	if principals == nil {
		principals = map[string]gate.Principal{}
	}
	if _, ok := principals["*"]; !ok {
		p := gate.Principal{AllowedScopes: []string{"tools:call"}}
		if cfg.Dev {
			p.AllowedScopes = []string{"*"}
		}
		principals["*"] = p
	}
	return gate.Config{
		GateID: id, Dev: cfg.Dev, StoreMode: mode, PublicBaseURL: cfg.PublicBaseURL, MaxBodyBytes: maxBody,
		StoreTimeout: cfg.Store.Timeout, Operators: ops, AllowOperatorAgents: cfg.Identity.AllowOperatorAgents,
		TrustAgentID: trust, Identities: idents, Principals: principals, LeaseRate: leaseRate, ExecRate: execRate,
		PendingTTL: cfg.Approvals.PendingTTL, MaxPendingPerSession: cfg.Approvals.MaxPendingPerSession, MaxConns: maxConns,
		ApprovalSweep: cfg.Approvals.Sweep, LearnTTL: cfg.Approvals.LearnTTL,
	}, nil
}

// serve listens on the sockets and runs until ctx ends.
func (rt *runtime) serve(ctx context.Context) error {
	cln, err := listenUnix(rt.client, rt.cfg.SocketGroup)
	if err != nil {
		return err
	}
	aln, err := listenUnix(rt.admin, rt.cfg.Admin.SocketGroup)
	if err != nil {
		_ = cln.Close()
		return err
	}
	var tln net.Listener
	if rt.cfg.HTTP != "" {
		tln, err = net.Listen("tcp", rt.cfg.HTTP)
		if err != nil {
			_ = cln.Close()
			_ = aln.Close()
			return fmt.Errorf("listen on %s: %w", rt.cfg.HTTP, err)
		}
		rt.log.Warn().Str("addr", tln.Addr().String()).Msg("serving client routes over TCP (--unsafe-expose-http): peers have no credentials")
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = rt.gate.Reload()
			}
		}
	}()
	go rt.watchReadiness(ctx)

	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error { return rt.gate.Run(ectx, cln, gate.ListenerClient) })
	eg.Go(func() error { return rt.gate.Run(ectx, aln, gate.ListenerAdmin) })
	if tln != nil {
		eg.Go(func() error { return rt.gate.Run(ectx, tln, gate.ListenerTCP) })
	}
	eg.Go(func() error { return rt.gate.RunSweeper(ectx) })
	eg.Go(func() error { return rt.hooks.Run(ectx) })
	rt.log.Info().Str("socket", rt.client).Str("admin_socket", rt.admin).Str("state_dir", rt.cfg.StateDir).
		Bool("dev", rt.cfg.Dev).Str("version", gate.Version).Msg("latchgate serving")
	if rt.cfg.Dev {
		fmt.Fprintf(os.Stderr, "\nLatchGate dev gate is up.\n  client socket: %s\n  admin socket:  %s\n  state dir:     %s\nTry it:\n  %s status --admin-socket %s\n  go run ./sdk/examples/hello --socket %s\n\n",
			rt.client, rt.admin, rt.cfg.StateDir, os.Args[0], rt.admin, rt.client)
	}
	err = eg.Wait()
	rt.log.Info().Msg("draining done; flushing the ledger")
	return err
}

// watchReadiness logs when the gate becomes ready or not ready.
func (rt *runtime) watchReadiness(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := !rt.gate.Ready(ctx)
	for {
		ready := rt.gate.Ready(ctx)
		if ready != last {
			if ready {
				rt.log.Info().Msg("gate ready")
			} else {
				rt.log.Error().Msg("gate not ready: a dependency is unavailable; requests needing it get 503")
			}
			last = ready
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (rt *runtime) close() {
	rt.closeOnce.Do(func() {
		if err := rt.led.Close(); err != nil && !errors.Is(err, receipts.ErrClosed) {
			rt.log.Error().Err(err).Msg("ledger close")
		}
		if err := rt.events.Close(); err != nil {
			rt.log.Error().Err(err).Msg("events close")
		}
		if err := rt.st.Close(); err != nil {
			rt.log.Error().Err(err).Msg("store close")
		}
	})
}
