// Package ring sets up dskit's hash ring for Strata: the KV store it lives in (memberlist gossip between
// processes, or in-memory within one), the lifecycler an ingester joins it with, and the ring client the
// distributor shards and replicates with.
package ring

import (
	"context"
	"flag"
	"net"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/grafana/dskit/dns"
	"github.com/grafana/dskit/flagext"
	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/kv/codec"
	"github.com/grafana/dskit/kv/memberlist"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// IngesterRingKey is the KV key of the ingester ring (Mimir's).
	IngesterRingKey = "ingester"

	StoreMemberlist = "memberlist"
	StoreInMemory   = "inmemory"
)

// MemberlistConfig is the gossip membership every process of a cluster shares.
type MemberlistConfig struct {
	// JoinMembers are host:port of other members (any subset; gossip finds the rest). Empty: no gossip, the
	// ring lives in memory in this process (strata all).
	JoinMembers []string `yaml:"join_members"`
	BindAddr    string   `yaml:"bind_addr"`
	BindPort    int      `yaml:"bind_port"`
	// AdvertiseAddr is the address other members reach this one at (default: the bind address, or the
	// first private address when binding to 0.0.0.0).
	AdvertiseAddr string `yaml:"advertise_addr"`
	// NodeName defaults to the hostname plus a random suffix.
	NodeName string `yaml:"node_name"`
}

// DefaultMemberlistConfig binds gossip on 0.0.0.0:7946, memberlist's usual port.
func DefaultMemberlistConfig() MemberlistConfig {
	return MemberlistConfig{BindAddr: "0.0.0.0", BindPort: 7946}
}

// Enabled reports whether this process gossips (has members to join).
func (c MemberlistConfig) Enabled() bool { return len(c.JoinMembers) > 0 }

// KV is the KV store the rings of one process live in.
type KV struct {
	store  string
	kvInit *memberlist.KVInitService
	logger log.Logger
	reg    prometheus.Registerer
	// stopping is set once the process shuts down (see Stopping).
	stopping *atomic.Bool
}

// Stopping tells the KV store that this process is shutting down: from then on, memberlist's errors are logged
// as warnings. Leaving the cluster while peers stop too (a whole cluster stopped at once) makes gossip fail on
// the closing transport and the leave broadcast time out; that is expected, and a clean stop logs no error.
func (k *KV) Stopping() { k.stopping.Store(true) }

// stoppingLogger logs errors as warnings once stopping is set.
type stoppingLogger struct {
	next     log.Logger
	stopping *atomic.Bool
}

func (l stoppingLogger) Log(keyvals ...any) error {
	if !l.stopping.Load() {
		return l.next.Log(keyvals...)
	}
	for i := 0; i+1 < len(keyvals); i += 2 {
		if keyvals[i] == level.Key() && keyvals[i+1] == level.ErrorValue() {
			keyvals = slices.Clone(keyvals)
			keyvals[i+1] = level.WarnValue()
			break
		}
	}
	return l.next.Log(keyvals...)
}

