package loadgen

import (
	"strconv"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// The synthetic fleet: series i is metric i % metricsPerTarget of scrape target i / metricsPerTarget. A target is
// one pod of one of the jobs below, in one of four clusters; it exposes metricsPerTarget series (a typical
// exporter exposes a few hundred). So 100k series are 500 targets: instance and pod have 500 values, job 12,
// namespace 8, cluster 4, node 160, __name__ 200, and the other labels a handful each, as in a real fleet.

// metricsPerTarget is how many series one target exposes; it is the number of metric names too.
const metricsPerTarget = len(metricSubsystems) * len(metricNames)

// labelOrder lists the label names in the order they join a series as LabelsPerSeries grows from 10 to 20.
// __name__, job, instance and pod are always there, so every series is distinct.
var labelOrder = [MaxLabelsPerSeries]string{
	model.MetricNameLabel, "job", "instance", "namespace", "pod", "container", "cluster", "region", "node", "service",
	"zone", "env", "team", "app", "version", "method", "status_code", "handler", "endpoint", "scheme",
}

type job struct{ name, namespace, team, port string }

var jobs = [...]job{
	{"api-gateway", "edge", "platform", "8080"},
	{"frontend", "web", "web", "3000"},
	{"checkout", "shop", "payments", "8080"},
	{"payments", "shop", "payments", "8443"},
	{"cart", "shop", "commerce", "8080"},
	{"catalog", "shop", "commerce", "8080"},
	{"search", "search", "discovery", "9200"},
	{"recommendations", "search", "discovery", "8080"},
	{"auth", "identity", "platform", "8080"},
	{"notifications", "messaging", "engagement", "9090"},
	{"inventory", "warehouse", "logistics", "8080"},
	{"shipping", "warehouse", "logistics", "8080"},
}

type cluster struct{ name, region, env string }

var clusters = [...]cluster{
	{"prod-eu-west-1", "eu-west-1", "prod"},
	{"prod-us-east-1", "us-east-1", "prod"},
	{"prod-ap-southeast-1", "ap-southeast-1", "prod"},
	{"staging-eu-west-1", "eu-west-1", "staging"},
}

// nodesPerCluster is how many nodes the pods of one cluster are spread over.
const nodesPerCluster = 40

var metricSubsystems = [...]string{
	"http_server", "grpc_server", "http_client", "db_client", "cache", "queue", "process", "go", "kafka_consumer", "jvm",
}

var metricNames = [...]string{
	"requests_total", "request_duration_seconds_sum", "request_duration_seconds_count", "errors_total",
	"request_size_bytes_sum", "response_size_bytes_sum", "inflight_requests", "connections_open",
	"connections_opened_total", "retries_total", "timeouts_total", "latency_seconds_max", "queue_length",
	"bytes_read_total", "bytes_written_total", "operations_total", "memory_bytes", "threads",
	"last_success_timestamp_seconds", "up_seconds",
}

var (
	methods     = [...]string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	statusCodes = [...]string{"200", "200", "200", "200", "201", "204", "400", "404", "429", "500", "503"}
	handlers    = [...]string{"/api/v1/items", "/api/v1/items/{id}", "/api/v1/orders", "/api/v1/users/{id}",
		"/healthz", "/metrics", "/api/v1/search", "/api/v2/cart"}
)

// seriesGen gives the labels of series i. Its lookups allocate only the labels they return.
type seriesGen struct {
	labelsPerSeries int
	// extra are constant labels of every series (Config.ExtraLabels), replacing generated ones of the same name.
	extra []labels.Label
	b     labels.ScratchBuilder
	// Per-target label values, in labelOrder's order (metric-level entries empty), computed once per target.
	target    int
	targetVal [MaxLabelsPerSeries]string
}

func newSeriesGen(labelsPerSeries int) *seriesGen {
	return &seriesGen{labelsPerSeries: labelsPerSeries, b: labels.NewScratchBuilder(labelsPerSeries), target: -1}
}

// labels returns the labels of series i, sorted by name.
func (g *seriesGen) labels(i int) labels.Labels {
	t, m := i/metricsPerTarget, i%metricsPerTarget
	if t != g.target {
		g.setTarget(t)
	}
	g.b.Reset()
	for k, name := range labelOrder[:g.labelsPerSeries] {
		v := g.targetVal[k]
		switch name {
		case model.MetricNameLabel:
			v = metricSubsystems[m/len(metricNames)] + "_" + metricNames[m%len(metricNames)]
		case "method":
			v = methods[m%len(methods)]
		case "status_code":
			v = statusCodes[m%len(statusCodes)]
		case "handler":
			v = handlers[m%len(handlers)]
		}
		if !g.hasExtra(name) {
			g.b.Add(name, v)
		}
	}
	for _, l := range g.extra {
		g.b.Add(l.Name, l.Value)
	}
	g.b.Sort()
	return g.b.Labels()
}

func (g *seriesGen) hasExtra(name string) bool {
	for _, l := range g.extra {
		if l.Name == name {
			return true
		}
	}
	return false
}

// setTarget computes the target-level label values of target t.
func (g *seriesGen) setTarget(t int) {
	g.target = t
	h := splitmix64(uint64(t))
	j := jobs[t%len(jobs)]
	c := clusters[(t/len(jobs))%len(clusters)]
	// A pod IP unique among 2^20 targets: 10.<cluster and high bits>.<mid>.<low>.
	ip := "10." + strconv.Itoa((t/len(jobs))%len(clusters)*16+(t>>16)&15) + "." + strconv.Itoa((t>>8)&255) + "." +
		strconv.Itoa(t&255)
	version := "v1." + strconv.Itoa(int(splitmix64(uint64(t%len(jobs)))%20)) + "." + strconv.Itoa(t/len(jobs)%3)
	// Pods are named like a Deployment's: <job>-<replicaset hash>-<5 characters>.
	pod := j.name + "-" + podChars(splitmix64(uint64(t%len(jobs))^uint64(t/len(jobs)%3)), 10) + "-" + podChars(h, 5)
	node := "ip-10-" + strconv.Itoa(int(h>>40)%256) + "-" + strconv.Itoa(int(h>>32)%nodesPerCluster) + "-" +
		strconv.Itoa(int(h>>48)%256) + "." + c.region + ".compute.internal"
	for k, name := range labelOrder {
		var v string
		switch name {
		case "job", "container", "service", "app":
			v = j.name
		case "instance":
			v = ip + ":" + j.port
		case "namespace":
			v = j.namespace
		case "pod":
			v = pod
		case "cluster":
			v = c.name
		case "region":
			v = c.region
		case "node":
			v = node
		case "zone":
			v = c.region + string(rune('a'+h%3))
		case "env":
			v = c.env
		case "team":
			v = j.team
		case "version":
			v = version
		case "endpoint":
			v = "http-metrics"
		case "scheme":
			v = "http"
		}
		g.targetVal[k] = v
	}
}

// podChars renders n characters of h in the alphabet Kubernetes uses for generated names.
func podChars(h uint64, n int) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, n)
	for k := range b {
		b[k] = alphabet[h%uint64(len(alphabet))]
		h /= uint64(len(alphabet))
		if h == 0 {
			h = splitmix64(uint64(k))
		}
	}
	return string(b)
}

// splitmix64 is a fast, well-mixing hash of x (SplitMix64's output function), for deterministic pseudo-random
// label values and order.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// sendOrder returns 0…n-1 in a fixed pseudo-random order. Requests carry the series in this order, so that one
// request mixes many targets as a Prometheus remote-write shard does (it shards by series hash).
func sendOrder(n int) []int32 {
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	for i := n - 1; i > 0; i-- { // Fisher–Yates.
		j := int(splitmix64(uint64(i)) % uint64(i+1))
		order[i], order[j] = order[j], order[i]
	}
	return order
}
