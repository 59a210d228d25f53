package store

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// StoreClient is a StoreAPI endpoint as the Proxy sees it: the gRPC client plus what its last Info said.
type StoreClient interface {
	storepb.StoreClient
	// LabelSets are the external label sets of the endpoint's data; a request whose matchers contradict every
	// one of them is not sent. None means "unknown": always asked.
	LabelSets() []labels.Labels
	// TimeRange is the [min, max] of the endpoint's data in milliseconds, both inclusive.
	TimeRange() (minT, maxT int64)
	// String names the endpoint in warnings and logs.
	String() string
}

// DialOptions are the options every StoreAPI connection uses: MaxInt32 messages both ways, as Thanos.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)),
	}
}

// Client is a StoreClient over a gRPC connection, with the endpoint's Info cached (refresh it with
// RefreshInfo; until the first success the endpoint's labels and time range are unknown and it is always asked).
type Client struct {
	storepb.StoreClient
	name string
	info infopb.InfoClient

	mtx       sync.RWMutex
	labelSets []labels.Labels
	minT      int64
	maxT      int64
}

// NewClient returns a client of the StoreAPI served on conn.
func NewClient(name string, conn grpc.ClientConnInterface) *Client {
	return &Client{
		StoreClient: storepb.NewStoreClient(conn),
		name:        name,
		info:        infopb.NewInfoClient(conn),
		minT:        math.MinInt64,
		maxT:        math.MaxInt64,
	}
}

// Dial connects (lazily, as grpc.NewClient does) to a StoreAPI at addr.
func Dial(addr string, opts ...grpc.DialOption) (*Client, *grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, append(DialOptions(), opts...)...)
	if err != nil {
		return nil, nil, errors.Wrapf(err, "dial StoreAPI %s", addr)
	}
	return NewClient(addr, conn), conn, nil
}

// RefreshInfo asks the endpoint for its Info and caches its label sets and time range.
func (c *Client) RefreshInfo(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.info.Info(ctx, &infopb.InfoRequest{})
	if err != nil {
		return errors.Wrapf(err, "info of %s", c.name)
	}
	lsets := make([]labels.Labels, 0, len(resp.GetLabelSets()))
	for _, ls := range resp.GetLabelSets() {
		lsets = append(lsets, LabelsFromPB(ls.GetLabels()))
	}
	c.mtx.Lock()
	defer c.mtx.Unlock()
	c.labelSets = lsets
	if st := resp.GetStore(); st != nil {
		c.minT, c.maxT = st.GetMinTime(), st.GetMaxTime()
	}
	return nil
}

func (c *Client) LabelSets() []labels.Labels {
	c.mtx.RLock()
	defer c.mtx.RUnlock()
	return c.labelSets
}

func (c *Client) TimeRange() (int64, int64) {
	c.mtx.RLock()
	defer c.mtx.RUnlock()
	return c.minT, c.maxT
}

func (c *Client) String() string { return c.name }