// NewKV returns the KV store for cfg: memberlist when it has members to join, else in-memory.
// The memberlist service (if any) must be run with Service. codecs are the codecs of values other than rings
// kept in the store (the HA tracker's): every member must register them, to merge and relay those values.
func NewKV(cfg MemberlistConfig, logger log.Logger, reg prometheus.Registerer, codecs ...codec.Codec) (*KV, error) {
	k := &KV{store: StoreInMemory, logger: logger, reg: reg, stopping: &atomic.Bool{}}
	if !cfg.Enabled() {
		return k, nil
	}
	var mcfg memberlist.KVConfig
	fs := flag.NewFlagSet("memberlist", flag.ContinueOnError)
	mcfg.RegisterFlags(fs) // dskit's defaults
	mcfg.JoinMembers = flagext.StringSliceCSVMulti(cfg.JoinMembers)
	mcfg.TCPTransport.BindAddrs = []string{cfg.BindAddr}
	mcfg.TCPTransport.BindPort = cfg.BindPort
	mcfg.AdvertiseAddr = cfg.AdvertiseAddr
	if mcfg.AdvertiseAddr == "" && cfg.BindAddr != "0.0.0.0" && cfg.BindAddr != "" {
		mcfg.AdvertiseAddr = cfg.BindAddr
	}
	mcfg.AdvertisePort = cfg.BindPort
	mcfg.NodeName = cfg.NodeName
	mcfg.Codecs = append([]codec.Codec{dskitring.GetCodec()}, codecs...)
	mcfg.MetricsNamespace = "strata"
	// Faster convergence than the WAN-ish defaults: a cluster of a few processes on a LAN or one host.
	mcfg.GossipInterval = 200 * time.Millisecond
	mcfg.PushPullInterval = 10 * time.Second
	mcfg.LeaveTimeout = 5 * time.Second
	mcfg.MinJoinBackoff = 200 * time.Millisecond
	mcfg.MaxJoinBackoff = 5 * time.Second
	mcfg.MaxJoinRetries = 50
	dnsProvider := dns.NewProvider(dns.GolangResolverType, 0, logger, prometheus.WrapRegistererWithPrefix("strata_memberlist_", reg))
	k.store = StoreMemberlist
	k.kvInit = memberlist.NewKVInitService(&mcfg, stoppingLogger{next: logger, stopping: k.stopping}, dnsProvider, reg)
	return k, nil
}

// Service returns the memberlist service to run (nil for the in-memory store).
func (k *KV) Service() services.Service {
	if k.kvInit == nil {
		return nil
	}
	return k.kvInit
}

func (k *KV) config() kv.Config {
	cfg := kv.Config{Store: k.store}
	if k.kvInit != nil {
		cfg.MemberlistKV = k.kvInit.GetMemberlistKV
	}
	return cfg
}

// NewClient returns a client of the store for values of codec c (registered with NewKV), named name in the
// KV metrics.
func (k *KV) NewClient(name string, c codec.Codec) (kv.Client, error) {
	client, err := kv.NewClient(k.config(), c, kv.RegistererWithKVName(k.reg, name), k.logger)
	return client, errors.Wrapf(err, "create KV client %s", name)
}

func (k *KV) client(name string) (kv.Client, error) {
	c, err := kv.NewClient(k.config(), dskitring.GetCodec(), kv.RegistererWithKVName(k.reg, name), k.logger)
	return c, errors.Wrapf(err, "create KV client for the %s ring", name)
}

// Config is one ring's settings.
type Config struct {
	ReplicationFactor    int           `yaml:"replication_factor"`
	ZoneAwarenessEnabled bool          `yaml:"zone_awareness_enabled"`
	HeartbeatPeriod      time.Duration `yaml:"heartbeat_period"`
	HeartbeatTimeout     time.Duration `yaml:"heartbeat_timeout"`
	// AutoForgetPeriod removes an instance that has not heartbeated for this long (crashed, never coming back).
	AutoForgetPeriod time.Duration `yaml:"auto_forget_period"`
	NumTokens        int           `yaml:"num_tokens"`
}

// DefaultConfig is Mimir's ingester ring: RF 3, 128 tokens, 15s heartbeats, 1m timeout.
func DefaultConfig() Config {
	return Config{ReplicationFactor: 3, HeartbeatPeriod: 15 * time.Second, HeartbeatTimeout: time.Minute, AutoForgetPeriod: 10 * time.Minute, NumTokens: 128}
}

// Validate checks the ring config.
func (c Config) Validate() error {
	switch {
	case c.ReplicationFactor < 1:
		return errors.Newf("ring: replication factor must be at least 1, got %d", c.ReplicationFactor)
	case c.HeartbeatPeriod <= 0 || c.HeartbeatTimeout <= c.HeartbeatPeriod:
		return errors.Newf("ring: heartbeat timeout (%s) must be longer than the heartbeat period (%s)", c.HeartbeatTimeout, c.HeartbeatPeriod)
	case c.NumTokens < 1:
		return errors.Newf("ring: num_tokens must be at least 1, got %d", c.NumTokens)
	}
	return nil
}

// NewClient returns a ring client (a dskit service to run) over the ring at key. Replication is capped at the
// number of instances in the ring, so a ring smaller than the replication factor (strata all, a cluster being
// built) still takes writes: each goes to every instance, and the quorum is a majority of those.
func NewClient(cfg Config, k *KV, name, key string, logger log.Logger, reg prometheus.Registerer) (*dskitring.Ring, error) {
	kvClient, err := k.client(name)
	if err != nil {
		return nil, err
	}
	rcfg := dskitring.Config{
		KVStore:              k.config(),
		HeartbeatTimeout:     cfg.HeartbeatTimeout,
		ReplicationFactor:    cfg.ReplicationFactor,
		ZoneAwarenessEnabled: cfg.ZoneAwarenessEnabled,
	}
	capped := &cappedStrategy{next: dskitring.NewDefaultReplicationStrategy()}
	r, err := dskitring.NewWithStoreClientAndStrategy(rcfg, name, key, kvClient, capped, prometheus.WrapRegistererWithPrefix("strata_", reg), logger)
	if err != nil {
		return nil, errors.Wrapf(err, "create %s ring client", name)
	}
	return r, nil
}

// cappedStrategy is dskit's default strategy with the replication factor capped at the size of the replica set
// the ring found for the key: that set has every instance when the ring is smaller than the factor (and one per
// zone with zone awareness), healthy or not, so a dead instance still counts against the quorum.
//
// Filter is called with the ring's read lock held: it must not call back into the ring (a nested RLock behind a
// waiting writer deadlocks).
type cappedStrategy struct {
	next dskitring.ReplicationStrategy
}

func (s *cappedStrategy) Filter(instances []dskitring.InstanceDesc, op dskitring.Operation, rf int, heartbeatTimeout time.Duration, zoneAware bool) ([]dskitring.InstanceDesc, int, error) {
	if n := len(instances); n > 0 && n < rf {
		rf = n
	}
	return s.next.Filter(instances, op, rf, heartbeatTimeout, zoneAware)
}

func (s *cappedStrategy) SupportsExpandedReplication() bool {
	return s.next.SupportsExpandedReplication()
}

// InstanceConfig says who this instance is in a ring.
type InstanceConfig struct {
	ID   string `yaml:"instance_id"`
	Addr string `yaml:"instance_addr"` // host:port of its gRPC server, as others reach it
	Zone string `yaml:"availability_zone"`
	// TokensFile keeps the instance's tokens across restarts, so it owns the same series after a restart.
	TokensFile string `yaml:"tokens_file_path"`
}

// DefaultInstanceID is the hostname, as in Mimir.
func DefaultInstanceID() string {
	h, err := os.Hostname()
	if err != nil {
		return "strata"
	}
	return h
}

// NewLifecycler returns the lifecycler that registers this instance ACTIVE in the ring with its tokens,
// heartbeats, forgets instances unhealthy for longer than AutoForgetPeriod, and leaves the ring when stopped.
func NewLifecycler(cfg Config, inst InstanceConfig, k *KV, name, key string, logger log.Logger, reg prometheus.Registerer) (*dskitring.BasicLifecycler, error) {
	kvClient, err := k.client(name + "-lifecycler")
	if err != nil {
		return nil, err
	}
	var delegate dskitring.BasicLifecyclerDelegate = dskitring.NewInstanceRegisterDelegate(dskitring.ACTIVE, cfg.NumTokens)
	delegate = dskitring.NewLeaveOnStoppingDelegate(delegate, logger)
	if inst.TokensFile != "" {
		delegate = dskitring.NewTokensPersistencyDelegate(inst.TokensFile, dskitring.ACTIVE, delegate, logger)
	}
	if cfg.AutoForgetPeriod > 0 {
		delegate = dskitring.NewAutoForgetDelegate(cfg.AutoForgetPeriod, delegate, logger)
	}
	lcfg := dskitring.BasicLifecyclerConfig{
		ID:                  inst.ID,
		Addr:                inst.Addr,
		Zone:                inst.Zone,
		HeartbeatPeriod:     cfg.HeartbeatPeriod,
		HeartbeatTimeout:    cfg.HeartbeatTimeout,
		TokensObservePeriod: 0,
		NumTokens:           cfg.NumTokens,
	}
	l, err := dskitring.NewBasicLifecycler(lcfg, name, key, kvClient, delegate, logger, prometheus.WrapRegistererWithPrefix("strata_", reg))
	return l, errors.Wrapf(err, "create %s lifecycler", name)
}

// Leave marks the instance LEAVING and then stops its lifecycler, which removes it from the ring.
//
// The state change goes through the lifecycler's own loop, between its heartbeats. Left to dskit's
// LeaveOnStoppingDelegate, it would run while the stopping lifecycler goes on heartbeating: with memberlist, a
// change must carry a newer timestamp (in seconds) than the ring holds, each heartbeat stamps the current second,
// and with a heartbeat period of 1s every retry lost to the heartbeat, ending in "failed to CAS-update key … no
// change detected", logged as an error on a clean stop.
func Leave(lc *dskitring.BasicLifecycler, logger log.Logger) error {
	if lc.State() == services.Running {
		if err := lc.ChangeState(context.Background(), dskitring.LEAVING); err != nil {
			level.Warn(logger).Log("msg", "could not mark the instance LEAVING in the ring", "ring", lc.GetInstanceID(), "err", err)
		}
	}
	return errors.Wrap(services.StopAndAwaitTerminated(context.Background(), lc), "leave the ring")
}

// AdvertiseAddr turns a listen address into one others can dial: 0.0.0.0 or :: become the given host.
func AdvertiseAddr(listen, host string) (string, error) {
	h, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", errors.Wrapf(err, "parse address %s", listen)
	}
	if _, err := strconv.Atoi(p); err != nil {
		return "", errors.Newf("address %s has no numeric port", listen)
	}
	if h == "" || h == "0.0.0.0" || h == "::" {
		h = host
	}
	return net.JoinHostPort(h, p), nil
}

// RunService starts a dskit service and waits until ctx is done, then (after beforeStop, if any) stops it.
//
// The service runs on its own context: a dskit service stops when the context it was started with ends, and
// this one must stop only after beforeStop (e.g. gossip must outlive an ingester leaving the ring).
func RunService(ctx context.Context, s services.Service, started, beforeStop func()) error {
	if err := StartService(ctx, s); err != nil {
		return err
	}
	started()
	<-ctx.Done()
	if beforeStop != nil {
		beforeStop()
	}
	return services.StopAndAwaitTerminated(context.Background(), s)
}

// StartService starts s on a background context (see RunService) and waits until it runs or ctx ends.
func StartService(ctx context.Context, s services.Service) error {
	if err := s.StartAsync(context.Background()); err != nil {
		return errors.Wrap(err, "start service")
	}
	if err := s.AwaitRunning(ctx); err != nil {
		s.StopAsync()
		return errors.Wrap(err, "wait for service to run")
	}
	return nil
}

// DistributorRingKey is the KV key of the distributor ring, which exists to count distributors: a tenant's
// ingestion rate is shared among the healthy ones (Mimir's global strategy).
const DistributorRingKey = "distributor"

// HealthyCount is the number of healthy instances in a ring, at least 1, as of the last Refresh. Reading it is
// a single atomic load, cheap enough for every request.
type HealthyCount struct {
	ring *dskitring.Ring
	n    atomic.Int64
}

// NewHealthyCount counts the healthy instances of r; call Refresh periodically.
func NewHealthyCount(r *dskitring.Ring) *HealthyCount {
	h := &HealthyCount{ring: r}
	h.n.Store(1)
	return h
}

// Refresh recounts the healthy instances (an error or an empty ring leaves the last count).
func (h *HealthyCount) Refresh() {
	rs, err := h.ring.GetAllHealthy(dskitring.Reporting)
	if err == nil && len(rs.Instances) > 0 {
		h.n.Store(int64(len(rs.Instances)))
	}
}

// Get returns the count.
func (h *HealthyCount) Get() int { return int(h.n.Load()) }
